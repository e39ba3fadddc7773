"""Exact extended-real values and their conversion to and from Python objects.

Inside the golden model a value is an ``Exact``: a kind ("num", "inf" or "nan"),
a sign bit, and for numbers the exact magnitude as a Fraction (0 for zeros, which
keep their sign). Public values are: Fraction for finite nonzero numbers, Python
float for zeros (0.0 / -0.0), infinities and NaN (with its sign bit).
"""

import math
import numbers
from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class Exact:
    kind: str           # "num", "inf" or "nan"
    sign: int           # 0 or 1
    mag: Fraction = Fraction(0)

    @property
    def value(self):
        """The signed rational value of a number."""
        return -self.mag if self.sign else self.mag

    @property
    def is_zero(self):
        return self.kind == "num" and self.mag == 0


def number(value):
    """Exact("num", ...) for a signed rational; a zero gets sign +."""
    value = Fraction(value)
    return Exact("num", int(value < 0), abs(value))


def zero(sign):
    return Exact("num", sign)


def inf(sign):
    return Exact("inf", sign)


def nan(sign):
    return Exact("nan", sign)


def parse(x):
    """An int, Fraction or float (Python's or numpy's, converted exactly) as an Exact."""
    if isinstance(x, float):
        sign = int(math.copysign(1.0, x) < 0)
        if math.isnan(x):
            return nan(sign)
        if math.isinf(x):
            return inf(sign)
        return Exact("num", sign, abs(Fraction(x)))
    if isinstance(x, numbers.Rational):
        return number(Fraction(int(x.numerator), int(x.denominator)))  # Python ints, even from numpy
    if isinstance(x, numbers.Real) and hasattr(x, "as_integer_ratio"):  # numpy floats, exactly
        if not math.isfinite(x):
            return parse(float(x))
        return Exact("num", int(math.copysign(1.0, float(x)) < 0), abs(Fraction(*x.as_integer_ratio())))
    raise TypeError(f"x={x!r}: must be an int, Fraction or float")


def public(v):
    """An Exact as a public value (Fraction, or float for zeros and specials)."""
    s = -1.0 if v.sign else 1.0
    if v.kind == "nan":
        return math.copysign(math.nan, s)
    if v.kind == "inf":
        return s * math.inf
    if v.mag == 0:
        return s * 0.0
    return v.value
