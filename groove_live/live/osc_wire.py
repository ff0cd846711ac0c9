"""Strict OSC 1.0 wire format: decode a datagram into messages, encode replies.

python-osc's OscMessage is lenient where a request must not be: a float cut short is
zero-padded and accepted, unknown type tags and bytes after the last argument are ignored.
A request half understood must be refused, so requests are decoded here with the exact
length and padding rules, and anything not understood raises WireError with the reason.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Callable, Sequence

BUNDLE_HEADER = b"#bundle\x00"
MAX_BUNDLE_DEPTH = 8
MAX_MESSAGES_PER_PACKET = 64
MAX_ARGS_PER_MESSAGE = 256  # requests take at most 8; /groove/info replies carry ~80


class WireError(ValueError):
    """The packet breaks the OSC format. `address` is the message's address when it could be
    read (so the error reply can name it), else ""."""

    def __init__(self, reason: str, address: str = "") -> None:
        super().__init__(reason)
        self.address = address


class Impulse:
    """The OSC 'I' argument (an impulse, or "infinitum"): no value, just an event."""

    _instance: "Impulse | None" = None

    def __new__(cls) -> "Impulse":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "IMPULSE"


IMPULSE = Impulse()


@dataclass(frozen=True)
class Message:
    address: str
    args: tuple
    type_tags: str  # without the leading comma


# --- decoding ----------------------------------------------------------------------------
def decode_packet(datagram: bytes) -> list[Message]:
    """Every message in a datagram (a bundle's in order, nested bundles flattened)."""
    if datagram.startswith(b"#"):
        if not datagram.startswith(BUNDLE_HEADER):
            raise WireError("not an OSC message or bundle")
        out: list[Message] = []
        _decode_bundle(datagram, out, depth=0)
        if not out:
            raise WireError("bundle holds no messages")
        return out
    return [decode_message(datagram)]


def decode_message(data: bytes) -> Message:
    if not data.startswith(b"/"):
        raise WireError("not an OSC message or bundle")
    raw, index = _read_padded_string(data, 0, "address")
    try:
        address = raw.decode("ascii")
    except UnicodeDecodeError:
        raise WireError("address is not ASCII") from None
    if not all(0x21 <= b <= 0x7E for b in raw):
        raise WireError("address holds spaces or control characters")
    if index == len(data):
        # OSC 1.0 tolerates pre-1.0 senders that omit the type tags, but such a message cannot
        # be told from one cut short after its address; every current client sends them.
        raise WireError("no type tag string (cut short after the address?)", address)
    raw_tags, index = _read_padded_string(data, index, "type tag string", address)
    if not raw_tags.startswith(b","):
        raise WireError("type tag string must start with ','", address)
    try:
        tags = raw_tags[1:].decode("ascii")
    except UnicodeDecodeError:
        raise WireError("type tags are not ASCII", address) from None
    if len(tags) > MAX_ARGS_PER_MESSAGE:  # reading 60k arguments would hold the GIL for ms
        raise WireError(f"more than {MAX_ARGS_PER_MESSAGE} arguments", address)
    args = []
    for tag in tags:
        reader = _READERS.get(tag)
        if reader is None:
            what = "arrays are" if tag in "[]" else f"type tag {tag!r} is"
            raise WireError(f"{what} not supported (i f s S b h d T F N I)", address)
        value, index = reader(data, index, address)
        args.append(value)
    if index != len(data):
        raise WireError(f"{len(data) - index} bytes after the last argument", address)
    return Message(address, tuple(args), tags)


def _decode_bundle(data: bytes, out: list[Message], depth: int) -> None:
    # python-osc skips elements it cannot read and trusts sizes that run past the end.
    if depth > MAX_BUNDLE_DEPTH:
        raise WireError("bundles nested too deep")
    index = len(BUNDLE_HEADER) + 8  # the header, then a 64-bit time tag (requests act at once)
    if len(data) < index:
        raise WireError("bundle shorter than its header")
    while index < len(data):
        if index + 4 > len(data):
            raise WireError("bundle element size cut short")
        (size,) = struct.unpack_from(">i", data, index)
        index += 4
        if size <= 0 or size % 4 or index + size > len(data):
            raise WireError(f"bundle element size {size} does not fit the packet")
        element = data[index:index + size]
        index += size
        if element.startswith(BUNDLE_HEADER):
            _decode_bundle(element, out, depth + 1)
        elif element.startswith(b"/"):
            out.append(decode_message(element))
        else:
            raise WireError("bundle element is neither a message nor a bundle")
        if len(out) > MAX_MESSAGES_PER_PACKET:
            raise WireError(f"more than {MAX_MESSAGES_PER_PACKET} messages in one packet")


def _read_padded_string(data: bytes, index: int, what: str, address: str = "") -> tuple[bytes, int]:
    end = data.find(b"\x00", index)
    if end < 0:
        raise WireError(f"{what} is not terminated", address)
    padded_end = (end // 4 + 1) * 4  # the terminating NUL, then NULs to a multiple of 4
    if padded_end > len(data):
        raise WireError(f"{what} padding cut short", address)
    if data[end:padded_end].strip(b"\x00"):
        raise WireError(f"{what} padding is not all zero bytes", address)
    return data[index:end], padded_end


def _fixed(fmt: str, name: str) -> Callable[[bytes, int, str], tuple[Any, int]]:
    size = struct.calcsize(fmt)

    def read(data: bytes, index: int, address: str) -> tuple[Any, int]:
        if index + size > len(data):
            raise WireError(f"{name} argument cut short ({len(data) - index} of {size} bytes)",
                            address)
        return struct.unpack_from(fmt, data, index)[0], index + size
    return read


def _string(data: bytes, index: int, address: str) -> tuple[str, int]:
    raw, index = _read_padded_string(data, index, "string argument", address)
    try:
        return raw.decode("utf-8"), index
    except UnicodeDecodeError:
        raise WireError("string argument is not UTF-8", address) from None


_read_blob_size = _fixed(">i", "blob size")


def _blob(data: bytes, index: int, address: str) -> tuple[bytes, int]:
    size, index = _read_blob_size(data, index, address)
    padded_end = index + (size + 3) // 4 * 4
    if size < 0 or padded_end > len(data):
        raise WireError(f"blob size {size} does not fit the packet", address)
    if data[index + size:padded_end].strip(b"\x00"):
        raise WireError("blob padding is not all zero bytes", address)
    return data[index:index + size], padded_end


def _constant(value: Any) -> Callable[[bytes, int, str], tuple[Any, int]]:
    return lambda data, index, address: (value, index)


_READERS: dict[str, Callable[[bytes, int, str], tuple[Any, int]]] = {
    "i": _fixed(">i", "int32"),
    "f": _fixed(">f", "float32"),
    "h": _fixed(">q", "int64"),
    "d": _fixed(">d", "float64"),
    "s": _string,
    "S": _string,  # symbol: a string to us
    "b": _blob,
    "T": _constant(True),
    "F": _constant(False),
    "N": _constant(None),
    "I": _constant(IMPULSE),
}


# --- encoding ----------------------------------------------------------------------------
def encode_message(address: str, args: Sequence[Any] = ()) -> bytes:
    """A message with each argument in the narrowest OSC type that holds it exactly: ints as
    i (h beyond 32 bits), floats as f (d beyond float32's range). Bad arguments raise: they
    are the server's own bug, never the client's.

    Written flat (no helper call per argument): /groove/info's reply has ~100 arguments and
    a flood of info requests is what this runs most under load."""
    tags = [","]
    body: list[bytes] = []
    tag, add = tags.append, body.append
    for arg in args:
        kind = type(arg)
        if kind is str:
            raw = arg.encode("utf-8")
            if b"\x00" in raw:
                raise ValueError("OSC strings cannot hold NUL characters")
            tag("s")
            add(raw + _ZEROS[len(raw) & 3])
        elif kind is float:
            if arg != arg or abs(arg) <= _FLOAT32_MAX or arg in _INFINITIES:
                tag("f")
                add(_PACK_F(arg))
            else:
                tag("d")
                add(_PACK_D(arg))
        elif kind is int:
            if -2**31 <= arg < 2**31:
                tag("i")
                add(_PACK_I(arg))
            else:
                tag("h")
                add(_PACK_Q(arg))
        elif arg is True or arg is False:
            tag("T" if arg else "F")
        elif arg is None:
            tag("N")
        elif arg is IMPULSE:
            tag("I")
        elif isinstance(arg, int):  # an int subclass (an IntEnum ...)
            return encode_message(address, [int(a) if a is arg else a for a in args])
        elif isinstance(arg, float):
            return encode_message(address, [float(a) if a is arg else a for a in args])
        elif isinstance(arg, str):
            return encode_message(address, [str(a) if a is arg else a for a in args])
        elif isinstance(arg, (bytes, bytearray)):
            tag("b")
            add(_PACK_I(len(arg)) + bytes(arg) + b"\x00" * (-len(arg) % 4))
        else:
            raise TypeError(f"cannot encode {type(arg).__name__} as an OSC argument")
    return _pad(address.encode("ascii")) + _pad("".join(tags).encode("ascii")) + b"".join(body)


# A string's NUL terminator and padding to 4 bytes, by its length mod 4.
_ZEROS = (b"\x00" * 4, b"\x00" * 3, b"\x00" * 2, b"\x00")
_PACK_I, _PACK_Q = struct.Struct(">i").pack, struct.Struct(">q").pack
_PACK_F, _PACK_D = struct.Struct(">f").pack, struct.Struct(">d").pack
_INFINITIES = (float("inf"), float("-inf"))


_FLOAT32_MAX = struct.unpack(">f", b"\x7f\x7f\xff\xff")[0]


def _pad(raw: bytes) -> bytes:
    if b"\x00" in raw:
        raise ValueError("OSC strings cannot hold NUL characters")
    return raw + b"\x00" * (4 - len(raw) % 4)
