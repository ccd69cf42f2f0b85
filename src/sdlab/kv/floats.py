"""INCRBYFLOAT's arithmetic as Redis does it: in an x86 `long double` (64 bits of
significand), printed with `%.17Lf` and its trailing zeros cut. Emulated exactly with
fractions, since Python's float is a double: `INCRBYFLOAT k 0.1` must answer "0.1", not
the double's "0.10000000000000001"."""

from __future__ import annotations

import re
from fractions import Fraction

from sdlab.kv.core import NotAFloat

SIGNIFICAND_BITS = 64
MAX_EXPONENT = 16383  # a long double's largest binary exponent
MAX_CHARS = 5 * 1024  # Redis's MAX_LONG_DOUBLE_CHARS: longer text is not a float
NUMBER = re.compile(rb"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
INFINITY = re.compile(rb"[+-]?(?:inf|infinity)", re.IGNORECASE)


class Infinite(Exception):
    """A value past a long double's range (strtold's HUGE_VAL)."""


def parse(raw: bytes) -> Fraction:
    """Text as `strtold` reads it and Redis accepts it: decimal, an exponent, no spaces;
    "inf" is a float to strtold (Redis then refuses the sum), "nan" is not. Hexadecimal
    floats, which strtold also reads, are refused here."""
    if not raw or len(raw) >= MAX_CHARS:
        raise NotAFloat("value is not a valid float")
    if INFINITY.fullmatch(raw):
        raise Infinite
    if not NUMBER.fullmatch(raw):
        raise NotAFloat("value is not a valid float")
    exact = Fraction(raw.decode())
    if exact and _exponent(abs(exact)) < -MAX_EXPONENT - SIGNIFICAND_BITS:
        raise NotAFloat("value is not a valid float")  # strtold's underflow to zero: ERANGE
    try:
        return rounded(exact)
    except Infinite:  # strtold's overflow (ERANGE), unlike a literal "inf"
        raise NotAFloat("value is not a valid float") from None


def add(current: bytes, by: bytes) -> bytes:
    """INCRBYFLOAT's new value, as Redis writes it; NotAFloat as Redis refuses."""
    try:
        total = rounded(parse(current) + parse(by))
    except Infinite:
        raise NotAFloat("increment would produce NaN or Infinity") from None
    return text(total)


def rounded(exact: Fraction) -> Fraction:
    """The long double nearest `exact` (ties to even); Infinite past its range."""
    if not exact:
        return exact
    size = abs(exact)
    exponent = _exponent(size)
    if exponent > MAX_EXPONENT:
        raise Infinite
    scale = SIGNIFICAND_BITS - 1 - exponent  # 2**scale * size has 64 integer bits
    scaled = size * (Fraction(2) ** scale)
    significand = round(scaled)  # Fraction rounds half to even
    result = Fraction(significand) / (Fraction(2) ** scale)
    if _exponent(result) > MAX_EXPONENT:
        raise Infinite
    return result if exact > 0 else -result


def text(value: Fraction) -> bytes:
    """`%.17Lf`, then the zeros after the point cut (and the point if nothing is left
    after it); "-0" is "0"."""
    units = round(value * 10**17)  # glibc prints the exact value, ties to even
    sign = "-" if value < 0 else ""
    whole, fraction = divmod(abs(units), 10**17)
    digits = f"{sign}{whole}.{fraction:017d}".rstrip("0").rstrip(".")
    return b"0" if digits == "-0" else digits.encode()


def _exponent(size: Fraction) -> int:
    """floor(log2(size)) for size > 0, exactly."""
    exponent = size.numerator.bit_length() - size.denominator.bit_length()
    if Fraction(2) ** exponent > size:
        exponent -= 1
    return exponent
