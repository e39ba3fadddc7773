"""Codes of a format as integers: ordinals on the value grid, exact values, corner codes, every code,
random codes, and the exact values emul's functions take for them."""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import numpy as np

from .. import random as _random
from ..formats import FixedFormat, FloatFormat, format as as_format
from ..quantize import code_dtype, decode as _core_decode, encode as _core_encode

MAX_LINES = 1 << 26

TABLE_BITS = 16  # formats up to this width decode and (exact values) encode by table lookup


@functools.lru_cache(maxsize=32)
def _value_table(fmt):
    """(value of every code as ``emul.decode`` gives it, float64; invalid-code mask) of a float or
    fixed-point format of at most 16 bits whose values fit float64, built in one vectorised NumPy
    pass (no kernel to compile); None for other formats. Floats: (-1)**s * f * 2**(emin - m) for
    e == 0, (-1)**s * (2**m + f) * 2**(e - bias - m) else (np.ldexp of integers: exact); codes above
    the largest finite magnitude are ±inf (the inf pattern of formats with inf) or NaN with the
    code's sign; fnuz's 0x80… is +NaN; e == 0, f != 0 is invalid without subnormals. Fixed point:
    the two's complement raw value * 2**-frac. tests/test_vectors.py checks every code of many
    formats against emul.decode bit for bit."""
    if fmt.bits > TABLE_BITS:
        return None
    c = np.arange(1 << fmt.bits, dtype=np.int64)
    if isinstance(fmt, FixedFormat):
        raw = c - ((c >> (fmt.bits - 1)) << fmt.bits) if fmt.signed else c
        return np.ldexp(raw.astype(np.float64), -fmt.frac), np.zeros(c.size, bool)
    if not isinstance(fmt, FloatFormat) or fmt.emax > 1023 or fmt.emin - fmt.man_bits < -1074:
        return None
    m = fmt.man_bits
    neg = (c >> (fmt.bits - 1)) != 0
    mag = c & ((1 << (fmt.bits - 1)) - 1)
    e, f = mag >> m, mag & ((1 << m) - 1)
    with np.errstate(over="ignore"):
        v = np.where(e == 0, np.ldexp(f.astype(np.float64), fmt.emin - m),
                     np.ldexp((f + (1 << m)).astype(np.float64), e - fmt.bias - m))
    special = mag > fmt.max_code_magnitude
    inf = special & (mag == ((1 << fmt.exp_bits) - 1) << m) if fmt.has_inf else np.zeros(c.size, bool)
    v = np.where(special, np.where(inf, np.inf, np.nan), v)
    v = np.where(neg, -v, v)  # -0.0, -inf and NaN with the sign bit set (0xfff8…)
    if fmt.specials == "fnuz":
        v[1 << (fmt.bits - 1)] = np.nan  # the one NaN: +NaN
    bad = np.zeros(c.size, bool)
    if not fmt.subnormals:
        bad = (e == 0) & (f != 0)
        v[bad] = 0.0
    return v, bad


def decode(codes, fmt):
    """``emul.decode`` (the same float64 values and errors); formats of at most 16 bits by a lookup
    in :func:`_value_table`, which needs no compiled kernel (a cold start of ``emul vectors``
    compiled the core's threaded decoder only to read 256 codes)."""
    fmt = as_format(fmt)
    t = _value_table(fmt) if isinstance(fmt, (FloatFormat, FixedFormat)) else None
    a = np.asarray(codes)
    if t is None or a.dtype.kind not in "iu" or (a.size and (int(a.min()) < 0 or int(a.max()) >> fmt.bits)):
        return _core_decode(codes, fmt)
    vals, bad = t
    idx = a.astype(np.intp)
    if a.size and bad[idx].any():
        return _core_decode(codes, fmt)  # its ValueError
    out = vals[idx]
    return out if isinstance(codes, np.ndarray) or out.ndim else out[()]


@functools.lru_cache(maxsize=32)
def _code_table(fmt, overflow):
    """(sorted float64 patterns of the finite values, their codes, +NaN code, -NaN code, +inf code,
    -inf code) for :func:`encode_exact`; -1 where emul.encode raises or the table does not apply;
    None for formats without a value table."""
    from .._kernels import slots as K
    from .._params import kernel_params, resolve

    t = _value_table(fmt) if isinstance(fmt, (FloatFormat, FixedFormat)) else None
    if t is None:
        return None
    vals, bad = t
    ok = np.isfinite(vals) & ~bad
    bits = vals.view(np.uint64)[ok]
    codes = np.flatnonzero(ok).astype(np.uint64)
    if isinstance(fmt, FixedFormat) or not fmt.has_negative_zero:  # -0.0 is encoded as +0's code
        bits = np.append(bits, np.uint64(1 << 63))
        codes = np.append(codes, codes[bits[:-1] == 0][:1])
    order = np.argsort(bits, kind="stable")
    try:
        P = kernel_params(*resolve(fmt, "nearest_even", overflow, None, "add"))
    except (TypeError, ValueError):
        return None  # emul.encode gives the error
    nan_pos = nan_neg = inf_pos = inf_neg = -1
    if isinstance(fmt, FloatFormat):  # as emul/_kernels/round.py: round_one reads the same slots
        if P[K.NANC] >= 0:
            nan_pos = int(P[K.NANC])
            nan_neg = nan_pos if P[K.FNUZ] else nan_pos | (1 << (fmt.bits - 1))
        inf_pos, inf_neg = int(P[K.INF_POS]), int(P[K.INF_NEG])
    return bits[order], codes[order], nan_pos, nan_neg, inf_pos, inf_neg


def encode_exact(r, fmt, overflow=None):
    """``emul.encode(r, fmt, overflow=overflow)`` (default rounding) for float64 ``r`` whose values
    are mostly values of ``fmt`` (results emul.arith or a dot product already rounded to it): a
    value of the format gets its code from :func:`_code_table` (a value of the format is its own
    rounding in every mode and under every overflow rule), NaN and ±inf the codes the core's kernels
    give them (emul/_kernels/round.py: round_one's slots); anything else — a value between codes,
    a NaN the format has no code for, an infinity of a fixed-point format — goes through
    emul.encode, so the result is emul.encode's whatever r holds. No kernel is compiled when every
    value is found (the cold start of ``emul vectors mul`` spent most of its time compiling the
    float64 rounding kernel for values it only had to look up)."""
    fmt = as_format(fmt)
    a = np.asarray(r)
    t = _code_table(fmt, overflow) if a.dtype == np.float64 else None
    if t is None:
        return _core_encode(r, fmt, overflow=overflow)
    keys, codes, nan_pos, nan_neg, inf_pos, inf_neg = t
    flat = a.reshape(-1)
    b = flat.view(np.uint64)
    i = np.minimum(np.searchsorted(keys, b), keys.size - 1)
    hit = keys[i] == b
    out = np.where(hit, codes[i], np.uint64(0))
    neg = (b >> np.uint64(63)) != 0
    for mask, pos, negc in ((np.isnan(flat), nan_pos, nan_neg), (np.isinf(flat), inf_pos, inf_neg)):
        if pos >= 0 and mask.any():
            out = np.where(mask, np.where(neg, np.uint64(negc), np.uint64(pos)), out)
            hit |= mask
    miss = ~hit
    if miss.any():
        out[miss] = _core_encode(flat[miss], fmt, overflow=overflow)
    out = out.astype(code_dtype(fmt)).reshape(a.shape)
    return out if isinstance(r, np.ndarray) or out.ndim else out[()]



def _ord(codes, fmt) -> np.ndarray:
    """Monotone integer of each code (floats: ±magnitude code; fixed point: the signed raw)."""
    c = np.asarray(codes, np.uint64)
    if isinstance(fmt, FloatFormat):
        sign = c >> np.uint64(fmt.bits - 1)
        mag = (c & np.uint64((1 << (fmt.bits - 1)) - 1)).astype(np.int64)
        return np.where(sign != 0, -mag, mag)
    if fmt.signed:
        return (c << np.uint64(64 - fmt.bits)).view(np.int64) >> np.int64(64 - fmt.bits)
    return c.astype(np.int64)


def _ord_range(fmt):
    """(lowest, highest) ordinal of a finite value."""
    if isinstance(fmt, FloatFormat):
        return -fmt.max_code_magnitude, fmt.max_code_magnitude
    return fmt.min_raw, fmt.max_raw


def _from_ord(ords, fmt) -> np.ndarray:
    """Codes of ordinals, clipped to the finite range (nosub: subnormal patterns -> min normal)."""
    lo, hi = _ord_range(fmt)
    o = np.asarray(np.clip(np.asarray(ords, np.int64), lo, hi), np.int64)
    if isinstance(fmt, FloatFormat):
        mag = np.abs(o).astype(np.uint64)
        if not fmt.subnormals:
            mag = np.where((mag != 0) & (mag < np.uint64(1 << fmt.man_bits)), np.uint64(1 << fmt.man_bits), mag)
        sign = np.where(o < 0, np.uint64(1 << (fmt.bits - 1)), np.uint64(0))
        return mag | sign
    return o.view(np.uint64) & np.uint64((1 << fmt.bits) - 1) if fmt.bits < 64 else o.view(np.uint64)


def _succ(fmt, o):
    """Next ordinal on the value grid (nosub: 0 and ±min_normal are neighbours)."""
    o = np.asarray(o, np.int64)
    nxt = o + 1
    if isinstance(fmt, FloatFormat) and not fmt.subnormals:
        mn = 1 << fmt.man_bits
        nxt = np.where(o == 0, mn, np.where(o == -mn, 0, nxt))
    return nxt


def _grid(fmt, o) -> np.ndarray:
    """Values at ordinals, extended past ±max with the last spacing (float64)."""
    o = np.asarray(o, np.int64)
    lo, hi = _ord_range(fmt)
    if isinstance(fmt, FixedFormat):
        return o.astype(np.float64) * fmt.lsb
    inside = decode(_from_ord(o, fmt), fmt)
    top = float(decode(_from_ord(hi, fmt), fmt))
    step = top - float(decode(_from_ord(hi - 1, fmt), fmt))
    with np.errstate(over="ignore", invalid="ignore"):  # both branches are evaluated (fp64: inf)
        out = np.where(o > hi, top + (o - hi) * step, inside)
        return np.where(o < lo, -top - (lo - o) * step, out)


def _valid_mask(codes, fmt) -> np.ndarray:
    c = np.asarray(codes, np.uint64)
    if isinstance(fmt, FloatFormat) and not fmt.subnormals:
        mag = c & np.uint64((1 << (fmt.bits - 1)) - 1)
        return ~(((mag >> np.uint64(fmt.man_bits)) == 0) & (mag != 0))
    return np.ones(c.shape, bool)


# -- exact ordinals and values (Python ints and Fractions), for every width up to 64 bits


def _ord_py(code: int, fmt) -> int:
    """The ordinal of one code (as _ord), as a Python int."""
    code = int(code)
    top = 1 << (fmt.bits - 1)
    if isinstance(fmt, FloatFormat):
        return -(code & (top - 1)) if code & top else code & (top - 1)
    return code - (top << 1) if fmt.signed and code & top else code


def _code_py(o: int, fmt) -> int:
    """The code of an ordinal clipped to the finite range (as _from_ord), as a Python int."""
    lo, hi = _ord_range(fmt)
    o = min(max(o, lo), hi)
    if isinstance(fmt, FloatFormat):
        mag = abs(o)
        if not fmt.subnormals and 0 < mag < 1 << fmt.man_bits:
            mag = 1 << fmt.man_bits
        return mag | (1 << (fmt.bits - 1) if o < 0 else 0)
    return o & ((1 << fmt.bits) - 1)


def _succ_py(fmt, o: int) -> int:
    if isinstance(fmt, FloatFormat) and not fmt.subnormals:
        mn = 1 << fmt.man_bits
        if o == 0:
            return mn
        if o == -mn:
            return 0
    return o + 1


def _pow2(e: int) -> Fraction:
    return Fraction(2) ** e


def _value_py(fmt, o: int) -> Fraction:
    """The exact value at an ordinal, extended past the finite range with the last spacing."""
    if isinstance(fmt, FixedFormat):
        return o * _pow2(-fmt.frac)
    lo, hi = _ord_range(fmt)
    if not lo <= o <= hi:
        top = fmt._magnitude_value(hi)
        step = top - fmt._magnitude_value(hi - 1)
        return top + (o - hi) * step if o > hi else -(top + (lo - o) * step)
    mag = abs(o)
    if not fmt.subnormals and 0 < mag < 1 << fmt.man_bits:
        mag = 1 << fmt.man_bits
    v = fmt._magnitude_value(mag)
    return -v if o < 0 else v


def _toward_zero_ord(fmt, v: Fraction) -> int:
    """The ordinal of the value of fmt nearest to v toward zero; beyond the range, the end."""
    if isinstance(fmt, FixedFormat):
        return min(max(math.trunc(v * _pow2(fmt.frac)), fmt.min_raw), fmt.max_raw)
    a = abs(v)
    m = fmt.man_bits
    if a >= fmt._magnitude_value(fmt.max_code_magnitude):
        mag = fmt.max_code_magnitude
    elif a < _pow2(fmt.emin):
        mag = math.floor(a / _pow2(fmt.emin - m)) if fmt.subnormals else 0
    else:
        e = a.numerator.bit_length() - a.denominator.bit_length()
        if _pow2(e) > a:
            e -= 1
        mag = ((e + fmt.bias) << m) + math.floor(a / _pow2(e - m)) - (1 << m)
    return -mag if v < 0 else mag


def _extremes(fmt):
    """(lowest, highest) finite value, exactly."""
    lo, hi = _ord_range(fmt)
    return _value_py(fmt, lo), _value_py(fmt, hi)


def _fits_float64(fmt) -> bool:
    """Whether every value of fmt is a float64 (ordinals then also fit int64 with room)."""
    return isinstance(fmt, FloatFormat) or fmt.fits_float64


def all_codes(fmt) -> np.ndarray:
    """Every valid code of a format, ascending (uint64)."""
    fmt = as_format(fmt)
    if fmt.bits > 26:
        raise ValueError(f"{fmt.name}: {fmt.bits}-bit codes are too many to enumerate")
    c = np.arange(1 << fmt.bits, dtype=np.uint64)
    return c[_valid_mask(c, fmt)]


def _unique_keep_order(a, axis=None):
    if a.size == 0:
        return a
    if axis is None:
        _, idx = np.unique(a, return_index=True)
    else:
        _, idx = np.unique(a, axis=axis, return_index=True)
    return a[np.sort(idx)]


def corner_codes(fmt) -> np.ndarray:
    """Codes of a format's corner values, both signs: zeros, smallest and largest subnormals,
    smallest normals, 1 and its neighbours, 1.5, max and its neighbour, inf, NaNs (floats); min,
    max, 0, ±1 lsb, ±1.0 and half-range values (fixed point). uint64, no duplicates.

    >>> corner_codes("e2m1fn").tolist()   # ±0, ±0.5, ±1, ±1.5, ±4, ±6
    [0, 8, 1, 9, 2, 10, 3, 11, 6, 14, 7, 15]
    """
    fmt = as_format(fmt)
    if isinstance(fmt, FixedFormat):
        one = 1 << fmt.frac if 0 <= fmt.frac < fmt.bits else None
        raws = [fmt.min_raw, fmt.min_raw + 1, fmt.min_raw // 2, -1, 0, 1, 2, fmt.max_raw // 2,
                fmt.max_raw - 1, fmt.max_raw]
        if one is not None:
            raws += [one, -one, one + 1, one - 1]
        raws = [r for r in raws if fmt.min_raw <= r <= fmt.max_raw]
        mask = (1 << fmt.bits) - 1
        return _unique_keep_order(np.array([r & mask for r in raws], np.uint64))
    m, maxc = fmt.man_bits, fmt.max_code_magnitude
    one = fmt.bias << m
    mags = [0, 1, 2, (1 << m) - 1, 1 << m, (1 << m) + 1, one - 1, one, one + 1]
    if m:
        mags.append(one + (1 << (m - 1)))
    mags += [maxc - 1, maxc]
    mags = [g for g in mags if 0 <= g <= maxc]
    signbit = 1 << (fmt.bits - 1)
    codes = []
    for g in mags:
        codes.append(g)
        if g or fmt.has_negative_zero:
            codes.append(g | signbit)
    all_ones = (1 << (fmt.bits - 1)) - 1
    inf = ((1 << fmt.exp_bits) - 1) << m
    if fmt.specials == "ieee":
        codes += [inf, inf | signbit, inf | (1 << (m - 1)), inf | (1 << (m - 1)) | signbit, inf | 1, all_ones]
    elif fmt.specials == "fn":
        codes += [all_ones, all_ones | signbit]
    elif fmt.specials == "fnuz":
        codes += [signbit]
    c = np.array(codes, np.uint64)
    c = c[_valid_mask(c, fmt)]
    return _unique_keep_order(c)


def _arith_corners(fmt) -> np.ndarray:
    """Corner codes plus operands whose sums/products need rounding (1 + k ulp, 3, 0.75…)."""
    fmt = as_format(fmt)
    base = corner_codes(fmt)
    if isinstance(fmt, FixedFormat):
        return base
    m, one, maxc = fmt.man_bits, fmt.bias << fmt.man_bits, fmt.max_code_magnitude
    extra = [one + 3, one + (1 << m) + (1 << max(m - 1, 0)), one - (1 << max(m - 1, 0)), (1 << m) + 3, maxc - 3]
    extra = [g for g in extra if 0 < g <= maxc]
    signbit = 1 << (fmt.bits - 1)
    extra = np.array(extra + [g | signbit for g in extra], np.uint64)
    extra = extra[_valid_mask(extra, fmt)]
    return _unique_keep_order(np.concatenate([base, extra]))


def _words64(key, n) -> np.ndarray:
    """n uint64 words from Threefry bits (two 32-bit words each)."""
    w = _random.bits(key, 2 * n).astype(np.uint64).reshape(n, 2)
    return (w[:, 0] << np.uint64(32)) | w[:, 1]


def _random_codes(fmt, w) -> np.ndarray:
    """Codes from uint64 words: floats uniform over bit patterns; fixed point a uniform value of a
    random width 1..bits (so small and large magnitudes are both common)."""
    w = np.asarray(w, np.uint64)
    if isinstance(fmt, FloatFormat):
        c = w & np.uint64((1 << fmt.bits) - 1)
        if not fmt.subnormals:
            mag_mask = np.uint64((1 << (fmt.bits - 1)) - 1)
            sub = ((c & mag_mask) >> np.uint64(fmt.man_bits)) == 0
            c = np.where(sub, c & ~np.uint64((1 << fmt.man_bits) - 1), c)
        return c
    width = (w >> np.uint64(58)) % np.uint64(fmt.bits) + np.uint64(1)  # 1..bits
    low = w & np.uint64((1 << 58) - 1) if fmt.bits <= 58 else w
    raw = low & ((np.uint64(1) << width) - np.uint64(1)) if fmt.bits < 64 else low
    if fmt.signed:
        top = np.uint64(1) << (width - np.uint64(1))
        raw = np.where(raw & top, raw | ~((top << np.uint64(1)) - np.uint64(1)), raw)
    return raw & np.uint64((1 << fmt.bits) - 1) if fmt.bits < 64 else raw


def _values(codes, fmt):
    """The exact value of each code for emul's functions: int64 for integers, else float64.

    NaN codes keep their sign (``decode`` returns +NaN for every NaN code), so that operations
    that propagate a NaN operand's sign see it; fnuz formats have one unsigned NaN.
    """
    fmt = as_format(fmt)
    if isinstance(fmt, FixedFormat) and fmt.frac == 0:
        if not fmt.signed and fmt.bits == 64:
            return np.asarray(codes, np.uint64)
        return _ord(codes, fmt)
    c = np.asarray(codes, np.uint64)
    v = decode(c, fmt)
    if isinstance(fmt, FloatFormat) and fmt.has_nan and fmt.specials != "fnuz":
        neg = (c >> np.uint64(fmt.bits - 1)) != 0
        v = np.where(np.isnan(v), np.where(neg, -np.nan, np.nan), v)
    return v


def _isnan(codes, fmt):
    fmt = as_format(fmt)
    if isinstance(fmt, FixedFormat) or not fmt.has_nan:
        return np.zeros(np.shape(codes), bool)
    return np.isnan(decode(np.asarray(codes, np.uint64), fmt))


def _isinf(codes, fmt):
    fmt = as_format(fmt)
    if isinstance(fmt, FixedFormat) or not fmt.has_inf:
        return np.zeros(np.shape(codes), bool)
    return np.isinf(decode(np.asarray(codes, np.uint64), fmt))


def _check_lines(n, what):
    if n > MAX_LINES:
        raise ValueError(f"{what}: {n} vectors exceed MAX_LINES={MAX_LINES}; use sets='corners,random'")



def _wide_values(codes, fmt) -> np.ndarray:
    """Exact values of a fixed-point format that float64 cannot hold: integers, or Fractions."""
    raw = _values(codes, FixedFormat(fmt.bits, 0, signed=fmt.signed))
    if fmt.frac == 0:
        return raw
    return np.array([Fraction(int(r)) / Fraction(2) ** fmt.frac for r in raw.tolist()] or [], dtype=object)


