"""Validate (format, rounding, overflow, SR settings) once and pack them for the kernels."""

from __future__ import annotations

import functools

import numpy as np

from ._kernels import slots as K
from .formats import ExpFormat, FixedFormat, FloatFormat, format as as_format
from .rounding import FIXED_ONLY, MODE_BITS, Overflow, Rounding, as_overflow, as_rounding, overflow_to_max

_RULE_ID = {Overflow.IEEE: 0, Overflow.SATURATE: K.RULE_SATURATE, Overflow.SATURATE_ZERO: K.RULE_SAT_ZERO,
            Overflow.SATURATE_SYMMETRIC: K.RULE_SAT_SYM, Overflow.WRAP: K.RULE_WRAP,
            Overflow.WRAP_SIGN_MAGNITUDE: K.RULE_WRAP_SM}


def _i64(code: int) -> int:
    """A code of up to 64 bits as the int64 with the same bit pattern."""
    return code - (1 << 64) if code >= 1 << 63 else code


def resolve(fmt, rounding, overflow, sr_bits, sr_method, exp_ok=False):
    """Normalise the user's arguments: (format, Rounding, Overflow, sr_bits, compare?).

    ``exp_ok``: whether an :class:`ExpFormat` (e8m0) is accepted (quantize/encode/decode only).

    Every call validates the same way: the cache is keyed by value *and type* (``typed=True``), so
    ``sr_bits=4.0`` or ``True`` never reuses the entry of ``sr_bits=4``.
    """
    try:
        return _resolve_cached(fmt, rounding, overflow, sr_bits, sr_method, exp_ok)
    except TypeError as exc:
        if "unhashable" not in str(exc):
            raise
        return _resolve(fmt, rounding, overflow, sr_bits, sr_method, exp_ok)  # validates, and reports it


@functools.lru_cache(maxsize=1024, typed=True)
def _resolve_cached(fmt, rounding, overflow, sr_bits, sr_method, exp_ok):
    return _resolve(fmt, rounding, overflow, sr_bits, sr_method, exp_ok)


def _resolve(fmt, rounding, overflow, sr_bits, sr_method, exp_ok=False):
    fmt = as_format(fmt)
    if isinstance(fmt, ExpFormat) and not exp_ok:
        raise ValueError(f"{fmt.name}: an unsigned exponent-only (block scale) format; only quantize, encode, "
                         "decode and emul.blocks take it")
    rounding = as_rounding(rounding)
    if overflow is None:
        overflow = Overflow.SATURATE if isinstance(fmt, FixedFormat) else Overflow.IEEE
    overflow = as_overflow(overflow)
    if not isinstance(fmt, FixedFormat) and overflow in FIXED_ONLY:
        raise ValueError(f"overflow={overflow.value!r}: only for fixed-point formats, not {fmt.name}; "
                         "floats take 'ieee' or 'saturate'")
    if isinstance(fmt, FixedFormat) and overflow == Overflow.IEEE:
        raise ValueError(f"overflow='ieee': fixed-point format {fmt.name} has no infinity; use 'saturate', "
                         "'saturate_zero', 'saturate_symmetric', 'wrap' or 'wrap_sign_magnitude'")
    if overflow == Overflow.WRAP_SIGN_MAGNITUDE and not fmt.signed:
        raise ValueError(f"overflow='wrap_sign_magnitude': needs a signed format, not {fmt.name}")
    if not isinstance(sr_method, str) or sr_method not in ("add", "compare"):
        raise ValueError(f"sr_method={sr_method!r}: must be 'add' or 'compare'")
    if sr_bits is not None and (isinstance(sr_bits, (bool, np.bool_)) or not isinstance(sr_bits, (int, np.integer))):
        raise TypeError(f"sr_bits={sr_bits!r}: must be an int")
    if rounding == Rounding.STOCHASTIC:
        sr_bits = 32 if sr_bits is None else sr_bits
        if not 1 <= sr_bits <= 32:
            raise ValueError(f"sr_bits={sr_bits}: must be between 1 and 32")
    elif sr_bits is not None:
        raise ValueError(f"sr_bits={sr_bits}: only meaningful with rounding='stochastic' (got {rounding.value!r})")
    return fmt, rounding, overflow, int(sr_bits or 0), sr_method == "compare"


@functools.lru_cache(maxsize=512)
def kernel_params(fmt, rounding: Rounding, overflow: Overflow, sr_bits: int, compare: bool) -> tuple:
    """The parameter tuple (int64 values, slots in emul/_kernels/slots.py) for resolved arguments.

    A tuple, not an array: immutable (safe to cache) and, inside the kernels, loop-invariant
    scalars that cannot alias the output (2-3x faster loops than an array).
    """
    P = np.zeros(K.NPARAMS, np.int64)
    P[K.RULE] = _RULE_ID[overflow]
    P[K.BITS] = fmt.bits
    if rounding == Rounding.STOCHASTIC:
        P[K.SR], P[K.SR_BITS], P[K.SR_CMP] = 1, sr_bits, int(compare)
    else:
        P[K.NEAREST], P[K.K0], P[K.KS], P[K.KL] = MODE_BITS[rounding]
    if isinstance(fmt, FixedFormat):
        P[K.KIND] = 1
        P[K.FRAC], P[K.SIGNED] = fmt.frac, int(fmt.signed)
        P[K.MAXRAW] = _i64(fmt.max_raw)
        P[K.NEGMAG] = _i64(-fmt.min_raw)
        P[K.NANC] = -1
        mask = (1 << fmt.bits) - 1
        if overflow == Overflow.SATURATE_ZERO:
            inf_pos = inf_neg = 0
        elif overflow == Overflow.SATURATE_SYMMETRIC:
            inf_pos, inf_neg = fmt.max_raw, (-fmt.max_raw if fmt.signed else 0) & mask
        else:
            inf_pos, inf_neg = fmt.max_raw, fmt.min_raw & mask
        P[K.INF_POS], P[K.INF_NEG] = _i64(inf_pos), _i64(inf_neg)
        return _frozen(P)
    if isinstance(fmt, ExpFormat):  # unsigned, exponent only: code c means 2**(c - bias)
        P[K.KIND] = 2
        P[K.EMIN], P[K.EMAX], P[K.BIAS] = fmt.emin, fmt.emax, fmt.bias
        P[K.MAXC], P[K.NANC] = fmt.max_code_magnitude, fmt.nan_code
        to_max = overflow == Overflow.SATURATE or overflow_to_max(rounding, 0)
        P[K.OVF_POS] = P[K.OVF_NEG] = fmt.max_code_magnitude if to_max else fmt.nan_code
        P[K.INF_POS] = fmt.max_code_magnitude if overflow == Overflow.SATURATE else fmt.nan_code
        P[K.INF_NEG] = fmt.nan_code  # x <= 0 has no code
        return _frozen(P)
    signbit = 1 << (fmt.bits - 1)
    maxc = fmt.max_code_magnitude
    P[K.M], P[K.EMIN], P[K.EMAX], P[K.MAXC] = fmt.man_bits, fmt.emin, fmt.emax, maxc
    P[K.SUB], P[K.NEGZERO], P[K.BIAS] = int(fmt.subnormals), int(fmt.has_negative_zero), fmt.bias
    P[K.FNUZ], P[K.IEEE] = int(fmt.specials == "fnuz"), int(fmt.specials == "ieee")
    inf_code = ((1 << fmt.exp_bits) - 1) << fmt.man_bits
    P[K.INFC] = inf_code
    if fmt.specials == "ieee":
        nan = inf_code | (1 << (fmt.man_bits - 1))
    elif fmt.specials == "fn":
        nan = (1 << (fmt.bits - 1)) - 1
    elif fmt.specials == "fnuz":
        nan = signbit
    else:
        nan = -1
    P[K.NANC] = nan
    # What an infinite result becomes: inf, else the NaN, else (no specials) the largest value.
    infinite = inf_code if fmt.has_inf else (nan if fmt.has_nan else maxc)
    for slot, sign in ((K.OVF_POS, 0), (K.OVF_NEG, 1)):
        if overflow == Overflow.SATURATE or overflow_to_max(rounding, sign):
            mag = maxc
        else:
            mag = infinite
        P[slot] = _i64(mag if (fmt.specials == "fnuz" and mag == nan) else mag | (sign * signbit))
    for slot, sign in ((K.INF_POS, 0), (K.INF_NEG, 1)):
        mag = maxc if overflow == Overflow.SATURATE else infinite
        P[slot] = _i64(mag if (fmt.specials == "fnuz" and mag == nan) else mag | (sign * signbit))
    return _frozen(P)


def _frozen(P: np.ndarray) -> tuple:
    return tuple(np.int64(v) for v in P)
