"""Building request payloads and reading reply payloads (spec 1.2, 1.3, 1.5).

Pure functions with no I/O, so each wire format can be tested on its own.
Strings (paths, tokens, domids, command words) are latin-1 on the wire, the
same mapping the daemon decodes with, so any byte sequence round-trips.
Node *values* are arbitrary bytes; a ``str`` value is encoded as UTF-8,
which is what the xenstore-* tools write from a UTF-8 command line.
"""

from pyxenstored.client.errors import MalformedReply

_NUL = b"\0"


def encode_string(value: str | bytes) -> bytes:
    """One wire string, without its terminator; NUL inside is refused.

    A NUL would split the argument in two on the server, silently turning
    one request into a different one, so it is an error here rather than a
    confusing reply later.
    """
    raw = value.encode("latin-1") if isinstance(value, str) else bytes(value)
    if _NUL in raw:
        raise ValueError(f"xenstore string argument contains NUL: {value!r}")
    return raw


def strings_payload(*parts: str | bytes) -> bytes:
    """``part\\0part\\0...``: the layout of every multi-argument request."""
    return b"".join(encode_string(part) + _NUL for part in parts)


def write_payload(path: str, value: bytes | str) -> bytes:
    """WRITE: ``path\\0`` then the raw value with no terminator."""
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    return encode_string(path) + _NUL + data


def split_strings(payload: bytes) -> list[str]:
    """Every NUL-terminated string in a reply (DIRECTORY, GET_PERMS).

    Bytes after the last NUL are ignored, as C's ``get_strings`` does, so an
    empty payload is an empty list.
    """
    parts = payload.split(_NUL)
    del parts[-1]
    return [part.decode("latin-1") for part in parts]


def one_string(payload: bytes) -> str:
    """A ``text\\0`` reply as text; a missing terminator is tolerated.

    Some servers (oxenstored) have been seen to omit the NUL on text
    replies; being lenient here costs nothing and loses no information.
    """
    if payload.endswith(_NUL):
        payload = payload[:-1]
    return payload.decode("latin-1")


def parse_uint(payload: bytes, what: str) -> int:
    """A ``<decimal>\\0`` reply (TRANSACTION_START, GET_FEATURE, GET_QUOTA)."""
    text = one_string(payload)
    if not text.isascii() or not text.isdigit():
        raise MalformedReply(f"{what}: expected a decimal number, got {payload!r}")
    return int(text)


def parse_bool(payload: bytes, what: str) -> bool:
    """A ``T\\0`` / ``F\\0`` reply (IS_DOMAIN_INTRODUCED)."""
    text = one_string(payload)
    if text == "T":
        return True
    if text == "F":
        return False
    raise MalformedReply(f"{what}: expected T or F, got {payload!r}")


def parse_directory_part(payload: bytes) -> tuple[int, list[str], bool]:
    """DIRECTORY_PART: ``<gen>\\0<name>\\0...`` plus one more ``\\0`` when complete.

    Returns the node's generation (restart from offset 0 if it changes
    between calls), the names in this chunk, and whether the list ended in
    this chunk. Names are never empty, so an empty string in the split can
    only come from the end marker.
    """
    nul = payload.find(_NUL)
    if nul < 0:
        raise MalformedReply(f"DIRECTORY_PART: no generation in {payload!r}")
    generation = parse_uint(payload[: nul + 1], "DIRECTORY_PART generation")
    body = payload[nul + 1 :]
    done = body == _NUL or body.endswith(b"\0\0")
    names = [part.decode("latin-1") for part in body.split(_NUL) if part]
    return generation, names, done


def error_name(payload: bytes) -> str:
    """The name carried by an ERROR reply (``ENOENT\\0``)."""
    return one_string(payload)
