"""Numba kernels: round an exact value to a format, once.

Every input is first split into ``sign, mag, e, sticky`` meaning
``(-1)**sign * (mag + ε) * 2**e`` with ``mag`` a uint64 and ``ε`` in (0, 1) when ``sticky``
(callers that set ``sticky`` pass ``mag >= 2**63``). Rounding then works on integers only:

1. choose the quantum exponent ``qe`` of the result (from the format and the input's exponent);
2. split ``mag`` at ``qe`` into the kept integer ``q`` and the discarded fraction as a 64-bit word
   ``F = floor(f * 2**64)`` plus a sticky bit for anything below it;
3. increment ``q`` or not (:func:`increment` — the one place where modes differ);
4. apply the overflow rule to the rounded value and build the code.

The format and mode arrive as one tuple of int64 built by :mod:`emul._params`; its slots are
named in :mod:`emul._kernels.slots`. Each element depends only on its own input and random word, so
results do not depend on thread count or chunking.
"""

import numpy as np
from numba import njit, types
from numba.core.extending import overload
from numba.cpython.unsafe.numbers import leading_zeros

from .threefry import threefry2x32
from .slots import *  # noqa: F401,F403 - the parameter slot names

_ZERO = np.uint64(0)
_ONE = np.uint64(1)
_HALF = np.uint64(1 << 63)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
_NEG_NAN = np.uint64(0xFFF8000000000000).view(np.float64)


@njit(inline="always")
def shr(x, n):
    """x >> n for uint64 x and any n >= 0 (0 once n >= 64)."""
    return x >> np.uint64(n) if n < 64 else _ZERO


@njit(inline="always")
def shl(x, n):
    """x << n mod 2**64 for uint64 x and any n >= 0."""
    return x << np.uint64(n) if n < 64 else _ZERO


@njit(inline="always")
def split(mag, s, sticky):
    """Split mag * 2**-s (s >= 1) into (q, F, sticky'): q = floor, F = next 64 fraction bits."""
    if s < 64:
        return mag >> np.uint64(s), mag << np.uint64(64 - s), sticky
    if s == 64:
        return _ZERO, mag, sticky
    d = s - 64
    lost = mag != _ZERO if d >= 64 else (mag & ((_ONE << np.uint64(d)) - _ONE)) != _ZERO
    return _ZERO, shr(mag, d), sticky or lost


@njit(inline="always")
def increment(lsb, F, sticky, sign, u, P):
    """Whether the kept magnitude rounds up by one ulp.

    ``lsb`` is the last bit of the kept code (for floats with ``man_bits == 0`` that is the
    exponent's last bit, as in hardware that rounds the exponent-and-mantissa field), ``F/2**64``
    the discarded fraction, ``sticky`` whether anything below ``F`` is nonzero.
    """
    if P[SR]:
        r = P[SR_BITS]
        t = F >> np.uint64(64 - r)
        if P[SR_CMP]:
            return u < t
        return t + u >= (_ONE << np.uint64(r))
    rule = P[K0] ^ (P[KS] & sign) ^ (P[KL] & lsb)
    if P[NEAREST]:
        above = F > _HALF or (F == _HALF and sticky)
        tie = F == _HALF and not sticky
        return above or (tie and rule == 1)
    return (F != _ZERO or sticky) and rule == 1


@njit(inline="always")
def float_code(sign, mag, e, sticky, u, P):
    """Code of (-1)**sign * (mag + sticky) * 2**e rounded to the float format in P (finite input)."""
    signbit = np.uint64(sign) << np.uint64(P[BITS] - 1)
    if mag == _ZERO:
        return signbit if P[NEGZERO] else _ZERO
    m = P[M]
    emin = P[EMIN]
    x_exp = e + 63 - np.int64(leading_zeros(mag))
    if x_exp > P[EMAX]:
        return np.uint64(P[OVF_NEG] if sign else P[OVF_POS])
    below = x_exp < emin
    if not below:
        qe = x_exp - m
    elif P[SUB]:
        qe = emin - m
    else:
        qe = emin  # no subnormals: the grid {0, min_normal}
    s = qe - e
    if s <= 0:
        q = mag << np.uint64(-s)
        F = _ZERO
        st = False
    else:
        q, F, st = split(mag, s, sticky)
    base = _ZERO if below else np.uint64(x_exp - emin) << np.uint64(m)
    if increment(np.int64((base + q) & _ONE), F, st, sign, u, P):
        q += _ONE
    if below:
        code = q << np.uint64(m) if not P[SUB] else q
    else:
        code = base + q
    if code > np.uint64(P[MAXC]):
        return np.uint64(P[OVF_NEG] if sign else P[OVF_POS])
    if code == _ZERO and not P[NEGZERO]:
        return _ZERO
    return signbit | code


@njit(inline="always")
def exp_code(sign, mag, e, sticky, u, P):
    """Code of (-1)**sign * (mag + sticky) * 2**e in the unsigned exponent-only format in P (e8m0):
    x <= 0 gives NaN, x below 2**EMIN gives code 0 (there is no zero), else 2**x_exp rounds to
    2**(x_exp + 1) by the mode, whose "lsb" is the code's last bit."""
    if sign or mag == _ZERO:
        return np.uint64(P[NANC])
    n = np.int64(leading_zeros(mag))
    x_exp = e + 63 - n
    if x_exp < P[EMIN]:
        return _ZERO
    if x_exp > P[EMAX]:
        return np.uint64(P[OVF_POS])
    F = (mag << np.uint64(n)) << _ONE  # the fraction below the leading bit, exactly
    code = np.uint64(x_exp + P[BIAS])
    if increment(np.int64(code & _ONE), F, sticky, 0, u, P):
        code += _ONE
    if code > np.uint64(P[MAXC]):
        return np.uint64(P[OVF_POS])
    return code


@njit(inline="always")
def fixed_code(sign, mag, e, sticky, u, P):
    """Two's complement pattern of the value rounded to the fixed format in P (finite input)."""
    bits = P[BITS]
    mask = _ALL >> np.uint64(64 - bits)
    if mag == _ZERO:
        return _ZERO
    s = -(e + P[FRAC])  # bits of mag below the lsb
    hi = _ZERO
    big = False
    if s <= 0:  # exact: Q = mag << -s, tracked mod 2**65 plus a "too big" flag
        n = -s
        lo = shl(mag, n)
        if 0 < n <= 64:
            hi = (mag >> np.uint64(64 - n)) & _ONE
        big = 64 - np.int64(leading_zeros(mag)) + n > 65
    else:
        q, F, st = split(mag, s, sticky)
        if P[SR] and sign:  # SR acts on the signed value: f is measured from below
            inexact = F != _ZERO or st
            G = _ZERO - F - np.uint64(st) if inexact else _ZERO
            r = P[SR_BITS]
            t = G >> np.uint64(64 - r)
            toward_pos = (u < t) if P[SR_CMP] else (t + u >= (_ONE << np.uint64(r)))
            inc = inexact and not toward_pos
        else:
            inc = increment(np.int64(q & _ONE), F, st, sign, u, P)
        lo = q + np.uint64(inc)
        if inc and lo == _ZERO:
            hi = _ONE
    limit = np.uint64(P[NEGMAG]) if sign else np.uint64(P[MAXRAW])
    rule = P[RULE]
    if not big and hi == _ZERO and lo <= limit:
        if rule == RULE_SAT_SYM and sign and P[SIGNED] and lo == np.uint64(P[NEGMAG]):
            return (_ZERO - np.uint64(P[MAXRAW])) & mask
        return ((_ZERO - lo) if sign else lo) & mask
    if rule == RULE_WRAP or rule == RULE_WRAP_SM:
        if sign:  # negate the 65-bit magnitude (hi, lo)
            hi = ((hi ^ _ONE) + np.uint64(lo == _ZERO)) & _ONE
            lo = _ZERO - lo
        raw = lo & mask
        if rule == RULE_WRAP_SM:
            dropped = hi if bits == 64 else (lo >> np.uint64(bits)) & _ONE
            if (raw >> np.uint64(bits - 1)) != dropped:
                raw = ~raw & mask
        return raw
    return saturated(sign, P)


@njit(inline="always")
def saturated(sign, P):
    """The saturate-family result for an out-of-range value of this sign (fixed point)."""
    rule = P[RULE]
    bits = P[BITS]
    mask = _ALL >> np.uint64(64 - bits)
    if rule == RULE_SAT_ZERO:
        return _ZERO
    if not sign:
        return np.uint64(P[MAXRAW]) & mask
    if not P[SIGNED]:
        return _ZERO
    if rule == RULE_SAT_SYM:
        return (_ZERO - np.uint64(P[MAXRAW])) & mask
    return (_ZERO - np.uint64(P[NEGMAG])) & mask


# -- reading inputs ------------------------------------------------------------------------------
# parts(v) -> (sign, mag, e, special) with special 0 = finite, 1 = inf, 2 = NaN. float16 arrives as
# its uint16 bit patterns; integer inputs arrive as int64 or uint64. Floats are read from their bit
# patterns only, never with a floating-point instruction, so the thread's MXCSR (flush-to-zero,
# denormals-are-zero) cannot change what a subnormal input means.
#
# The overload is a plain call for Numba (LLVM inlines it anyway): inlining it at the Numba IR level
# (inline="always") into a function that reads two or three operands, as the arithmetic kernels
# do, trips Numba's SSA pass, which then prints NumbaIRAssumptionWarning ("variable ... is not in
# scope ... please report") on the first compile. tests/test_compile_warnings.py keeps it away.

def parts(v):
    pass


@njit(inline="always")
def _float_parts(b, total, ebits, mbits):
    sign = np.int64(b >> np.uint64(total - 1))
    ef = np.int64((b >> np.uint64(mbits)) & np.uint64((1 << ebits) - 1))
    f = b & np.uint64((1 << mbits) - 1)
    bias = (1 << (ebits - 1)) - 1
    if ef == (1 << ebits) - 1:
        return sign, f, np.int64(0), 1 if f == _ZERO else 2
    if ef == 0:
        return sign, f, np.int64(1 - bias - mbits), 0
    return sign, f | (_ONE << np.uint64(mbits)), ef - bias - mbits, 0


@overload(parts)
def _parts(v):
    if v == types.float64:
        return lambda v: _float_parts(np.uint64(np.float64(v).view(np.uint64)), 64, 11, 52)
    if v == types.float32:
        return lambda v: _float_parts(np.uint64(np.float32(v).view(np.uint32)), 32, 8, 23)
    if v == types.uint16:
        return lambda v: _float_parts(np.uint64(v), 16, 5, 10)
    if v == types.int64:
        def impl(v):
            if v < 0:
                return np.int64(1), _ZERO - np.uint64(v), np.int64(0), 0
            return np.int64(0), np.uint64(v), np.int64(0), 0
        return impl
    if v == types.uint64:
        return lambda v: (np.int64(0), v, np.int64(0), 0)


@njit(inline="always")
def round_one(v, u, P):
    """(code, bad) for one input element: bad is 1 for NaN, 2 for inf the format cannot take."""
    sign, mag, e, special = parts(v)
    return round_parts(sign, mag, e, special, u, P)


@njit(inline="always")
def round_parts(sign, mag, e, special, u, P):
    """round_one of the input split by :func:`parts` (special: 0 finite, 1 inf, 2 NaN)."""
    if special == 0:
        if P[KIND] == 0:
            return float_code(sign, mag, e, False, u, P), 0
        if P[KIND] == 2:
            return exp_code(sign, mag, e, False, u, P), 0
        return fixed_code(sign, mag, e, False, u, P), 0
    if special == 2 and P[KIND] == 2:
        return np.uint64(P[NANC]), 0
    if special == 2:
        if P[NANC] < 0:
            return _ZERO, 1
        if P[FNUZ]:
            return np.uint64(P[NANC]), 0
        return np.uint64(P[NANC]) | (np.uint64(sign) << np.uint64(P[BITS] - 1)), 0
    if P[KIND] == 1 and (P[RULE] == RULE_WRAP or P[RULE] == RULE_WRAP_SM):
        return _ZERO, 2
    return np.uint64(P[INF_NEG] if sign else P[INF_POS]), 0


# Input kinds of the general kernels, which read every input as its 64 bits (one compiled
# signature instead of one per input and output dtype: each costs seconds of compile).
IN_FLOAT64, IN_INT64, IN_UINT64 = 0, 1, 2
IN_KIND = {"f": IN_FLOAT64, "i": IN_INT64, "u": IN_UINT64}  # by the numpy dtype's kind


@njit(inline="always")
def bits_parts(b, kind):
    """parts() of the input whose 64 bits are b, read as float64, int64 or uint64 (kind)."""
    if kind == IN_FLOAT64:
        return _float_parts(b, 64, 11, 52)
    if kind == IN_INT64 and b >> np.uint64(63) != _ZERO:
        return np.int64(1), _ZERO - b, np.int64(0), 0
    return np.int64(0), b, np.int64(0), 0


@njit(inline="always")
def _result(code, P, values):
    """The output word: the code, or the float64 bits of its value when ``values``."""
    if values:
        return np.float64(code_value(code, P)).view(np.uint64)
    return code


# -- writing outputs -----------------------------------------------------------------------------

@njit  # (a plain call: Numba's IR inlining of a function called several times in one caller is fragile)
def f64_from(sign, mag, e):
    """(-1)**sign * mag * 2**e as a float64 for a uint64 ``mag`` when that value is a float64 (a
    precondition: nothing is rounded). Built from bits, not with a multiplication, so that a
    subnormal result is not flushed to zero by the thread's flush-to-zero mode (MXCSR.FTZ)."""
    sb = np.uint64(sign) << np.uint64(63)
    if mag == _ZERO:
        return np.uint64(sb).view(np.float64)
    n = 63 - np.int64(leading_zeros(mag))  # mag's top bit
    x = e + n  # the value's binary exponent
    if x >= -1022:
        f = mag << np.uint64(52 - n) if n <= 52 else mag >> np.uint64(n - 52)
        b = (np.uint64(x + 1023) << np.uint64(52)) | (f & np.uint64((1 << 52) - 1))
    else:  # subnormal: mag on the grid of 2**-1074
        s = e + 1074
        b = mag << np.uint64(s) if s >= 0 else mag >> np.uint64(-s)
    return np.uint64(sb | b).view(np.float64)


@njit(inline="always")
def code_value(code, P):
    """The float64 value of a valid code of the format in P (from bits, see :func:`f64_from`)."""
    bits = P[BITS]
    if P[KIND] == 2:
        if code == np.uint64(P[NANC]):
            return np.nan
        return f64_from(0, _ONE, np.int64(code) - P[BIAS])
    if P[KIND] == 1:
        raw = np.int64(code << np.uint64(64 - bits))
        raw = raw >> np.int64(64 - bits) if P[SIGNED] else np.int64(code)
        if raw < 0:  # two's complement negation, exact for -2**63
            return f64_from(1, _ZERO - np.uint64(raw), -P[FRAC])
        return f64_from(0, np.uint64(raw), -P[FRAC])
    m = P[M]
    sign = (code >> np.uint64(bits - 1)) & _ONE
    mag = code & ((_ONE << np.uint64(bits - 1)) - _ONE)
    if mag > np.uint64(P[MAXC]):
        if P[IEEE] and mag == np.uint64(P[INFC]):
            return -np.inf if sign else np.inf
        return _NEG_NAN if sign else np.nan  # (-np.nan compiles to a positive NaN)
    if P[FNUZ] and sign and mag == _ZERO:
        return np.nan
    ef = np.int64(mag >> np.uint64(m))
    f = mag & ((_ONE << np.uint64(m)) - _ONE)
    if ef == 0:
        return f64_from(sign, f, P[EMIN] - m)
    return f64_from(sign, f | (_ONE << np.uint64(m)), ef - P[BIAS] - m)


# -- kernels -------------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def round_serial(x, kind, u, P, out, values):
    """Round x (flat uint64: the bits of float64, int64 or uint64 inputs, by ``kind``) into out
    (flat uint64: codes, or the float64 bits of their values when ``values``); u[i] is element
    i's SR word (read with SR only). Returns (#NaN rejected, #inf rejected). One thread;
    emul.quantize runs large arrays as slices on several (emul._threads.run_slices)."""
    nan_bad = 0
    inf_bad = 0
    sr = P[SR] != 0
    for i in range(x.size):
        sign, mag, e, special = bits_parts(x[i], kind)
        code, bad = round_parts(sign, mag, e, special, np.uint64(u[i]) if sr else _ZERO, P)
        out[i] = _result(code, P, values)
        nan_bad += bad == 1
        inf_bad += bad == 2
    return nan_bad, inf_bad


@njit(inline="always")
def code_valid(code, P):
    bits = P[BITS]
    if code >> np.uint64(bits - 1) >> _ONE != _ZERO:  # wider than the format
        return False
    if P[KIND] == 2:
        return True
    if P[KIND] == 0 and not P[SUB]:
        mag = code & ((_ONE << np.uint64(bits - 1)) - _ONE)
        if mag >> np.uint64(P[M]) == _ZERO and mag != _ZERO:
            return False
    return True


@njit(cache=True, nogil=True)
def decode_serial(codes, P, out):
    """Values of codes (flat uint64); returns the number of invalid codes (their output is NaN)."""
    bad = 0
    for i in range(codes.size):
        c = np.uint64(codes[i])
        if code_valid(c, P):
            out[i] = code_value(c, P)
        else:
            out[i] = np.nan
            bad += 1
    return bad


@njit(cache=True, nogil=True)
def round_seeded(x, kind, k0, k1, first, P, out, values):
    """round_serial for stochastic rounding with threefry words made on the fly: element i uses
    word first + i, ``emul.random.bits(key, (n,))[first + i] >> (32 - sr_bits)`` (x is the slice
    of a whole array that starts at element ``first``; no array of words is stored)."""
    nan_bad = 0
    inf_bad = 0
    shift = np.uint32(32 - P[SR_BITS])
    for i in range(x.size):
        c = i + first
        y0, y1 = threefry2x32(k0, k1, np.uint32(c >> 32), np.uint32(c & 0xFFFFFFFF))
        sign, mag, e, special = bits_parts(x[i], kind)
        code, bad = round_parts(sign, mag, e, special, np.uint64(np.uint32(y0 ^ y1) >> shift), P)
        out[i] = _result(code, P, values)
        nan_bad += bad == 1
        inf_bad += bad == 2
    return nan_bad, inf_bad


# -- exact float conversions from bits -----------------------------------------------------------
# numpy's float32 -> float64 cast reads a subnormal as 0 when the thread has denormals-are-zero set
# (MXCSR.DAZ; XLA's CPU threads do), and its float64 -> float32 cast writes a subnormal as 0 under
# flush-to-zero. These two are exact for every input whatever the MXCSR: integer operations only.

@njit(cache=True)
def widen(x, out):
    """out[i] = x[i] as a float64 (x: float32, or float16 as its uint16 bits); exact. NaNs become
    the quiet NaN of their sign (payloads are not kept, as docs/rounding.md says of results)."""
    for i in range(x.size):
        sign, mag, e, special = parts(x[i])
        if special == 0:
            out[i] = f64_from(sign, mag, e)
        else:  # ±inf, or the quiet NaN of the sign
            top = np.uint64(0x7FF0000000000000 if special == 1 else 0x7FF8000000000000)
            out[i] = np.uint64((np.uint64(sign) << np.uint64(63)) | top).view(np.float64)


@njit
def f32_bits(v):
    """The float32 bit pattern of the float64 v, whose value is a float32 (or ±inf, NaN: the quiet
    NaN of its sign); exact, from the bits."""
    b = np.float64(v).view(np.uint64)
    sb = np.uint32(b >> np.uint64(63)) << np.uint32(31)
    ef = np.int64((b >> np.uint64(52)) & np.uint64(0x7FF))
    f = b & np.uint64((1 << 52) - 1)
    if ef == 0x7FF:
        return np.uint32(sb | np.uint32(0x7F800000 if f == _ZERO else 0x7FC00000))
    if ef == 0:  # ±0 (a float64 subnormal is never a float32 value)
        return np.uint32(sb)
    if ef - 1023 >= -126:
        return np.uint32(sb | np.uint32((ef - 1023 + 127) << 23) | np.uint32(f >> np.uint64(29)))
    # a float32 subnormal: the significand on the grid of 2**-149
    return np.uint32(sb | np.uint32((f | (_ONE << np.uint64(52))) >> np.uint64(-97 - (ef - 1023))))


@njit(cache=True)
def narrow(x, out):
    """out[i] = the float32 bit pattern of the float64 x[i], a float32 value (see f32_bits)."""
    for i in range(x.size):
        out[i] = f32_bits(x[i])
