"""MQTT 5 PUBLISH properties without paho-mqtt's per-attribute Python work, both ways.

paho-mqtt (2.2) builds, packs and parses MQTT 5 properties in Python, one attribute at a
time: every ``Properties`` object rebuilds its name and type tables, every attribute set
scans them, and parsing slices the remaining packet (payload included) once per field.
Measured on a 2-core x86-64 host (``bench/bench_coinference.py``, section 2), that is
65-165 µs per message for the two to five properties a request or reply carries, a
sizeable share of a loopback round trip of about 1 ms.

- ``PackedProperties`` serialises a PUBLISH's properties once, when made; paho only calls
  ``pack()`` on them.
- ``ParsedProperties`` parses a received PUBLISH's properties in one pass over the bytes
  and stores the values exactly as paho's parser would (same attribute names, types and
  lists). Anything unusual (an identifier it does not handle, a duplicate, a value out of
  range, a string MQTT forbids, a length past the end) is handed to paho's own parser, so
  malformed packets fail exactly as they did. ``install_publish_parser()`` makes paho use
  it for every packet it decodes; ``make_client`` calls it.

Both are ``paho.mqtt.properties.Properties`` subclasses: code that reads
``message.properties.CorrelationData`` sees no difference.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Sequence

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..errors import ProtocolError

__all__ = ["PackedProperties", "ParsedProperties", "install_publish_parser"]

log = logging.getLogger(__name__)

# paho's tables (names, types, identifiers) are the same for every Properties object.
_TEMPLATE = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho leaves it unannotated
_TABLES = {key: _TEMPLATE.__dict__[key] for key in ("types", "names", "properties")}
_UINT16 = struct.Struct("!H")
_UINT32 = struct.Struct("!L")
_MULTIBYTE_LIMIT = 4  # a Variable Byte Integer has at most four bytes


class PackedProperties(Properties):
    """PUBLISH properties serialised once, when made. The values stay readable as attributes."""

    def __init__(
        self,
        *,
        response_topic: str | None = None,
        correlation: bytes | None = None,
        expiry_s: int | None = None,
        user: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.__dict__.update(_TABLES)
        self.__dict__["packetType"] = PacketTypes.PUBLISH
        parts = []
        values: dict[str, object] = {}
        # Identifier order as paho packs them: 0x02, 0x08, 0x09, 0x26 (MQTT 5, 2.2.2.2).
        if expiry_s is not None:
            parts.append(b"\x02" + _UINT32.pack(expiry_s))
            values["MessageExpiryInterval"] = expiry_s
        if response_topic is not None:
            parts.append(b"\x08" + _string(response_topic))
            values["ResponseTopic"] = response_topic
        if correlation is not None:
            if len(correlation) > 0xFFFF:
                raise ProtocolError("correlation data is longer than 65535 bytes")
            parts.append(b"\x09" + _UINT16.pack(len(correlation)) + correlation)
            values["CorrelationData"] = correlation
        for key, value in user:
            parts.append(b"\x26" + _string(key) + _string(value))
        if user:
            values["UserProperty"] = list(user)
        body = b"".join(parts)
        # Stored past Properties.__setattr__, whose name checks are the slow part.
        self.__dict__.update(values)
        self.__dict__["_packed"] = _variable_byte_integer(len(body)) + body

    def pack(self) -> bytes:
        return self.__dict__["_packed"]  # type: ignore[no-any-return]


class ParsedProperties(Properties):
    """A ``Properties`` whose ``unpack`` reads a PUBLISH's properties in one pass (other
    packet types, and PUBLISH properties it does not handle, go to paho's parser)."""

    def __init__(self, packetType: int) -> None:  # noqa: N803  # paho's parameter name
        self.__dict__.update(_TABLES)
        self.__dict__["packetType"] = packetType

    def unpack(self, buffer: bytes | bytearray) -> tuple[Properties, int]:
        if self.packetType == PacketTypes.PUBLISH:
            parsed = parse_publish_properties(buffer)
            if parsed is not None:
                values, length = parsed
                self.__dict__.update(values)
                return self, length
        return super().unpack(buffer)  # type: ignore[no-any-return, no-untyped-call]


def parse_publish_properties(buffer: bytes | bytearray) -> tuple[dict[str, object], int] | None:
    """The attributes paho would set for the PUBLISH properties at the start of ``buffer``
    and the bytes they take (length field included); None when anything needs paho's own
    parser: an identifier not handled here, a duplicate, a value out of range, a length
    past the end, or text MQTT forbids."""
    length, pos = _read_vbi(buffer, 0)
    if length is None:
        return None
    end = pos + length
    if end > len(buffer):
        return None
    values: dict[str, object] = {}
    while pos < end:
        identifier = buffer[pos]
        pos += 1
        if identifier == 0x26:  # User Property: a string pair, may repeat
            key, pos = _read_string(buffer, pos, end)
            if key is None:
                return None
            value, pos = _read_string(buffer, pos, end)
            if value is None:
                return None
            pairs = values.setdefault("UserProperty", [])
            pairs.append((key, value))  # type: ignore[attr-defined]
            continue
        name = _SINGLE.get(identifier)
        if name is None or name in values:
            return None
        item: object
        if identifier in (0x08, 0x03):  # Response Topic, Content Type
            item, pos = _read_string(buffer, pos, end)
        elif identifier == 0x09:  # Correlation Data
            if pos + 2 > end:
                return None
            size = _UINT16.unpack_from(buffer, pos)[0]
            if pos + 2 + size > end:
                return None
            item, pos = buffer[pos + 2:pos + 2 + size], pos + 2 + size
        elif identifier == 0x02:  # Message Expiry Interval
            if pos + 4 > end:
                return None
            item, pos = _UINT32.unpack_from(buffer, pos)[0], pos + 4
        elif identifier == 0x23:  # Topic Alias, 1..65535
            if pos + 2 > end:
                return None
            item, pos = _UINT16.unpack_from(buffer, pos)[0], pos + 2
            if item == 0:
                return None
        else:  # 0x01 Payload Format Indicator, 0 or 1
            if pos + 1 > end:
                return None
            item, pos = buffer[pos], pos + 1
            if item not in (0, 1):
                return None
        if item is None:
            return None
        values[name] = item
    if pos != end:
        return None
    return values, end


_SINGLE = {
    0x01: "PayloadFormatIndicator",
    0x02: "MessageExpiryInterval",
    0x03: "ContentType",
    0x08: "ResponseTopic",
    0x09: "CorrelationData",
    0x23: "TopicAlias",
}


def _read_vbi(buffer: bytes | bytearray, pos: int) -> tuple[int | None, int]:
    value = 0
    for shift in range(0, 7 * _MULTIBYTE_LIMIT, 7):
        if pos >= len(buffer):
            return None, pos
        byte = buffer[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
    return None, pos


def _read_string(buffer: bytes | bytearray, pos: int, end: int) -> tuple[str | None, int]:
    if pos + 2 > end:
        return None, pos
    size = _UINT16.unpack_from(buffer, pos)[0]
    stop = pos + 2 + size
    if stop > end:
        return None, pos
    try:
        text = bytes(buffer[pos + 2:stop]).decode("utf-8")
    except UnicodeDecodeError:
        return None, pos
    # MQTT 1.5.4: no NUL and no U+FEFF (UTF-8 decoding already refuses surrogates).
    if "\x00" in text or "\ufeff" in text:
        return None, pos
    return text, stop


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > 0xFFFF:
        raise ProtocolError("an MQTT string is limited to 65535 bytes")
    return _UINT16.pack(len(data)) + data


def _variable_byte_integer(value: int) -> bytes:
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def install_publish_parser() -> bool:
    """Make paho-mqtt decode received packets' properties with ``ParsedProperties``.

    Process-wide and idempotent; True when installed. paho's packet decoder
    (``paho.mqtt._packet``, 2.x) looks its ``Properties`` class up at each packet; where that
    module is missing or someone else replaced the class, nothing is changed and paho keeps
    its own parser.
    """
    try:
        from paho.mqtt import _packet
    except ImportError:
        return False
    current = getattr(_packet, "Properties", None)
    if current is ParsedProperties:
        return True
    if current is not Properties:
        log.debug("paho's packet decoder uses %r; its properties parser is left as it is", current)
        return False
    _packet.Properties = ParsedProperties  # type: ignore[misc]  # replacing paho's class is the point
    return True
