"""encode / decode / quantize (docs/formats.md, docs/rounding.md), one Python scalar at a time.

Every conversion is: round the exact value on an unbounded exponent (or integer)
range, then apply the overflow rule to the rounded value, then write the code.
"""

import math
import numbers

from . import formats as F
from .rounding import check_rounding, check_sr, round_integer, round_stochastic, NEAREST
from .values import Exact, inf, nan, parse, public

FLOAT_OVERFLOW = ("ieee", "saturate")
FIXED_OVERFLOW = ("saturate", "saturate_zero", "saturate_symmetric", "wrap", "wrap_sign_magnitude")


def check_args(fmt, rounding, overflow, u, sr_bits, sr_method):
    """Validate the arguments; return the overflow rule with None resolved to the format's default."""
    check_rounding(rounding)
    if rounding == "stochastic":
        check_sr(u, sr_bits, sr_method)
    if F.is_float(fmt):
        overflow = "ieee" if overflow is None else overflow
        if overflow not in FLOAT_OVERFLOW:
            raise ValueError(f"overflow={overflow!r}: float formats take 'ieee' or 'saturate'")
    else:
        overflow = "saturate" if overflow is None else overflow
        if overflow not in FIXED_OVERFLOW:
            raise ValueError(f"overflow={overflow!r}: fixed-point formats take one of {', '.join(FIXED_OVERFLOW)}")
        if overflow == "wrap_sign_magnitude" and not fmt.signed:
            raise ValueError("overflow='wrap_sign_magnitude' needs a signed fixed-point format")
    return overflow


def floor_log2(m):
    """The e with 2^e <= m < 2^(e+1), for a positive Fraction m."""
    e = m.numerator.bit_length() - m.denominator.bit_length()
    if m < F.pow2(e):
        e -= 1
    return e


# ---- floats --------------------------------------------------------------

def float_ulp_exponent(m, fmt):
    """log2 of the grid spacing around the magnitude m > 0, with no upper exponent bound.

    Normal binade 2^e: 2^(e-M). Below min_normal: the subnormal spacing 2^(emin-M), or
    without subnormals the grid {0, min_normal} of spacing 2^emin (§1).
    """
    e = floor_log2(m)
    if e >= F.emin(fmt):
        return e - fmt.man_bits
    if fmt.subnormals:
        return F.emin(fmt) - fmt.man_bits
    return F.emin(fmt)


def candidate_is_odd(k, p, fmt):
    """Whether k * 2^p (k >= 0 an integer on the grid of spacing 2^p) counts as odd.

    The parity of k, which is the mantissa lsb of its code; on the grid {0, min_normal}
    of a format without subnormals min_normal counts as odd (§1). With no mantissa bits
    (man_bits = 0) a nonzero value's code lsb is its exponent field's lsb (as gfloat).
    """
    if fmt.man_bits == 0 and k != 0:
        return (floor_log2(k * F.pow2(p)) + fmt.bias) % 2 == 1
    return k % 2 == 1


def float_overflow(sign, fmt, rounding, overflow):
    """The result for a rounded value beyond max (§3)."""
    biggest = Exact("num", sign, F.max_value(fmt))
    if overflow == "saturate" or fmt.specials == "none":
        return biggest
    to_inf = (rounding in NEAREST or rounding in ("stochastic", "away_from_zero")
              or (rounding == "up" and sign == 0) or (rounding == "down" and sign == 1))
    if not to_inf:
        return biggest  # toward_zero, odd, and the directed mode pointing back to zero
    return inf(sign) if F.has_inf(fmt) else nan(sign)


def float_special(v, fmt, overflow):
    """NaN and infinity inputs (§3)."""
    if v.kind == "nan":
        if not F.has_nan(fmt):
            raise ValueError(f"NaN input: the format (specials={fmt.specials!r}) has no NaN")
        return nan(v.sign)
    if overflow == "saturate" or fmt.specials == "none":
        return Exact("num", v.sign, F.max_value(fmt))
    return inf(v.sign) if F.has_inf(fmt) else nan(v.sign)


def round_float(v, fmt, rounding, overflow, u=None, sr_bits=32, sr_method="add"):
    """Round an Exact to the float format; the result is an Exact the format holds."""
    if v.kind != "num":
        return float_special(v, fmt, overflow)
    if v.mag == 0:
        return v
    p = float_ulp_exponent(v.mag, fmt)
    y = v.mag / F.pow2(p)
    if rounding == "stochastic":
        k = round_stochastic(y, u, sr_bits, sr_method)  # the magnitude; the sign is kept
    else:
        k = abs(round_integer(-y if v.sign else y, rounding, lambda c: candidate_is_odd(abs(c), p, fmt)))
    rounded = k * F.pow2(p)
    if rounded > F.max_value(fmt):
        return float_overflow(v.sign, fmt, rounding, overflow)
    return Exact("num", v.sign, rounded)  # a zero keeps the exact value's sign


def float_code(v, fmt):
    """The code of an Exact the format holds: sign, exponent field, mantissa field."""
    E, M = fmt.exp_bits, fmt.man_bits
    sign = v.sign << (E + M)
    if v.kind == "nan":
        if fmt.specials == "ieee":
            return sign | (F.exp_all_ones(fmt) << M) | (1 << (M - 1))
        if fmt.specials == "fn":
            return sign | (2 ** (E + M) - 1)
        return 2 ** (E + M)  # fnuz: the negative-zero code
    if v.kind == "inf":
        return sign | (F.exp_all_ones(fmt) << M)
    if v.mag == 0:
        return sign if F.has_neg_zero(fmt) else 0  # fnuz: one zero, +0
    e = floor_log2(v.mag)
    if e < F.emin(fmt):
        e_field, f_field = 0, v.mag / F.pow2(F.emin(fmt) - M)
    else:
        e_field, f_field = e + fmt.bias, v.mag / F.pow2(e - M) - 2 ** M
    assert f_field.denominator == 1 and 0 <= f_field < 2 ** M and 0 <= e_field <= F.exp_all_ones(fmt)
    return sign | (e_field << M) | int(f_field)


def decode_float(code, fmt):
    M = fmt.man_bits
    sign = code >> (fmt.exp_bits + M)
    if F.is_nan_code(code, fmt):
        return math.copysign(math.nan, -1.0 if sign and fmt.specials != "fnuz" else 1.0)
    if F.is_inf_code(code, fmt):
        return -math.inf if sign else math.inf
    e_field = (code >> M) & F.exp_all_ones(fmt)
    if e_field == 0 and code & (2 ** M - 1) and not fmt.subnormals:
        raise ValueError(f"code={code:#x}: a subnormal code, but the format has subnormals=False")
    return public(Exact("num", sign, F.code_magnitude(code, fmt)))


# ---- fixed point ---------------------------------------------------------

def fixed_overflow(k, fmt, overflow):
    """Apply the overflow rule (§3, §8) to a rounded raw integer k; return the stored raw integer."""
    lo, hi = F.fixed_raw_range(fmt)
    if overflow in ("wrap", "wrap_sign_magnitude"):
        r = k % 2 ** fmt.bits
        if fmt.signed and r > hi:
            r -= 2 ** fmt.bits
        if overflow == "wrap_sign_magnitude" and (r < 0) != ((k >> fmt.bits) & 1 == 1):
            r = ~r  # = -r - 1
        return r
    if overflow == "saturate_symmetric":
        lo = max(lo, -hi)  # never the most negative code, even for an in-range value
    if lo <= k <= hi:
        return k
    if overflow == "saturate_zero":
        return 0
    return hi if k > hi else lo  # saturate, saturate_symmetric


def round_fixed(v, fmt, rounding, overflow, u=None, sr_bits=32, sr_method="add"):
    """Round an Exact to the fixed-point format; return the stored raw integer."""
    if v.kind == "nan":
        raise ValueError("NaN input: fixed-point formats have no NaN")
    if v.kind == "inf":
        if overflow in ("wrap", "wrap_sign_magnitude"):
            raise ValueError(f"infinite input: cannot wrap with overflow={overflow!r}")
        lo, hi = F.fixed_raw_range(fmt)
        k = lo - 1 if v.sign else hi + 1  # beyond the range: the saturate-family rule decides
    else:
        y = v.value / F.fixed_lsb(fmt)
        if rounding == "stochastic":
            k = round_stochastic(y, u, sr_bits, sr_method)  # signed: toward +inf with probability f
        else:
            k = round_integer(y, rounding)
    return fixed_overflow(k, fmt, overflow)


def decode_fixed(code, fmt):
    k = code - 2 ** fmt.bits if fmt.signed and code >= 2 ** (fmt.bits - 1) else code
    return public(Exact("num", int(k < 0), abs(k) * F.fixed_lsb(fmt)))


# ---- public API ----------------------------------------------------------

def round_to_code(v, fmt, rounding="nearest_even", overflow=None, u=None, sr_bits=32, sr_method="add"):
    """Round an Exact to fmt and return the code (validated arguments)."""
    overflow = check_args(fmt, rounding, overflow, u, sr_bits, sr_method)
    if F.is_float(fmt):
        return float_code(round_float(v, fmt, rounding, overflow, u, sr_bits, sr_method), fmt)
    return round_fixed(v, fmt, rounding, overflow, u, sr_bits, sr_method) % 2 ** fmt.bits


def encode(x, fmt, rounding="nearest_even", overflow=None, *, u=None, sr_bits=32, sr_method="add"):
    """The code of x rounded to fmt (sign | exponent | mantissa, or the two's complement pattern)."""
    return round_to_code(parse(x), fmt, rounding, overflow, u, sr_bits, sr_method)


def decode(code, fmt):
    """The value of a code: Fraction, or float for zeros, infinities and NaN."""
    if not isinstance(code, numbers.Integral) or not 0 <= code < 2 ** F.code_bits(fmt):
        raise ValueError(f"code={code!r}: must be an integer in [0, 2^{F.code_bits(fmt)})")
    code = int(code)
    return decode_float(code, fmt) if F.is_float(fmt) else decode_fixed(code, fmt)


def quantize(x, fmt, rounding="nearest_even", overflow=None, *, u=None, sr_bits=32, sr_method="add"):
    """x rounded to fmt, as a value: decode(encode(x, ...))."""
    return decode(encode(x, fmt, rounding, overflow, u=u, sr_bits=sr_bits, sr_method=sr_method), fmt)
