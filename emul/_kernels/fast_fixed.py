"""Fast paths to fixed-point formats: float32 inputs (formats of at most 31 bits, ``frac <= 126``),
float64 inputs (at most 63 bits, ``frac <= 1022``) and int32/uint32/int64/uint64 inputs read as
integers (at most 63 bits, ``|frac| <= 63``; see the block comment before :func:`code_of_int`),
every rounding mode (stochastic included) and every overflow rule; :func:`fixed_values` turns codes
into values for ``quantize``.

The same rounding as :func:`emul._kernels.round.fixed_code` (the oracle; ``tests/test_fast_path.py``
and ``tests/test_fast_fixed.py`` check every bit against it), written with integer operations and
selects only, so the loops vectorise: float32 inputs in 32-bit lanes (see
:mod:`emul._kernels.intrinsics`), float64 inputs in 64-bit lanes. Per element, with ``a = |bits|``,
``eff = max(exponent field, 1)`` and ``mant`` the significand (hidden bit included for normals;
``W`` = 24 or 53 bits), the value in units of the format's lsb is ``mant * 2**(eff - FS)`` with
``FS = 150 - frac`` (float32) or ``1075 - frac`` (float64):

- ``eff < FS`` (something may be discarded): the true shift ``sf = FS - eff``, applied as
  ``s = min(sf, W + 1)`` (a shift capped there changes nothing: the kept part is 0 and the
  discarded fraction below 1/2).

  - deterministic modes: ``q = (mant + inc) >> s`` with the mode's increment (``inc = (mask + r)
    >> 1`` for nearest modes, ``r ? mask : 0`` for directed ones, ``mask = 2**s - 1``, ``r = k0 ^
    (ks & sign) ^ (kl & lsb)``, ``lsb`` bit ``s`` of ``mant``: the magnitude's last bit, which is
    also the two's complement code's).
  - stochastic rounding with the word ``u`` (``r`` bits) acts on the signed value: with
    ``t = floor(f * 2**r)`` for the fraction ``f`` of the magnitude below the lsb (``(mant >> (sf
    - r)) & (2**r - 1)`` when ``sf >= r``, else ``(mant & mask) << (r - sf)``) and ``st`` whether
    ``f * 2**r`` is not an integer (bits of ``mant`` below ``sf - r``), a positive value's
    magnitude rounds up iff ``t + u >= 2**r`` ("add") or ``u < t`` ("compare"); a negative value's
    fraction measured from below is ``1 - f``, with ``floor((1 - f) * 2**r) = 2**r - t - st``, so
    its magnitude rounds up (the value down) iff ``u < t + st`` ("add") or ``u + t + st >= 2**r``
    ("compare"). All four are ``v < t or (v == t and st and negative)`` with ``v = u`` or
    ``2**r - 1 - u`` (a constant per sign); ``f = 0`` never rounds up (``t = st = 0``).
    ``q = (mant >> s) + up``.
- ``eff >= FS`` (exact): ``q = mant << (eff - FS)``; a normal ``mant`` shifted by more than ``B``
  (8 for float32, 10 for float64) exceeds every format of the path, so ``q`` is only formed up to
  that shift and the magnitude is "big" beyond.
- in range (``q`` at most ``MAXRAW``, or ``NEGMAG`` for negative inputs): the code is ``±q`` mod
  ``2**bits`` (``saturate_symmetric`` maps ``-2**(bits-1)`` to ``-MAXRAW``);
- out of range: the saturate rules give per-sign constants; ``wrap`` keeps the low ``bits`` bits
  of ``±Q`` (``Q`` the exact rounded magnitude; its low 32 / 64 bits are ``q``, or ``mant << (eff
  - FS)`` mod ``2**32`` / ``2**64``), ``wrap_sign_magnitude`` then inverts them when their top bit
  differs from bit ``bits`` of ``±Q``;
- ±inf: the rule's per-sign constants (``wrap`` rejects them: counted, the caller raises); NaN is
  rejected (counted) as fixed point has no NaN.

SR words: ``random_bits`` arrive as a flat uint32 array; for ``seed``/``key`` element ``i`` uses
``bits(key, (n,))[i] >> (32 - r)`` (Threefry-2x32 of the counter ``(i >> 32, i mod 2**32)``, drawn
per span in 32-bit lanes by :func:`emul._kernels.draw.draw`), as
:func:`emul._kernels.round.round_seeded` does. Inputs are processed in ``CHUNK``-element spans (a
span never crosses a multiple of 2**32, so the counter's high word is one per span).

Kernels return ``(#NaN, #inf rejected)``; each element depends only on itself and its word, so
chunking and thread count never change a result. The float64 loops round finite inputs only
(:func:`_finite64`) and count inf/NaN patterns on the way; only when there are some does a second
pass write their codes and count them.
"""

import numpy as np
from numba import njit
from numba.extending import overload

from . import slots as K
from .fast_arith import sel
from .draw import draw
from .intrinsics import add, and_, eq, or_, select, shl, shr, sub, ult, xor

(FS, MAXRAW, NEGMAG, BMASK, NEAR, K0, KS, KL, SYM, SYMC, SAT_POS, SAT_NEG, WRAP, WRAP_SM, TOPB,
 INF_POS, INF_NEG, SR_R, SR_MASK, SR_XP, SR_XN, SR_SHIFT) = range(22)
NCONST = 22

CHUNK = 1 << 16  # elements per span of the SR kernels; divides 2**32

_EXP = np.uint32(0x7F800000)
_ABS = np.uint32(0x7FFFFFFF)
_FRAC = np.uint32(0x7FFFFF)
_HIDDEN = np.uint32(0x800000)
_0 = np.uint32(0)
_1 = np.uint32(1)
_8 = np.uint32(8)
_23 = np.uint32(23)
_25 = np.uint32(25)
_31 = np.uint32(31)
_32 = np.uint32(32)


def in_domain(fmt) -> bool:
    """Whether the float32 path covers the fixed format."""
    return fmt.bits <= 31 and fmt.frac <= 126


def in_domain64(fmt) -> bool:
    """Whether the float64 path covers the fixed format."""
    return fmt.bits <= 63 and fmt.frac <= 1022


def constants(P: tuple, fmt, wide=False) -> np.ndarray:
    """The constant vector for P (:func:`emul._params.kernel_params` of a fixed format in the
    path's domain, any mode): uint32 for the float32 path, uint64 for the float64 one (``wide``)."""
    from .round import saturated

    bits = fmt.bits
    mask = (1 << bits) - 1
    rule = int(P[K.RULE])
    C = [0] * NCONST
    # FS >= 24 (float32, frac <= 126) or >= 53 (float64, frac <= 1022); capped for very negative
    # frac (every input is then lossy and shifted out, as with the exact FS)
    C[FS] = min((1075 if wide else 150) - fmt.frac, 1 << 20)
    C[MAXRAW], C[NEGMAG], C[BMASK] = int(P[K.MAXRAW]), int(P[K.NEGMAG]), mask
    C[NEAR], C[K0], C[KS], C[KL] = int(P[K.NEAREST]), int(P[K.K0]), int(P[K.KS]), int(P[K.KL])
    C[SYM] = int(rule == K.RULE_SAT_SYM and fmt.signed)
    C[SYMC] = (-fmt.max_raw) & mask
    C[SAT_POS], C[SAT_NEG] = int(saturated(0, P)), int(saturated(1, P))
    C[WRAP] = int(rule in (K.RULE_WRAP, K.RULE_WRAP_SM))
    C[WRAP_SM] = int(rule == K.RULE_WRAP_SM)
    C[TOPB] = bits - 1
    C[INF_POS], C[INF_NEG] = int(P[K.INF_POS]) & mask, int(P[K.INF_NEG]) & mask
    if P[K.SR]:
        r, compare = int(P[K.SR_BITS]), bool(P[K.SR_CMP])
        mask_r = (1 << r) - 1
        C[SR_R], C[SR_MASK], C[SR_SHIFT] = r, mask_r, 32 - r
        # v = u ^ X: positive "add" and negative "compare" use 2**r - 1 - u, the others u
        C[SR_XP], C[SR_XN] = (0, mask_r) if compare else (mask_r, 0)
    return np.array(C, np.uint64 if wide else np.uint32)


@njit(inline="always")
def _unpack(C):
    return (C[0], C[1], C[2], C[3], C[4], C[5], C[6], C[7], C[8], C[9], C[10], C[11], C[12], C[13],
            C[14], C[15], C[16], C[17], C[18], C[19], C[20], C[21])


# -- float32 inputs: 32-bit lanes ---------------------------------------------------------------------

@njit(inline="always")
def _finish(b, a, neg, mant, eff, lossy, q, k):
    """The code from the rounded magnitude q (lossy) or the exact one (see the module docstring)."""
    up = sub(eff, k[FS])             # not lossy: the left shift
    q = select(lossy, q, shl(mant, select(ult(up, _8), up, _8)))
    big = (not lossy) & ult(_8, up)
    limit = select(neg, k[NEGMAG], k[MAXRAW])
    over = big | ult(limit, q)
    code = and_(select(neg, sub(_0, q), q), k[BMASK])
    code = select(neg & (k[SYM] != _0) & eq(q, k[NEGMAG]), k[SYMC], code)
    # wrap: the low 32 bits of the exact rounded magnitude, signed
    qw = select(lossy, q, select(ult(up, _32), shl(mant, select(ult(up, _31), up, _31)), _0))
    sw = select(neg, sub(_0, qw), qw)
    raw = and_(sw, k[BMASK])
    flip = xor(and_(shr(raw, k[TOPB]), _1), and_(shr(sw, add(k[TOPB], _1)), _1))
    raw = select((k[WRAP_SM] != _0) & (flip != _0), and_(xor(raw, k[BMASK]), k[BMASK]), raw)
    ovf = select(k[WRAP] != _0, raw, select(neg, k[SAT_NEG], k[SAT_POS]))
    res = select(over, ovf, code)
    return select(ult(a, _EXP), res, select(eq(a, _EXP), select(neg, k[INF_NEG], k[INF_POS]), _0))


@njit(inline="always")
def code_of(b, k, sr, u):
    """The fixed-point code of the float32 pattern b (any value; NaN gives 0); u: its SR word."""
    a = and_(b, _ABS)
    neg = ult(_ABS, b)
    e = shr(a, _23)
    eff = select(eq(e, _0), _1, e)
    mant = select(eq(e, _0), a, or_(and_(a, _FRAC), _HIDDEN))
    lossy = ult(eff, k[FS])
    sd = sub(k[FS], eff)             # lossy: the true shift (>= 1)
    s = select(ult(sd, _25), sd, _25)
    s = select(lossy, s, _0)
    if sr:
        d1 = sub(sd, k[SR_R])        # sf >= r: t = (mant >> (sf - r)) & (2**r - 1); 0 past 23
        d1 = select(ult(d1, _31), d1, _31)
        d2 = sub(k[SR_R], sd)        # sf < r: t = (mant & mask) << (r - sf), r - sf <= 31
        d2 = select(ult(d2, _31), d2, _31)
        ge = not ult(sd, k[SR_R])
        t = select(ge, and_(shr(mant, d1), k[SR_MASK]), shl(and_(mant, sub(shl(_1, s), _1)), d2))
        st = ge & (not eq(and_(mant, sub(shl(_1, d1), _1)), _0))
        v = xor(u, select(neg, k[SR_XN], k[SR_XP]))
        inc = select(ult(v, t) | (neg & st & eq(v, t)), _1, _0)
        q = add(shr(mant, s), inc)
    else:
        sign = shr(b, _31)
        mask = sub(shl(_1, s), _1)
        r = xor(xor(k[K0], and_(k[KS], sign)), and_(k[KL], and_(shr(mant, s), _1)))
        inc = select(k[NEAR] != _0, shr(add(mask, r), _1), and_(mask, sub(_0, r)))  # nearest : directed
        q = shr(add(mant, inc), s)
    return _finish(b, a, neg, mant, eff, lossy, q, k)


@njit(inline="always")
def _counts(x, k):
    """(#NaN, #inf rejected) of the float32 patterns x."""
    nan = 0
    inf = 0
    for j in range(x.size):
        a = and_(x[np.uintp(j)], _ABS)
        nan += ult(_EXP, a)
        inf += eq(a, _EXP)
    return nan, (inf if k[WRAP] != _0 else 0)


@njit(inline="always")
def _span(x, k, out):
    """out[:] = codes of x[:] (deterministic modes)."""
    for j in range(x.size):
        i = np.uintp(j)  # an unsigned index: no negative-index wraparound, so no gathers
        out[i] = code_of(x[i], k, False, _0)


@njit(inline="always")
def _span_sr(x, k, out, u, key0, key1, seeded, base):
    """out[:] = codes of x[:] under SR: words u[j], or the threefry words of elements base + j
    (seeded: drawn into a buffer first; base + x.size never crosses a multiple of 2**32)."""
    if seeded:
        w = np.empty(x.size, np.uint32)
        draw(w, key0, key1, base, x.size, k[SR_SHIFT])
    else:
        w = u
    for j in range(x.size):
        i = np.uintp(j)
        out[i] = code_of(x[i], k, True, w[i])


@njit(cache=True, nogil=True)
def encode_fixed_f32(x, C, out):
    """out[i] = the fixed-point code of the float32 pattern x[i] (out: uint8, uint16 or uint32;
    deterministic modes); returns (#NaN, #inf rejected)."""
    k = _unpack(C)
    _span(x, k, out)
    return _counts(x, k)


@njit(cache=True, nogil=True)
def encode_fixed_sr_f32(x, C, u, key0, key1, seeded, out, base):
    """encode_fixed_f32 for stochastic rounding (C built with SR); x[i] is element base + i of the
    whole input (base a multiple of CHUNK). Element i uses the word u[i] (``random_bits``), or when
    ``seeded`` ``bits((key0, key1), .)[base + i] >> (32 - sr_bits)``."""
    k = _unpack(C)
    n = x.size
    for lo in range(0, n, CHUNK):
        hi = min(lo + CHUNK, n)
        if seeded:
            _span_sr(x[lo:hi], k, out[lo:hi], u, key0, key1, True, base + lo)
        else:
            _span_sr(x[lo:hi], k, out[lo:hi], u[lo:hi], key0, key1, False, base + lo)
    return _counts(x, k)


# -- float64 inputs: 64-bit lanes ---------------------------------------------------------------------

_EXP64 = np.uint64(0x7FF0000000000000)
_ABS64 = np.uint64(0x7FFFFFFFFFFFFFFF)
_FRAC64 = np.uint64((1 << 52) - 1)
_HID64 = np.uint64(1 << 52)
_Z = np.uint64(0)
_O = np.uint64(1)
_10 = np.uint64(10)
_52 = np.uint64(52)
_54 = np.uint64(54)
_63 = np.uint64(63)
_64 = np.uint64(64)


@njit(inline="always")
def _sel(c, a, b):
    """``a if c else b`` for uint64 a, b and a boolean c: one LLVM select, no branch."""
    return sel(c, a, b)


@njit(inline="always")
def _cap(v, n):
    """min(v, n) for uint64."""
    return _sel(v < n, v, n)


@njit(inline="always")
def _finite64(b, k, sr, u, fam=0):
    """The fixed-point code of the finite float64 pattern b (inf and NaN give some value: see
    code_of64); u: its SR word. ``fam`` (a compile-time constant) leaves out the other rules'
    steps: 1 when the rule is wrap, 2 when it is a saturate rule, 0 for any rule."""
    a = b & _ABS64
    neg = a != b
    e = a >> _52
    eff = _sel(e == _Z, _O, e)
    mant = _sel(e == _Z, a, (a & _FRAC64) | _HID64)
    lossy = eff < k[FS]
    sd = k[FS] - eff                 # lossy: the true shift (>= 1)
    s = _cap(sd, _54)                # (not lossy: q is replaced below, s unused)
    if sr:
        r = k[SR_R]
        ge = sd >= r
        d1 = _cap(sd - r, _63)       # sf >= r: t = (mant >> (sf - r)) & (2**r - 1)
        d2 = _cap(r - sd, _63)       # sf < r: t = (mant & mask) << (r - sf), r - sf <= 31
        t = _sel(ge, (mant >> d1) & k[SR_MASK], (mant & ((_O << s) - _O)) << d2)
        st = ge & ((mant & ((_O << d1) - _O)) != _Z)
        v = np.uint64(u) ^ _sel(neg, k[SR_XN], k[SR_XP])
        q = (mant >> s) + np.uint64((v < t) | (neg & st & (v == t)))
    else:
        mask = (_O << s) - _O
        r = _sel(neg, k[K0] ^ k[KS], k[K0]) ^ (k[KL] & ((mant >> s) & _O))
        inc = _sel(k[NEAR] != _Z, (mask + r) >> _O, mask & (_Z - r))  # nearest : directed
        q = (mant + inc) >> s
    # not lossy: the exact magnitude's low 64 bits (what wrap keeps; in range only when up <= 10)
    up = eff - k[FS]
    q = _sel(lossy, q, _sel(up < _64, mant << _cap(up, _63), _Z))
    sw = _sel(neg, _Z - q, q)        # ±Q mod 2**64
    code = sw & k[BMASK]             # in range, and wrap
    # wrap_sign_magnitude: flipped when bit bits - 1 of the code differs from bit bits of ±Q (never
    # in range)
    if fam == 1:                     # wrap: in range or not, ±Q mod 2**bits
        return code
    flip = ((code >> k[TOPB]) ^ (sw >> (k[TOPB] + _O))) & _O
    raw = _sel((k[WRAP_SM] != _Z) & (flip != _Z), code ^ k[BMASK], code)
    big = (not lossy) & (up > _10)
    over = big | (q > _sel(neg, k[NEGMAG], k[MAXRAW]))
    code = _sel(neg & (k[SYM] != _Z) & (q == k[NEGMAG]), k[SYMC], code)
    sat = _sel(neg, k[SAT_NEG], k[SAT_POS])
    if fam == 2:                     # the saturate rules
        return _sel(over, sat, code)
    return _sel(over, _sel(k[WRAP] != _Z, raw, sat), code)


@njit(inline="always")
def _special64(b, k):
    """The code of the inf or NaN pattern b (NaN gives 0)."""
    a = b & _ABS64
    return _sel(a == _EXP64, _sel(a != b, k[INF_NEG], k[INF_POS]), _Z)


@njit(inline="always")
def code_of64(b, k, sr, u):
    """The fixed-point code of the float64 pattern b (any value; NaN gives 0); u: its SR word."""
    return _sel((b & _ABS64) < _EXP64, _finite64(b, k, sr, u), _special64(b, k))


@njit(inline="always")
def _counts64(x, k):
    nan = 0
    inf = 0
    for j in range(x.size):
        a = x[np.uintp(j)] & _ABS64
        nan += a > _EXP64
        inf += a == _EXP64
    return nan, (inf if k[WRAP] != _Z else 0)


@njit(inline="always")
def _counts64_if(x, k, out, spec):
    """After a loop of _finite64: when it met an inf or NaN (spec), their codes written and
    _counts64; else (0, 0) without a second pass over x."""
    if spec == 0:
        return 0, 0
    for j in range(x.size):
        b = x[j]
        if (b & _ABS64) >= _EXP64:
            out[j] = _special64(b, k)
    return _counts64(x, k)


@njit(inline="always")
def _sr64(x, k, out, u, key0, key1, seeded, base):
    """out[:] = codes of the finite x[:] under SR; returns #inf/NaN met."""
    n = x.size
    if seeded:
        buf = np.empty(n, np.uint32)
        draw(buf, key0, key1, base, n, k[SR_SHIFT])
    else:
        buf = u
    spec = 0
    for j in range(n):
        i = np.uintp(j)
        b = x[i]
        out[i] = _finite64(b, k, True, buf[i])
        spec += (b & _ABS64) >= _EXP64
    return spec


@njit(inline="always")
def _det64_loop(x, k, out, fam):
    spec = 0
    for j in range(x.size):
        i = np.uintp(j)
        b = x[i]
        out[i] = _finite64(b, k, False, _0, fam)
        spec += (b & _ABS64) >= _EXP64
    return spec


@njit(inline="always")
def _det64(x, k, out):
    """out[:] = codes of the finite x[:] in a deterministic mode: a loop for wrap without the other
    rules' steps (f64 -> fx<8,4> down wrap ~960 -> ~1400 M elem/s on one thread), the loop for any
    rule for the others (a saturate-only loop measured no faster); returns #inf/NaN met."""
    if k[WRAP] != _Z and k[WRAP_SM] == _Z:
        return _det64_loop(x, k, out, 1)
    return _det64_loop(x, k, out, 0)


@njit(cache=True, nogil=True)
def encode_fixed_f64(x, C, out):
    """out[i] = the fixed-point code of the float64 pattern x[i] (uint64 view; out uint8 …
    uint64; deterministic modes); returns (#NaN, #inf rejected)."""
    k = _unpack(C)
    return _counts64_if(x, k, out, _det64(x, k, out))


@njit(cache=True, nogil=True)
def encode_fixed_sr_f64(x, C, u, key0, key1, seeded, out, base):
    """encode_fixed_f64 for stochastic rounding; words as in encode_fixed_sr_f32."""
    k = _unpack(C)
    n = x.size
    nan = 0
    inf = 0
    for lo in range(0, n, CHUNK):
        hi = min(lo + CHUNK, n)
        w = u[lo:hi] if not seeded else u[0:0]
        xs, os_ = x[lo:hi], out[lo:hi]
        a, b = _counts64_if(xs, k, os_, _sr64(xs, k, os_, w, key0, key1, seeded, base + lo))
        nan += a
        inf += b
    return nan, inf


# -- integer inputs: 64-bit lanes ---------------------------------------------------------------------
# An integer x (int32, uint32, int64 or uint64 array, read as it is: no float conversion) has the
# value |x| * 2**frac in units of the format's lsb. With frac >= 0 it is exact: q = |x| and the
# magnitude Q = q << L (L = frac); with frac < 0 it is rounded at the shift s = -frac (at most 63)
# as code_of64 rounds a significand: q = (|x| >> s) + carry, the carry computed on the discarded
# bits only (``((|x| & mask) + inc) >> s``: no overflow even for |x| near 2**64), SR by the same
# t / st rule; L = 0. Q is in range iff q <= LIMP = MAXRAW >> L (LIMN = NEGMAG >> L for negative
# inputs): floor division, as Q's low L bits are zero. The code is ``±Q`` mod ``2**bits`` (``±Q`` mod
# 2**64 is ``±(q << L)`` in uint64 arithmetic), which is also what ``wrap`` keeps;
# ``wrap_sign_magnitude`` flips it by bit ``bits`` of ``±Q`` (bits <= 63: within the low 64 bits).

LSH, RSH, RMASK, LIMP, LIMN = range(NCONST, NCONST + 5)
NCONST_INT = NCONST + 5


def in_domain_int(fmt) -> bool:
    """Whether the integer-input path covers the fixed format."""
    return fmt.bits <= 63 and -63 <= fmt.frac <= 63


def constants_int(P: tuple, fmt) -> np.ndarray:
    """The uint64 constant vector of the integer-input kernels: :func:`constants` (wide) plus the
    shifts and per-sign limits of q."""
    C = [int(c) for c in constants(P, fmt, wide=True)] + [0] * 5
    L, s = max(fmt.frac, 0), max(-fmt.frac, 0)
    C[LSH], C[RSH], C[RMASK] = L, s, (1 << s) - 1
    C[LIMP], C[LIMN] = C[MAXRAW] >> L, C[NEGMAG] >> L
    return np.array(C, np.uint64)


@njit(inline="always")
def _unpack_int(C):
    return (C[0], C[1], C[2], C[3], C[4], C[5], C[6], C[7], C[8], C[9], C[10], C[11], C[12], C[13],
            C[14], C[15], C[16], C[17], C[18], C[19], C[20], C[21], C[22], C[23], C[24], C[25], C[26])


def _neg_mag(v):
    """(v < 0, |v| as uint64) of an integer v of any width (no branch)."""


@overload(_neg_mag, inline="always")
def _neg_mag_impl(v):
    if v.signed:
        def impl(v):
            w = np.int64(v)
            m = np.uint64(w)
            return w < 0, _sel(w < 0, _Z - m, m)
    else:
        def impl(v):
            return False, np.uint64(v)
    return impl


@njit(inline="always")
def code_of_int(v, k, sr, u):
    """The fixed-point code of the integer v (see the block comment above); u: its SR word."""
    neg, mag = _neg_mag(v)
    s = k[RSH]
    mask = k[RMASK]
    low = mag & mask
    if sr:
        r = k[SR_R]
        ge = s >= r
        d1 = _cap(s - r, _63)        # s >= r: t = (mag >> (s - r)) & (2**r - 1)
        d2 = _cap(r - s, _63)        # s < r: t = low << (r - s)
        t = _sel(ge, (mag >> d1) & k[SR_MASK], low << d2)
        st = ge & ((mag & ((_O << d1) - _O)) != _Z)
        v = np.uint64(u) ^ _sel(neg, k[SR_XN], k[SR_XP])
        q = (mag >> s) + np.uint64((v < t) | (neg & st & (v == t)))
    else:
        r = k[K0] ^ (k[KS] & np.uint64(neg)) ^ (k[KL] & ((mag >> s) & _O))
        inc = _sel(k[NEAR] != _Z, (mask + r) >> _O, mask & (_Z - r))  # nearest : directed
        q = (mag >> s) + ((low + inc) >> s)
    sw = q << k[LSH]
    sw = _sel(neg, _Z - sw, sw)
    code = sw & k[BMASK]
    over = q > _sel(neg, k[LIMN], k[LIMP])
    sym = neg & (k[SYM] != _Z) & (q == k[LIMN]) & ((k[LIMN] << k[LSH]) == k[NEGMAG])
    flip = ((code >> k[TOPB]) & _O) ^ ((sw >> (k[TOPB] + _O)) & _O)
    raw = _sel((k[WRAP_SM] != _Z) & (flip != _Z), code ^ k[BMASK], code)
    ovf = _sel(k[WRAP] != _Z, raw, _sel(neg, k[SAT_NEG], k[SAT_POS]))
    return _sel(over, ovf, _sel(sym, k[SYMC], code))


@njit(inline="always")
def _chunk_int(x, k, out, u, key0, key1, seeded, base):
    """Codes of the span x (element base + j of the whole input; at most CHUNK elements); SR when
    the constants say so and something is discarded (frac < 0: else every input is exact and its
    word unread)."""
    n = x.size
    if k[SR_R] != _Z and k[RSH] != _Z:
        if seeded:
            buf = np.empty(n, np.uint32)
            draw(buf, key0, key1, base, n, k[SR_SHIFT])
        else:
            buf = u
        for j in range(n):
            i = np.uintp(j)
            out[i] = code_of_int(x[i], k, True, buf[i])
    else:
        for j in range(n):
            i = np.uintp(j)
            out[i] = code_of_int(x[i], k, False, _0)


@njit(cache=True, nogil=True)
def encode_fixed_int(x, C, out):
    """out[i] = the fixed-point code of the integer x[i] (int32, uint32, int64, uint64; out uint8
    … uint64; deterministic modes); returns (0, 0): integers are never NaN or infinite."""
    k = _unpack_int(C)
    for j in range(x.size):
        i = np.uintp(j)
        out[i] = code_of_int(x[i], k, False, _0)
    return 0, 0


@njit(cache=True, nogil=True)
def encode_fixed_sr_int(x, C, u, key0, key1, seeded, out, base):
    """encode_fixed_int for stochastic rounding (C built with SR); words as in encode_fixed_sr_f32."""
    k = _unpack_int(C)
    n = x.size
    for lo in range(0, n, CHUNK):
        hi = min(lo + CHUNK, n)
        w = u[lo:hi] if not seeded else u[0:0]
        _chunk_int(x[lo:hi], k, out[lo:hi], w, key0, key1, seeded, base + lo)
    return 0, 0


# -- values of codes (quantize to fixed point) -----------------------------------------------------

@njit(cache=True)
def fixed_values(codes, sb, scale, out):
    """out[i] = the value of the fixed-point code codes[i]: ``c * scale`` with ``c`` the code read
    as a signed ``bits``-bit integer (``sb = 2**(bits - 1)`` for signed formats, 0 for unsigned
    ones; ``bits <= 53``) and ``scale = 2**-frac`` (float64). Exact: ``c`` is exact in float64, and
    the caller keeps every nonzero result normal (``frac <= 1022``; ``frac <= 126`` when out is
    float32), so neither a product nor the narrowing to float32 meets a subnormal (flush-to-zero
    and denormals-are-zero cannot change a result); code 0 gives +0."""
    for j in range(codes.size):
        i = np.uintp(j)
        c = np.int64(codes[i])
        c = c - ((c & sb) << 1)
        out[i] = np.float64(c) * scale
