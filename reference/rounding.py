"""Rounding a rational to an integer (docs/rounding.md).

Callers scale the value so that the target grid is the integers (divide by the ulp).
Floats round the signed value with the deterministic modes (the grid is symmetric,
so this is the same as rounding the magnitude by the mirrored mode) and the
magnitude with SR; fixed point rounds the signed value in every mode.
"""

import math
import numbers
from fractions import Fraction

NEAREST = ("nearest_even", "nearest_away", "nearest_zero", "nearest_up", "nearest_down")
DIRECTED = ("toward_zero", "away_from_zero", "up", "down", "odd")
MODES = NEAREST + DIRECTED + ("stochastic",)
SR_METHODS = ("add", "compare")


def check_rounding(rounding):
    if rounding not in MODES:
        raise ValueError(f"rounding={rounding!r}: must be one of {', '.join(MODES)}")


def check_sr(u, sr_bits, sr_method):
    """Validate the SR arguments: 1 <= sr_bits <= 32, u an integer in [0, 2^sr_bits)."""
    if not isinstance(sr_bits, numbers.Integral) or not 1 <= sr_bits <= 32:
        raise ValueError(f"sr_bits={sr_bits!r}: must be between 1 and 32")
    if sr_method not in SR_METHODS:
        raise ValueError(f"sr_method={sr_method!r}: must be 'add' or 'compare'")
    if u is None:
        raise ValueError("rounding='stochastic' needs random bits u")
    if not isinstance(u, numbers.Integral) or not 0 <= u < 2 ** int(sr_bits):
        raise ValueError(f"u={u!r}: must be an integer in [0, 2^{sr_bits})")


def _is_odd(k):
    return k % 2 == 1


def _tie(lo, hi, y, rounding, is_odd):
    """Which of lo, hi = lo + 1 a tie y = lo + 1/2 goes to."""
    if rounding == "nearest_even":
        return hi if is_odd(lo) else lo
    if rounding == "nearest_away":
        return hi if y > 0 else lo
    if rounding == "nearest_zero":
        return lo if y > 0 else hi
    if rounding == "nearest_up":
        return hi
    return lo  # nearest_down


def _directed(lo, hi, y, rounding, is_odd):
    if rounding == "toward_zero":
        return lo if y > 0 else hi
    if rounding == "away_from_zero":
        return hi if y > 0 else lo
    if rounding == "up":
        return hi
    if rounding == "down":
        return lo
    return lo if is_odd(lo) else hi  # odd: the odd one of the two neighbours


def round_integer(y, rounding, is_odd=_is_odd):
    """Round the signed rational y to an integer by a deterministic mode.

    ``is_odd(k)`` says which candidates count as odd for nearest_even and odd (of two
    neighbours exactly one is odd); by default the integer's own parity.
    """
    y = Fraction(y)
    lo = math.floor(y)
    if y == lo:
        return lo
    hi = lo + 1
    if rounding in NEAREST:
        if y - lo < Fraction(1, 2):
            return lo
        if y - lo > Fraction(1, 2):
            return hi
        return _tie(lo, hi, y, rounding, is_odd)
    return _directed(lo, hi, y, rounding, is_odd)


def round_stochastic(y, u, sr_bits, sr_method):
    """y = q + f (q = floor(y)); t = floor(f 2^r); q + 1 iff t + u >= 2^r ("add") or u < t ("compare")."""
    y, u, sr_bits = Fraction(y), int(u), int(sr_bits)  # Python ints: no fixed-width overflow
    q = math.floor(y)
    t = math.floor((y - q) * 2 ** sr_bits)
    if sr_method == "add":
        bump = t + u >= 2 ** sr_bits
    else:
        bump = u < t
    return q + int(bump)
