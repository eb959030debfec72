"""Where a Keras functional model can be cut.

A layer's output tensor T is a valid cut when it separates the graph: every layer that
depends on T (its *tail*) reads only T or other tail layers, and the tail holds at least
one exit. Layers that do not depend on T (everything before it, and early-exit heads that
branch off before it) stay in the head. Inside a residual block the skip connection reads
a tensor from before the cut, so such layers are rejected. So are reshapes (Flatten,
Reshape) that only drop unit dimensions (1x1x64 -> 64): the TFLite converter folds such a
reshape into the layer that reads it, which then reads the tensor before the cut; cutting
at the reshape's input moves the same bytes. (A Flatten of 6x6x4 stays, and is a valid cut.)

The analysis works on a plain description of the graph (`LayerGraph`), built from the Keras
model once, so the rules are testable without TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import CutError

__all__ = ["LayerInfo", "LayerGraph", "graph_from_keras", "auto_cuts"]


@dataclass(frozen=True)
class LayerInfo:
    """One operation of the functional graph."""

    name: str
    parents: tuple[str, ...]
    output_shape: tuple[int, ...] | None  # without the batch axis; None for multi-output layers
    macs: int
    reshape_only: bool = False  # Flatten/Reshape: may be folded into the layer that reads it


# Keras layers that only change the shape of their input.
RESHAPE_LAYERS = frozenset({"Flatten", "Reshape"})


@dataclass
class LayerGraph:
    """The model's layers in topological order, its input and its exits (outputs, in order)."""

    layers: list[LayerInfo]
    input_name: str
    exits: list[str]
    _children: dict[str, list[str]] = field(init=False, repr=False)
    _index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._index = {layer.name: i for i, layer in enumerate(self.layers)}
        self._children = {layer.name: [] for layer in self.layers}
        for layer in self.layers:
            for parent in layer.parents:
                self._children[parent].append(layer.name)

    def layer(self, name: str) -> LayerInfo:
        try:
            return self.layers[self._index[name]]
        except KeyError:
            raise CutError(
                f"the model has no layer named {name!r}; valid cut layers: {', '.join(self.valid_cuts())}"
            ) from None

    def descendants(self, name: str) -> set[str]:
        seen: set[str] = set()
        stack = list(self._children[name])
        while stack:
            node = stack.pop()
            if node not in seen:
                seen.add(node)
                stack.extend(self._children[node])
        return seen

    def ancestors(self, name: str) -> set[str]:
        seen: set[str] = set()
        stack = list(self.layer(name).parents)
        while stack:
            node = stack.pop()
            if node not in seen:
                seen.add(node)
                stack.extend(self.layer(node).parents)
        return seen

    def cut_problem(self, name: str) -> str | None:
        """Why ``name`` is not a valid cut, or None when it is."""
        layer = self.layer(name)
        if name == self.input_name:
            return "it is the model input"
        if layer.output_shape is None:
            return "it has several outputs"
        if layer.reshape_only and len(layer.parents) == 1 and _squeezed(self.layer(layer.parents[0]).output_shape) == \
                _squeezed(layer.output_shape):
            return (f"it only drops unit dimensions of its input, a reshape the TFLite converter folds into the "
                    f"next layer (cut at its input {layer.parents[0]!r} instead: the same activation)")
        tail = self.descendants(name)
        if self.exits[-1] not in tail:
            return f"the final exit {self.exits[-1]!r} does not depend on it"
        for member in tail:
            for parent in self.layer(member).parents:
                if parent != name and parent not in tail:
                    return f"layer {member!r} after it also reads {parent!r} from before it (a skip connection)"
        return None

    def valid_cuts(self) -> list[str]:
        """Every valid cut layer, in topological order."""
        return [layer.name for layer in self.layers if self.cut_problem(layer.name) is None]

    def check_cuts(self, names: Sequence[str]) -> list[str]:
        """Validate user cuts and return them in topological order; errors list nearby valid cuts."""
        if len(set(names)) != len(names):
            raise CutError(f"a cut layer is named twice in {list(names)}")
        valid = self.valid_cuts()
        for name in names:
            problem = self.cut_problem(name)
            if problem is not None:
                near = self.nearby_valid_cuts(name, valid)
                hint = f"; valid cut layers near it: {', '.join(near)}" if near else "; this model has no valid cuts"
                raise CutError(f"cannot cut at {name!r}: {problem}{hint}")
        return sorted(names, key=self._index.__getitem__)

    def nearby_valid_cuts(self, name: str, valid: Sequence[str], count: int = 2) -> list[str]:
        position = self._index[name]
        before = [v for v in valid if self._index[v] < position][-count:]
        after = [v for v in valid if self._index[v] > position][:count]
        return before + after

    def exit_segments(self, cuts: Sequence[str]) -> dict[str, int]:
        """Segment index of each exit (``cuts`` in topological order).

        An exit that depends on cuts c_0..c_j belongs to segment j+1, unless its head is
        private: when none of the layers it needs after c_j lies on the trunk towards the
        next cut (or the final exit), the head runs in segment j, next to c_j, so the device
        can take that exit without computing the next segment's trunk.
        """
        placement = {}
        for exit_name in self.exits:
            needed = self.ancestors(exit_name) | {exit_name}
            depends = [i for i, c in enumerate(cuts) if c in needed]
            if not depends:
                placement[exit_name] = 0
                continue
            j = depends[-1]
            after_cut = self.descendants(cuts[j]) & needed
            trunk_end = cuts[j + 1] if j + 1 < len(cuts) else self.exits[-1]
            trunk = (self.ancestors(trunk_end) | {trunk_end}) & self.descendants(cuts[j])
            placement[exit_name] = j if not after_cut & trunk else j + 1
        return placement

    def exit_points(self) -> set[str]:
        """Valid cuts where an early exit's head branches off: cutting there lets the device
        take that exit before anything is sent."""
        points = set()
        for cut in self.valid_cuts():
            placement = self.exit_segments([cut])
            if any(placement[e] == 0 and cut in self.ancestors(e) for e in self.exits[:-1]):
                points.add(cut)
        return points

    def cumulative_macs(self) -> dict[str, int]:
        """For each layer, the MACs of itself and all its ancestors (work done before its output exists)."""
        return {layer.name: layer.macs + sum(self.layer(a).macs for a in self.ancestors(layer.name))
                for layer in self.layers}


def _squeezed(shape: tuple[int, ...] | None) -> tuple[int, ...] | None:
    return None if shape is None else tuple(d for d in shape if d != 1)


def auto_cuts(graph: LayerGraph, count: int, *, dtype_bytes: int = 1) -> list[str]:
    """Pick ``count`` cuts among the valid ones: balance compute, prefer small activations.

    Every valid cut lies on the path to the final exit, so valid cuts are totally ordered.

    Rule: for the i-th cut, the target is i/(count+1) of the total MACs. Candidates are the
    valid cuts whose cumulative MACs lie within half a segment's share of that target or,
    when none does, within 5% of the total of the nearest valid cut (cheap layers such as
    pooling sit next to the expensive one before them); valid cuts where an early exit's
    head branches off are candidates from twice as far. A candidate where an exit branches
    off wins (the device can then take that exit before sending anything); then the smallest
    activation; then the one nearest the target. Cuts are distinct and increasing.
    """
    if count < 0:
        raise CutError("--auto-cuts must be zero or positive")
    if count == 0:
        return []
    valid = graph.valid_cuts()
    if len(valid) < count:
        raise CutError(
            f"asked for {count} automatic cuts but the model has only {len(valid)} valid cut layers: {', '.join(valid)}"
        )
    cumulative = graph.cumulative_macs()
    total = max(cumulative[e] for e in graph.exits) or 1
    window = 0.5 / (count + 1)
    exit_points = graph.exit_points()
    chosen: list[str] = []
    for i in range(1, count + 1):
        target = i / (count + 1)
        remaining = count - i
        after_last = [v for v in valid if not chosen or valid.index(v) > valid.index(chosen[-1])]
        # Leave enough valid cuts for the cuts still to place.
        candidates = after_last[: len(after_last) - remaining] if remaining else after_last
        in_window = [v for v in candidates if abs(cumulative[v] / total - target) <= window]
        # Exit points count from twice as far: taking an exit on the device is worth some imbalance.
        in_window += [v for v in candidates if v in exit_points and v not in in_window
                      and abs(cumulative[v] / total - target) <= 2 * window]
        if not in_window:
            nearest = min(abs(cumulative[v] / total - target) for v in candidates)
            in_window = [v for v in candidates if abs(cumulative[v] / total - target) <= nearest + 0.05]

        def activation(v: str) -> int:
            shape = graph.layer(v).output_shape or ()
            return math.prod(shape) * dtype_bytes

        def rank(v: str, target: float = target) -> tuple[bool, int, float]:
            return v not in exit_points, activation(v), abs(cumulative[v] / total - target)

        chosen.append(min(in_window, key=rank))
    return chosen


def _layer_macs(layer: Any, output_shape: tuple[int, ...] | None) -> int:
    """Multiply-accumulates of one layer for one sample, estimated from its weights and output."""
    positions = math.prod(output_shape[:-1]) if output_shape else 1
    for attr in ("kernel", "depthwise_kernel"):
        weights = getattr(layer, attr, None)
        if weights is not None and hasattr(weights, "shape"):
            # Conv, depthwise conv and dense: every weight is used once per output position.
            return math.prod(int(d) for d in weights.shape) * positions
    return math.prod(output_shape) if output_shape else 0


def graph_from_keras(model: Any) -> LayerGraph:
    """Describe a Keras 3 functional model as a `LayerGraph`."""
    if len(model.inputs) != 1:
        raise CutError(f"the model has {len(model.inputs)} inputs; tflite-edge supports single-input models")
    model_nodes = {id(n) for n in getattr(model, "_nodes", ())} or None
    layers: list[LayerInfo] = []
    for op in model.operations:
        nodes = [n for n in op._inbound_nodes if model_nodes is None or id(n) in model_nodes]
        if not nodes:  # Keras does not list the input layer's node among the model's nodes
            nodes = list(op._inbound_nodes)
        if len(nodes) != 1:
            raise CutError(
                f"layer {op.name!r} is called {len(nodes)} times in the model; shared layers are not supported"
            )
        node = nodes[0]
        outputs = node.output_tensors
        shape = tuple(int(d) for d in outputs[0].shape[1:]) if len(outputs) == 1 else None
        if shape is not None and any(d is None for d in outputs[0].shape[1:]):
            raise CutError(
                f"layer {op.name!r} has an undefined output shape {outputs[0].shape}; give the input a fixed size"
            )
        parents = tuple(dict.fromkeys(p.operation.name for p in node.parent_nodes))
        layers.append(LayerInfo(op.name, parents, shape, _layer_macs(op, shape),
                                reshape_only=type(op).__name__ in RESHAPE_LAYERS))
    exits = [t._keras_history.operation.name for t in model.outputs]
    input_name = model.inputs[0]._keras_history.operation.name
    return LayerGraph(layers, input_name, exits)
