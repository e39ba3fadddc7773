"""Fast path: float32 inputs to fixed-point formats of at most 31 bits with ``frac <= 126``, every
deterministic rounding mode and every overflow rule.

The same rounding as :func:`emul._kernels.round.fixed_code` (the oracle; ``tests/test_fast_path.py``
checks every bit against it), written with 32-bit integer operations and selects only (see
:mod:`emul._kernels.intrinsics`), so the loop vectorises in 32-bit lanes. Per element, with
``a = |bits|``, ``eff = max(exponent field, 1)`` and ``mant`` the 24-bit significand (hidden bit
included for normals), the value in units of the format's lsb is ``mant * 2**(eff - FS)`` with
``FS = 150 - frac``:

- ``eff < FS`` (something may be discarded): the shift ``s = min(FS - eff, 25)``; ``q = (mant +
  inc) >> s`` with the mode's increment (``inc = (mask + r) >> 1`` for nearest modes, ``r ? mask :
  0`` for directed ones, ``mask = 2**s - 1``, ``r = k0 ^ (ks & sign) ^ (kl & lsb)``, ``lsb`` bit
  ``s`` of ``mant``: the magnitude's last bit, which is also the two's complement code's). A shift
  capped at 25 changes nothing: the kept part is 0 and the discarded fraction below 1/2. With
  ``frac <= 126`` every float32 subnormal lands here.
- ``eff >= FS`` (exact): ``q = mant << (eff - FS)``; a normal ``mant >= 2**23`` shifted by 9 or
  more exceeds every 31-bit format, so ``q`` is only formed for shifts up to 8 and the magnitude
  is "big" beyond.
- in range (``q`` at most ``MAXRAW``, or ``-MINRAW`` for negative inputs): the code is ``±q`` mod
  ``2**bits`` (``saturate_symmetric`` maps ``-2**(bits-1)`` to ``-MAXRAW``);
- out of range: the saturate rules give per-sign constants; ``wrap`` keeps the low ``bits`` bits
  of ``±Q`` (``Q`` the exact rounded magnitude; its low 32 bits are ``mant << (eff - FS)`` mod
  ``2**32``), ``wrap_sign_magnitude`` then inverts them when their top bit differs from bit
  ``bits`` of ``±Q``;
- ±inf: the rule's per-sign constants (``wrap`` rejects them: counted, the caller raises); NaN is
  rejected (counted) as fixed point has no NaN.

Kernels return ``(#NaN, #inf rejected)``; each element depends only on itself, so chunking and
thread count never change a result.
"""

import numpy as np
from numba import njit, prange

from . import slots as K
from .intrinsics import add, and_, eq, or_, select, shl, shr, sub, ult, xor

(FS, MAXRAW, NEGMAG, BMASK, NEAR, K0, KS, KL, SYM, SYMC, SAT_POS, SAT_NEG, WRAP, WRAP_SM, TOPB,
 INF_POS, INF_NEG) = range(17)
NCONST = 17

CHUNK = 1 << 16  # elements per parallel task

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
    """Whether this path covers the fixed format (from float32, deterministic modes)."""
    return fmt.bits <= 31 and fmt.frac <= 126


def constants(P: tuple, fmt) -> np.ndarray:
    """The uint32 constant vector for P (:func:`emul._params.kernel_params` of a fixed format in
    this path's domain, a deterministic mode)."""
    from .round import saturated

    bits = fmt.bits
    mask = (1 << bits) - 1
    rule = int(P[K.RULE])
    C = [0] * NCONST
    C[FS] = 150 - fmt.frac  # >= 24 (frac <= 126); may exceed 2**31 for very negative frac: capped
    C[FS] = min(C[FS], 1 << 20)
    C[MAXRAW], C[NEGMAG], C[BMASK] = int(P[K.MAXRAW]), int(P[K.NEGMAG]), mask
    C[NEAR], C[K0], C[KS], C[KL] = int(P[K.NEAREST]), int(P[K.K0]), int(P[K.KS]), int(P[K.KL])
    C[SYM] = int(rule == K.RULE_SAT_SYM and fmt.signed)
    C[SYMC] = (-fmt.max_raw) & mask
    C[SAT_POS], C[SAT_NEG] = int(saturated(0, P)), int(saturated(1, P))
    C[WRAP] = int(rule in (K.RULE_WRAP, K.RULE_WRAP_SM))
    C[WRAP_SM] = int(rule == K.RULE_WRAP_SM)
    C[TOPB] = bits - 1
    C[INF_POS], C[INF_NEG] = int(P[K.INF_POS]) & mask, int(P[K.INF_NEG]) & mask
    return np.array(C, np.uint32)


@njit(inline="always")
def _unpack(C):
    return (C[0], C[1], C[2], C[3], C[4], C[5], C[6], C[7], C[8], C[9], C[10], C[11], C[12], C[13],
            C[14], C[15], C[16])


@njit(inline="always")
def code_of(b, k):
    """The fixed-point code of the float32 pattern b (any value; NaN gives 0)."""
    a = and_(b, _ABS)
    neg = ult(_ABS, b)
    sign = shr(b, _31)
    e = shr(a, _23)
    eff = select(eq(e, _0), _1, e)
    mant = select(eq(e, _0), a, or_(and_(a, _FRAC), _HIDDEN))
    lossy = ult(eff, k[FS])
    sd = sub(k[FS], eff)             # lossy: the shift
    s = select(ult(sd, _25), sd, _25)
    s = select(lossy, s, _0)
    mask = sub(shl(_1, s), _1)
    r = xor(xor(k[K0], and_(k[KS], sign)), and_(k[KL], and_(shr(mant, s), _1)))
    inc = select(k[NEAR] != _0, shr(add(mask, r), _1), and_(mask, sub(_0, r)))  # nearest : directed
    up = sub(eff, k[FS])             # not lossy: the left shift
    q = select(lossy, shr(add(mant, inc), s), shl(mant, select(ult(up, _8), up, _8)))
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
def _span(x, k, out, lo, hi):
    """out[lo:hi] = codes of x[lo:hi]; return (#NaN, #inf)."""
    for j in range(hi - lo):
        i = np.uintp(lo + j)  # an unsigned index: no negative-index wraparound, so no gathers
        out[i] = code_of(x[i], k)
    nan = 0
    inf = 0
    for j in range(hi - lo):
        a = and_(x[np.uintp(lo + j)], _ABS)
        nan += ult(_EXP, a)
        inf += eq(a, _EXP)
    return nan, (inf if k[WRAP] != _0 else 0)


@njit(cache=True)
def encode_fixed_f32(x, C, out):
    """out[i] = the fixed-point code of the float32 pattern x[i] (out: uint8, uint16 or uint32);
    returns (#NaN, #inf rejected)."""
    return _span(x, _unpack(C), out, 0, x.size)


@njit(cache=True, parallel=True)
def encode_fixed_f32_par(x, C, out):
    """encode_fixed_f32 over CHUNK-element tasks on Numba's threads."""
    k = _unpack(C)
    n = x.size
    counts = np.zeros(((n + CHUNK - 1) // CHUNK, 2), np.int64)  # per task: no parfor reduction
    for c in prange(counts.shape[0]):
        lo = c * CHUNK
        hi = min(lo + CHUNK, n)
        a, b = _span(x[lo:hi], k, out[lo:hi], 0, hi - lo)
        counts[c, 0] = a
        counts[c, 1] = b
    return counts[:, 0].sum(), counts[:, 1].sum()
