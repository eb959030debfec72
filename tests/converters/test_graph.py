"""Cut rules on hand-made graphs (no TensorFlow)."""

import pytest

from tflite_edge.converters.graph import LayerGraph, LayerInfo, auto_cuts
from tflite_edge.errors import CutError


def L(name, parents=(), shape=(4,), macs=1):
    return LayerInfo(name, tuple(parents), shape, macs)


def residual_graph() -> LayerGraph:
    # input -> stem -> [a -> b] + stem -> add -> relu -> (exit_1 head) -> c -> final
    return LayerGraph(
        [
            L("input"),
            L("stem", ["input"], (8, 8, 4), 100),
            L("a", ["stem"], (8, 8, 4), 100),
            L("b", ["a"], (8, 8, 4), 100),
            L("add", ["b", "stem"], (8, 8, 4), 1),
            L("relu", ["add"], (8, 8, 4), 1),
            L("pool", ["relu"], (4, 4, 4), 1),
            L("exit_1", ["pool"], (10,), 10),
            L("c", ["pool"], (2, 2, 4), 100),
            L("final", ["c"], (10,), 10),
        ],
        "input",
        ["exit_1", "final"],
    )


def test_valid_cuts_skip_the_residual_block():
    graph = residual_graph()
    assert graph.valid_cuts() == ["stem", "add", "relu", "pool", "c"]
    assert "skip connection" in graph.cut_problem("a")
    assert "final exit" in graph.cut_problem("exit_1")
    assert graph.cut_problem("input") == "it is the model input"


def test_a_cut_inside_the_block_lists_nearby_valid_cuts():
    with pytest.raises(CutError, match=r"cannot cut at 'b'.*skip connection.*near it: stem, add, relu"):
        residual_graph().check_cuts(["b"])


def test_unknown_layer_lists_the_valid_cuts():
    with pytest.raises(CutError, match="no layer named 'nope'.*stem, add"):
        residual_graph().check_cuts(["nope"])


def test_cuts_come_back_in_graph_order():
    assert residual_graph().check_cuts(["c", "stem"]) == ["stem", "c"]
    with pytest.raises(CutError, match="twice"):
        residual_graph().check_cuts(["c", "c"])


def test_an_exit_head_at_a_cut_runs_next_to_it():
    graph = residual_graph()
    assert graph.exit_segments(["pool"]) == {"exit_1": 0, "final": 1}
    # Cut after the trunk layer the exit head does not need: exit_1 needs pool, which is
    # on the trunk to 'c', so it runs in the segment after 'relu'.
    assert graph.exit_segments(["relu", "c"]) == {"exit_1": 1, "final": 2}
    assert graph.exit_segments([]) == {"exit_1": 0, "final": 0}


def test_auto_cuts_balance_compute_and_prefer_small_activations():
    graph = residual_graph()
    # Half the MACs lie before 'add'; relu and pool cost nothing more, and pool is smallest.
    assert auto_cuts(graph, 1) == ["pool"]
    assert len(auto_cuts(graph, 2)) == 2
    assert auto_cuts(graph, 0) == []
    with pytest.raises(CutError, match="only 5 valid cut layers"):
        auto_cuts(graph, 6)


def test_auto_cuts_prefer_where_an_exit_branches_off():
    # The exit head reads 'wide' (a large activation); 'narrow' right after it is smaller.
    graph = LayerGraph(
        [
            L("input"),
            L("a", ["input"], (8, 8, 8), 100),
            L("wide", ["a"], (8, 8, 8), 1),
            L("narrow", ["wide"], (2, 2, 8), 1),
            L("exit_1", ["wide"], (10,), 1),
            L("b", ["narrow"], (2, 2, 8), 100),
            L("final", ["b"], (10,), 1),
        ],
        "input",
        ["exit_1", "final"],
    )
    assert graph.exit_points() == {"wide"}
    assert auto_cuts(graph, 1) == ["wide"]
    assert graph.exit_segments(["wide"]) == {"exit_1": 0, "final": 1}


def _flatten_graph(conv_shape: tuple[int, ...]) -> LayerGraph:
    # input -> conv -> flatten -> dense -> final
    size = 1
    for d in conv_shape:
        size *= d
    return LayerGraph(
        [L("input"), L("conv", ["input"], conv_shape), LayerInfo("flat", ("conv",), (size,), 0, reshape_only=True),
         L("dense", ["flat"], (8,)), L("final", ["dense"], (10,))],
        "input", ["final"],
    )


def test_a_reshape_that_drops_unit_dimensions_is_not_a_cut_its_input_is():
    # TFLite folds a 1x1x8 -> 8 flatten into the dense layer, which then reads conv's output.
    graph = _flatten_graph((1, 1, 8))
    assert graph.valid_cuts() == ["conv", "dense"]
    with pytest.raises(CutError, match=r"cannot cut at 'flat': it only drops unit dimensions.*input 'conv' instead"):
        graph.check_cuts(["flat"])
    assert auto_cuts(graph, 2) == ["conv", "dense"]


def test_a_flatten_that_reorders_is_a_cut():
    assert _flatten_graph((6, 6, 4)).valid_cuts() == ["conv", "flat", "dense"]
