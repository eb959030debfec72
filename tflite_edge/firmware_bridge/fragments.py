"""Messages larger than one frame: split into FRAGMENT frames and joined again.

A sender whose payload exceeds the link's frame limit sends it as ``count`` FRAGMENT (or
FRAGMENT_REPLY) frames with the message's sequence number, in order; the receiver joins
them and handles the inner message as if it had come in one frame. A serial link keeps
bytes in order, so fragments are never reordered, only lost; a lost fragment makes the
whole message time out, and the request is retried like any other. Memory is bounded by
the receiver's ``max_message_bytes`` (announced in HELLO and CAPABILITIES), checked as
each fragment arrives.
"""

from __future__ import annotations

from ..errors import SerialMessageError
from .messages import Fragment, FragmentReply, MessageType

__all__ = ["FRAGMENT_HEADER_BYTES", "Reassembler", "split_payload"]

FRAGMENT_HEADER_BYTES = 5  # inner type u8, index u16, count u16
_MAX_FRAGMENTS = 0xFFFF


def split_payload(msg_type: int, payload: bytes, max_payload_bytes: int) -> list[tuple[int, bytes]]:
    """(type, payload) pairs to send: the message itself if it fits one frame, else its fragments."""
    if len(payload) <= max_payload_bytes:
        return [(msg_type, payload)]
    chunk = max_payload_bytes - FRAGMENT_HEADER_BYTES
    if chunk <= 0:
        raise SerialMessageError(f"a frame limit of {max_payload_bytes} bytes leaves no room for fragments")
    count = -(-len(payload) // chunk)
    if count > _MAX_FRAGMENTS:
        raise SerialMessageError(f"a {len(payload)}-byte message needs {count} fragments, more than {_MAX_FRAGMENTS}")
    kind = FragmentReply if msg_type & 0x80 else Fragment
    return [
        (int(kind.TYPE), kind(msg_type, i, count, payload[i * chunk : (i + 1) * chunk]).encode_payload())
        for i in range(count)
    ]


class Reassembler:
    """Joins the fragments of one message at a time; at most ``max_message_bytes`` are held."""

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        self._key: tuple[int, int, int] | None = None  # (seq, inner type, count)
        self._next = 0
        self._parts: list[bytes] = []
        self._size = 0
        self.dropped = 0

    def reset(self) -> None:
        self._key = None
        self._next = 0
        self._parts = []
        self._size = 0

    def push(self, seq: int, fragment: Fragment) -> tuple[int, bytes] | None:
        """Add one fragment; returns (inner type, payload) when the message is complete, else None.

        A fragment that does not continue the message in progress (one was lost) drops the
        partial message, like a corrupt frame: the sender's retry starts again at index 0.
        A message larger than ``max_message_bytes`` raises ``SerialMessageError``, since a
        retry cannot help.
        """
        key = (seq, fragment.inner_type, fragment.count)
        if fragment.index == 0:
            self.reset()
            self._key = key
        elif key != self._key or fragment.index != self._next:
            self.reset()
            self.dropped += 1
            return None
        if self._size + len(fragment.data) > self.max_message_bytes:
            self.reset()
            raise SerialMessageError(
                f"a fragmented message of type 0x{fragment.inner_type:02x} exceeds {self.max_message_bytes} bytes"
            )
        self._parts.append(fragment.data)
        self._size += len(fragment.data)
        self._next += 1
        if self._next < fragment.count:
            return None
        inner, payload = fragment.inner_type, b"".join(self._parts)
        self.reset()
        if inner in (MessageType.FRAGMENT, MessageType.FRAGMENT_REPLY):
            raise SerialMessageError("fragments cannot nest")
        return inner, payload
