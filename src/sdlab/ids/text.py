"""How ids are written: decimal, ULID text (26 characters of Crockford base32) or UUID
text (`xxxxxxxx-xxxx-7xxx-...`). Every kind's id is an integer; its form is how a user
expects to read it, and `kinds.py` gives each kind one.

    ULID.write(value)      # '01M8XQGYTJZJA6ZX8HK67E41B7'
    ULID.read('01m8xqgytjzja6zx8hk67e41b7')   # the integer back (any case)
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import ulid


@dataclass(frozen=True)
class Form:
    """One way of writing ids. `read` raises ValueError on text not of this form."""

    name: str
    write: Callable[[int], str]
    read: Callable[[str], int]
    example: str

    def write_all(self, values: list[int]) -> list[str]:
        return [self.write(value) for value in values]


def _read_decimal(text: str) -> int:
    if not text.isdecimal():
        raise ValueError(f"{text!r} is not decimal")
    return int(text)


# Standard base32 (RFC 4648) and Crockford's share the bit grouping; only the letters
# differ, so the standard library's encoder does the work at C speed (python-ulid's
# `str(ULID.from_int(v))` costs about 6 us an id, which `sdlab ids gen` would feel).
_CROCKFORD = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"
)


def _write_ulid(value: int) -> str:
    # 26 characters are 130 bits: the top two are zero. Shifted by 6 the 130 bits fill
    # the first 26 characters of 17 bytes' encoding.
    encoded = base64.b32encode((value << 6).to_bytes(17, "big"))[:26]
    return encoded.translate(_CROCKFORD).decode("ascii")


def _read_ulid(text: str) -> int:
    return int(ulid.ULID.from_str(text.upper()))


def _read_uuid(text: str) -> int:
    return uuid.UUID(text).int


DECIMAL = Form("decimal", str, _read_decimal, "2125551808964227073")
ULID = Form("ULID", _write_ulid, _read_ulid, "01M8XQGYTJZJA6ZX8HK67E41B7")


def _write_uuid(value: int) -> str:
    return str(uuid.UUID(int=value))


UUID = Form("UUID", _write_uuid, _read_uuid, "01a23b78-7b52-795b-a47e-6e0432cb7dfa")
FORMS = (DECIMAL, UUID, ULID)


def form_of(text: str) -> Form | None:
    """The form `text` is written in (decimal first: 26 digits are a number), or None."""
    for form in FORMS:
        try:
            form.read(text)
        except ValueError:
            continue
        return form
    return None
