"""C xenstored's argument helpers, reproduced for their exact strictness.

Wire strings are decoded as latin-1: it maps bytes to code points one to one,
so tokens and paths round-trip unchanged and decoding never fails.
"""

from pyxenstored.protocol.errors import XenstoreError

_EINVAL = "EINVAL"


def one_arg(payload: bytes) -> str:
    """The payload as one string: exactly one NUL, as its last byte (C ``onearg``)."""
    if not payload or payload.find(b"\0") != len(payload) - 1:
        raise XenstoreError(_EINVAL)
    return payload[:-1].decode("latin-1")


def strings(payload: bytes) -> list[str]:
    """Every NUL-terminated string; bytes after the last NUL are ignored (C ``get_strings``)."""
    parts = payload.split(b"\0")
    del parts[-1]
    return [part.decode("latin-1") for part in parts]


def _skip_space(text: str) -> str:
    return text.lstrip(" \t\n\v\f\r")


def atoi(text: str) -> int:
    """C ``atoi``: optional space and sign, then digits; junk yields what was read."""
    text = _skip_space(text)
    sign = 1
    if text[:1] in ("+", "-"):
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    digits = 0
    while digits < len(text) and text[digits].isascii() and text[digits].isdigit():
        digits += 1
    value = sign * int(text[:digits]) if digits else 0
    # glibc's atoi is (int) strtol(): clamp to the long range, then keep 32 bits.
    value = max(-(2**63), min(2**63 - 1, value))
    return (value + 2**31) % 2**32 - 2**31


def strtoul10(text: str) -> tuple[int, str]:
    """C ``strtoul(s, &end, 10)``: the value (wrapped like unsigned long) and the rest."""
    stripped = _skip_space(text)
    sign = 1
    body = stripped
    if body[:1] in ("+", "-"):
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    digits = 0
    while digits < len(body) and body[digits] in "0123456789":
        digits += 1
    if not digits:
        return 0, text
    value = int(body[:digits])
    if value >= 2**64:
        value = 2**64 - 1
    elif sign < 0:
        value = (-value) % 2**64
    return value, body[digits:]


def parse_domid(text: str) -> int:
    """C ``parse_domid``: base 10, nothing after the number, at most 65535.

    An empty string is domid 0, as strtoul makes it.
    """
    value, rest = strtoul10(text)
    if rest or value > 65535:
        raise XenstoreError(_EINVAL)
    return value


def strtol0(text: str) -> tuple[int, str]:
    """C ``strtol(s, &end, 0)``: decimal, ``0x`` hex or ``0`` octal, with the rest.

    Used for permission domids, where ``r0x10`` and ``r010`` are legal.
    Values are clamped to the signed long range, like strtol.
    """
    body = _skip_space(text)
    sign = 1
    if body[:1] in ("+", "-"):
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    base = 10
    alphabet = "0123456789"
    if body[:2] in ("0x", "0X") and body[2:3] and body[2].lower() in "0123456789abcdef":
        base, alphabet, body = 16, "0123456789abcdefABCDEF", body[2:]
    elif body[:1] == "0":
        base, alphabet = 8, "01234567"
    digits = 0
    while digits < len(body) and body[digits] in alphabet:
        digits += 1
    if not digits:
        return 0, text
    value = sign * int(body[:digits], base)
    value = max(-(2**63), min(2**63 - 1, value))
    return value, body[digits:]
