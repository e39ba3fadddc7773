"""Fast path: float32 inputs, every rounding mode, float formats with emin >= -126, man_bits <= 23.

The same rounding as :func:`emul._kernels.round.float_code` (the oracle; ``tests/test_fast_path.py``
checks every bit against it), specialised to float32 bit patterns and written with 32-bit integer
operations and selects only, so that LLVM vectorises the loops in 32-bit lanes (see
:mod:`emul._kernels.intrinsics` for why plain Numba arithmetic would not).

The full formula, per element, with ``a = |bits|``:

- **target normal** (``a >= THR``, the float32 pattern of the format's min normal): the quantum is
  ``2**S`` in units of ``a``'s last bit, ``S = 23 - man_bits``. Rounding adds ``inc`` to ``a`` and
  truncates: ``q = (a + inc) >> S``. A carry into the exponent field is automatically right, so
  ``q - C0`` is the code magnitude (``C0 = (127 - bias) << man_bits``) and ``q << S`` the float32
  pattern of the rounded magnitude.
- **target subnormal** (``a < THR``): the same rounding of the 24-bit significand ``mant`` at a
  per-element shift ``s = min(K2 - eff, 25)`` (``eff`` the float32 exponent field, at least 1;
  ``K2 = qe + 150`` for the quantum exponent ``qe``: ``emin - man_bits``, or ``emin`` without
  subnormals, where the grid is {0, min_normal}). ``q`` counts quanta: the code is ``q`` (or
  ``q << man_bits`` without subnormals) and the value ``q * 2**qe``. Shifting by 25 instead of
  more changes nothing: the kept part is 0 and the discarded fraction stays below 1/2.
- ``inc`` encodes the mode (:data:`emul.rounding.MODE_BITS`): with ``mask = 2**s - 1`` and
  ``r = k0 ^ (ks & sign) ^ (kl & lsb)`` (``lsb`` the last bit of the kept code, as in
  :func:`emul._kernels.round.float_code`), nearest modes add ``(mask + r) >> 1`` (``2**(s-1) - 1 + r``, or 0 when ``s == 0``),
  directed ones ``r ? mask : 0``.
- stochastic rounding (docs/rounding.md) compares instead of adding: with the discarded fraction
  ``f`` of ``x`` at the true shift ``sf`` (unclamped; large below tiny formats' quantum),
  ``t = floor(f * 2**r)`` is ``(x >> (sf - r)) & (2**r - 1)`` when ``sf >= r``, else
  ``(x & mask) << (r - sf)``; ``q = (x >> s) + (v < t)`` with ``v = 2**r - 1 - u`` for
  ``"add"`` (t + u >= 2**r) and ``v = u`` for ``"compare"`` (u < t). Sign and lsb play no part.
- overflow is ``q > QMAX`` (``QMAX = C0 + max_code_magnitude``; target-subnormal ``q`` never
  exceeds it); overflowed, infinite and NaN inputs take per-sign constants derived from the
  parameter vector of :mod:`emul._params`, as do zero signs of formats without -0.

The short formula is the target-normal case alone, for ``THR <= a <= `` the float32 pattern of the
format's max (no overflow is possible there in any mode). The kernels round blocks of ``BLOCK``
elements with it and redo a block with the full formula when one of its elements is outside that
range ("rare"); after such a block the next one is checked before it is rounded, so data full of
rare elements costs about as much as the full formula alone. Under SR the short formula adds the
word itself: ``t + u >= 2**r`` iff ``(a & mask) + inc >= 2**S`` with ``inc = u << (S - r)`` for
``r <= S`` and ``u >> (r - S)`` otherwise (the low bits dropped from ``u`` cannot complete a carry
that ``a``'s integer fraction needs); ``"compare"`` uses ``2**r - 1 - u``, as above.

SR words: ``random_bits`` arrive as a flat uint32 array; ``seed``/``key`` words are drawn block by
block into a ``BLOCK``-word buffer by :func:`emul._kernels.draw.draw` (element i uses
``bits(key, (n,))[i] >> (32 - r)``, as :func:`emul._kernels.round.round_seeded`), so the rounding
and its full-formula redo read the same words.

Kernels take the ``uint32`` constant vector built by :func:`constants` and write codes (``uint8``,
``uint16``, ``uint32`` arrays) or float32 values (as their ``uint32`` patterns). Each element's
result depends only on that element.
"""

import numpy as np
from numba import njit

from . import slots as K
from .draw import draw
from .intrinsics import add, and_, eq, f32_bits_of, or_, select, shl, shr, smin, sub, ult, xor

# Slots of the constant vector built by constants().
(S, MASK, KEEP, THR, K2, C0, QMAX, SHC, SB, ZF, NEAR, K0, KS, KL, K0_N, QE23,
 OVF_POS, OVF_NEG, INF_POS, INF_NEG, NAN_POS, NAN_NEG,
 VOVF_POS, VOVF_NEG, VINF_POS, VINF_NEG, VNAN_POS, VNAN_NEG,
 FAST_LO, FAST_SPAN, CHECK_NAN,
 SR_R, SR_MASK, SR_UX, SR_SHIFT, SR_CMPX, SR_WM, SR_L, SR_RS, NTHR, QSUB) = range(41)
NCONST = 41

BLOCK = 64  # elements per block: the short formula runs on whole blocks without rare elements

_EXP = np.uint32(0x7F800000)
_ABS = np.uint32(0x7FFFFFFF)
_FRAC = np.uint32(0x7FFFFF)
_HIDDEN = np.uint32(0x800000)
_SIGN32 = np.uint32(0x80000000)
_0 = np.uint32(0)
_1 = np.uint32(1)
_23 = np.uint32(23)
_25 = np.uint32(25)
_31 = np.uint32(31)


def constants(P: tuple, fmt) -> np.ndarray:
    """The uint32 constant vector of the kernels for P (:func:`emul._params.kernel_params` of a
    float format in the fast path's domain, any mode; SR with P's sr_bits and sr_method)."""
    m, emin, bias, maxc = int(P[K.M]), int(P[K.EMIN]), int(fmt.bias), int(P[K.MAXC])
    qe = emin - m if P[K.SUB] else emin  # quantum exponent below min_normal
    c0 = (127 - bias) << m
    C = np.zeros(NCONST, np.int64)
    C[S] = 23 - m
    C[MASK] = (1 << C[S]) - 1
    C[KEEP] = 0xFFFFFFFF ^ C[MASK]
    C[THR] = min(emin + 127, 255) << 23
    C[K2] = (qe + 150) & 0xFFFFFFFF
    C[C0] = c0 & 0xFFFFFFFF  # only used when some float32 is normal in the format: then c0 < 2**31
    C[QMAX] = min(c0 + maxc, 0xFFFFFFFF)
    C[SHC] = 0 if P[K.SUB] else m
    C[SB] = 1 << (fmt.bits - 1)
    C[ZF] = 0 if P[K.NEGZERO] else 1
    C[NEAR], C[K0], C[KS], C[KL] = P[K.NEAREST], P[K.K0], P[K.KS], P[K.KL]
    # The mode's lsb is the last bit of the kept code. For target normals the code is
    # (a >> S) - C0, whose last bit is bit S of a flipped when C0 is odd (man_bits == 0, even
    # bias): fold that flip into k0.
    C[K0_N] = C[K0] ^ (C[KL] & c0 & 1)
    # values below min_normal, q * 2**qe, as bits (see _scaled): qe's exponent offset, the pattern
    # of float(q) from which the value is a float32 normal, and the shift onto the 2**-149 grid
    C[QE23] = (qe << 23) & 0xFFFFFFFF
    C[NTHR] = (1 - qe) << 23 if 1 - qe >= 1 else 1
    C[QSUB] = min(max(qe + 149, 0), 31)
    has_nan = P[K.NANC] >= 0
    nan = int(P[K.NANC]) if has_nan else 0
    mask = (1 << fmt.bits) - 1
    codes = [int(P[K.OVF_POS]) & mask, int(P[K.OVF_NEG]) & mask, int(P[K.INF_POS]) & mask,
             int(P[K.INF_NEG]) & mask, nan, nan if P[K.FNUZ] or not has_nan else nan | C[SB]]
    C[OVF_POS:NAN_NEG + 1] = codes
    # Their values exactly as the general kernel stores them (float64, then float32).
    values = np.array([fmt._value(c) for c in codes], np.float64)
    with np.errstate(over="ignore"):  # formats beyond float32's range: quantize never comes here
        C[VOVF_POS:VNAN_NEG + 1] = values.astype(np.float32).view(np.uint32)
    if not has_nan:  # NaN inputs raise; their outputs are never seen
        C[VNAN_POS] = C[VNAN_NEG] = 0
    C[CHECK_NAN] = 0 if has_nan else 1
    if P[K.SR]:
        r, compare = int(P[K.SR_BITS]), bool(P[K.SR_CMP])
        mask_r = (1 << r) - 1
        C[SR_R], C[SR_MASK], C[SR_SHIFT] = r, mask_r, 32 - r
        C[SR_UX] = 0 if compare else mask_r         # full formula: up iff (u ^ UX) < t
        C[SR_CMPX] = mask_r if compare else 0       # short formula: add (u ^ CMPX), scaled to 2**S
        C[SR_WM] = mask_r if C[S] else 0            # S == 0: nothing is discarded, nothing added
        C[SR_L], C[SR_RS] = max(C[S] - r, 0), min(max(r - C[S], 0), 31)
    # THR <= a <= (float32 pattern of the format's max) cannot overflow or fall below min_normal
    # in any mode: the short formula covers them.
    max_bits = int(np.float32(min(fmt.max, float(np.finfo(np.float32).max))).view(np.uint32))
    if C[THR] <= max_bits:
        C[FAST_LO], C[FAST_SPAN] = C[THR], max_bits - C[THR]
    else:
        C[FAST_LO], C[FAST_SPAN] = 1 << 31, 0  # no float32 is fast
    return C.astype(np.uint32)


@njit(inline="always")
def _unpack(C):
    """The constant vector as a tuple (loop-invariant scalars for LLVM)."""
    return (C[0], C[1], C[2], C[3], C[4], C[5], C[6], C[7], C[8], C[9], C[10], C[11], C[12], C[13],
            C[14], C[15], C[16], C[17], C[18], C[19], C[20], C[21], C[22], C[23], C[24], C[25],
            C[26], C[27], C[28], C[29], C[30], C[31], C[32], C[33], C[34], C[35], C[36], C[37], C[38],
            C[39], C[40])


@njit(inline="always")
def _increment(x, s, mask, sign, k0, k, nearest):
    """What to add to x before dropping its s low bits (mask = 2**s - 1) to round by the mode
    (bits k0, k[KS], k[KL]; bit s of x, flipped by k0 where needed, is the kept code's last bit)."""
    r = xor(xor(k0, and_(k[KS], sign)), and_(k[KL], and_(shr(x, s), _1)))
    if nearest:
        return shr(add(mask, r), _1)  # 2**(s-1) - 1 + r, or 0 when s == 0
    return and_(mask, sub(_0, r))     # r ? mask : 0


# -- the full formula: every finite, infinite or NaN input ----------------------------------------

@njit(inline="always")
def _sr_up(x, s, sf, u, k):
    """1 if SR with word u rounds x up at the true shift sf (s = min(sf, 25)), else 0."""
    r = k[SR_R]
    d1 = sub(sf, r)  # sf >= r: t = (x >> (sf - r)) & (2**r - 1), and 0 once sf - r >= 31 (x < 2**31)
    d2 = sub(r, sf)  # sf < r: t = (x & (2**s - 1)) << (r - sf); r - sf = 32 only when sf = 0 (t = 0)
    t = select(ult(sf, r), shl(and_(x, sub(shl(_1, s), _1)), select(ult(d2, _31), d2, _31)),
               and_(shr(x, select(ult(d1, _31), d1, _31)), k[SR_MASK]))
    return select(ult(xor(u, k[SR_UX]), t), _1, _0)


@njit(inline="always")
def _round(b, k, nearest, sr, u):
    """(neg, below, q, s, over) for the float32 pattern b (u: the SR word when sr); see the module
    docstring."""
    a = and_(b, _ABS)
    e = shr(a, _23)
    below = ult(a, k[THR])
    sub_f32 = eq(e, _0)
    mant = select(sub_f32, a, or_(and_(a, _FRAC), _HIDDEN))
    x = select(below, mant, a)
    if sr:
        sf = select(below, sub(k[K2], select(sub_f32, _1, e)), k[S])  # >= 1 below, S above
        s = select(ult(sf, _25), sf, _25)
        q = add(shr(x, s), _sr_up(x, s, sf, u, k))
    else:
        s = select(below, smin(sub(k[K2], select(sub_f32, _1, e)), _25), k[S])
        k0 = select(below, k[K0], k[K0_N])
        q = shr(add(x, _increment(x, s, sub(shl(_1, s), _1), shr(b, _31), k0, k, nearest)), s)
    return ult(_ABS, b), below, q, s, ult(k[QMAX], q)


@njit(inline="always")
def code_of(b, k, nearest, sr, u):
    """The code of the float32 pattern b (u: its SR word when sr)."""
    neg, below, q, s, over = _round(b, k, nearest, sr, u)
    code = select(below, shl(q, k[SHC]), sub(q, k[C0]))
    sign = select(neg & (not (eq(code, _0) & (k[ZF] != _0))), k[SB], _0)
    res = select(over, select(neg, k[OVF_NEG], k[OVF_POS]), or_(code, sign))
    a = and_(b, _ABS)
    inf = select(neg, k[INF_NEG], k[INF_POS])
    nan = select(neg, k[NAN_NEG], k[NAN_POS])
    return select(ult(a, _EXP), res, select(eq(a, _EXP), inf, nan))


@njit(inline="always")
def _scaled(q, k):
    """The float32 pattern of q * 2**qe (q <= 2**24 quanta below min_normal), from bits: a float
    multiply would be flushed to 0 where the result is a float32 subnormal and the thread has
    flush-to-zero set (MXCSR.FTZ, as on XLA's threads). float(q) is exact and 0 or >= 1; when
    q * 2**qe is normal its pattern is float(q)'s plus qe in the exponent field, else (subnormal or
    zero) it is q on the grid of 2**-149."""
    fq = f32_bits_of(q)
    return select(ult(fq, k[NTHR]), shl(q, k[QSUB]), add(fq, k[QE23]))


@njit(inline="always")
def value_of(b, k, nearest, sr, u):
    """The float32 pattern of the float32 pattern b rounded (a value of the format)."""
    neg, below, q, s, over = _round(b, k, nearest, sr, u)
    mag = select(below, _scaled(q, k), shl(q, s))
    sign = select(neg & (not (eq(mag, _0) & (k[ZF] != _0))), _SIGN32, _0)
    res = select(over, select(neg, k[VOVF_NEG], k[VOVF_POS]), or_(mag, sign))
    a = and_(b, _ABS)
    inf = select(neg, k[VINF_NEG], k[VINF_POS])
    nan = select(neg, k[VNAN_NEG], k[VNAN_POS])
    return select(ult(a, _EXP), res, select(eq(a, _EXP), inf, nan))


# -- the short formula: target-normal results that cannot overflow --------------------------------

@njit(inline="always")
def _rare(a, k):
    """Whether |bits| = a needs the full formula (below min_normal, near max, inf or NaN)."""
    return ult(k[FAST_SPAN], sub(a, k[FAST_LO]))


@njit(inline="always")
def _short_block(x, k, out, lo, nearest, values, sr, w, wo):
    """Write x[lo:lo + BLOCK] by the short formula; return whether an element needs the full one
    (its output is then wrong and must be rewritten). SR: element lo + j uses word w[wo + j]."""
    rare = _0
    for j in range(BLOCK):
        b = x[lo + j]
        a = and_(b, _ABS)
        sign = shr(b, _31)
        if sr:
            t = add(a, shr(shl(and_(xor(w[wo + j], k[SR_CMPX]), k[SR_WM]), k[SR_L]), k[SR_RS]))
        else:
            t = add(a, _increment(a, k[S], k[MASK], sign, k[K0_N], k, nearest))
        if values:
            out[lo + j] = or_(and_(t, k[KEEP]), shl(sign, _31))
        else:
            out[lo + j] = or_(sub(shr(t, k[S]), k[C0]), select(ult(_ABS, b), k[SB], _0))
        rare = or_(rare, select(_rare(a, k), _1, _0))
    return rare != _0


@njit(inline="always")
def _any_rare(x, k, lo):
    rare = _0
    for j in range(BLOCK):
        rare = or_(rare, select(_rare(and_(x[lo + j], _ABS), k), _1, _0))
    return rare != _0


@njit(inline="always")
def _full(x, k, out, lo, hi, nearest, values, sr, w, wo):
    """Write x[lo:hi] by the full formula; return the number of NaNs if the format has none.
    SR: element i uses word w[wo + i - lo]."""
    for i in range(lo, hi):
        u = w[wo + i - lo] if sr else _0
        out[i] = value_of(x[i], k, nearest, sr, u) if values else code_of(x[i], k, nearest, sr, u)
    bad = 0
    if k[CHECK_NAN]:
        for i in range(lo, hi):
            bad += ult(_EXP, and_(x[i], _ABS))
    return bad


@njit(inline="always")
def _run(x, k, out, nearest, values):
    """All of x, block by block. After a block with a rare element the next one is first only
    checked (data with many rare elements then costs little more than the full formula alone)."""
    nb = x.size // BLOCK
    bad = 0
    prev = False
    for blk in range(nb):
        lo = blk * BLOCK
        if prev:
            rare = _any_rare(x, k, lo)
            if not rare:
                _short_block(x, k, out, lo, nearest, values, False, x, 0)
        else:
            rare = _short_block(x, k, out, lo, nearest, values, False, x, 0)
        if rare:
            bad += _full(x, k, out, lo, lo + BLOCK, nearest, values, False, x, 0)
        prev = rare
    return bad + _full(x, k, out, nb * BLOCK, x.size, nearest, values, False, x, 0)


@njit(inline="always")
def _run_sr(x, k, out, u, key0, key1, seeded, values, base):
    """_run for stochastic rounding: words u[i] (random_bits), or threefry words of (key0, key1)
    drawn per block into a buffer (seeded); x[i] is element base + i of the whole input (base a
    multiple of BLOCK)."""
    buf = np.empty(BLOCK, np.uint32)
    nb = x.size // BLOCK
    bad = 0
    prev = False
    for blk in range(nb):
        lo = blk * BLOCK
        if seeded:
            draw(buf, key0, key1, base + lo, BLOCK, k[SR_SHIFT])
            w, wo = buf, 0
        else:
            w, wo = u, lo
        if prev:
            rare = _any_rare(x, k, lo)
            if not rare:
                _short_block(x, k, out, lo, False, values, True, w, wo)
        else:
            rare = _short_block(x, k, out, lo, False, values, True, w, wo)
        if rare:
            bad += _full(x, k, out, lo, lo + BLOCK, False, values, True, w, wo)
        prev = rare
    lo = nb * BLOCK
    if seeded:
        draw(buf, key0, key1, base + lo, x.size - lo, k[SR_SHIFT])
        w, wo = buf, 0
    else:
        w, wo = u, lo
    return bad + _full(x, k, out, lo, x.size, False, values, True, w, wo)


# -- kernels: x is the flat uint32 view of the float32 input, out the flat output of the same size --
# Each element depends only on itself (and its word), and the kernels release the GIL: emul.quantize
# runs large inputs as slices on its thread pool (emul._threads.run_slices), so results never
# depend on the thread count or the split. They return the number of NaN inputs when the format has
# no NaN (the caller raises).

@njit(cache=True, nogil=True)
def encode_f32(x, C, out):
    """out[i] = the code of the float32 pattern x[i] (out: uint8, uint16 or uint32)."""
    k = _unpack(C)
    if k[NEAR]:
        return _run(x, k, out, True, False)
    return _run(x, k, out, False, False)


@njit(cache=True, nogil=True)
def quantize_f32(x, C, out):
    """out[i] = the float32 pattern of x[i] rounded (out: the uint32 view of a float32 array)."""
    k = _unpack(C)
    if k[NEAR]:
        return _run(x, k, out, True, True)
    return _run(x, k, out, False, True)


@njit(cache=True, nogil=True)
def encode_sr_f32(x, C, u, key0, key1, seeded, out, base):
    """encode_f32 for stochastic rounding (C built with SR); x[i] is element base + i of the whole
    input (base a multiple of BLOCK). Element i uses the word u[i] (``random_bits``, values below
    2**sr_bits), or when ``seeded`` the threefry word ``bits((key0, key1), .)[base + i] >>
    (32 - sr_bits)`` (u is then not read)."""
    k = _unpack(C)
    if seeded:
        return _run_sr(x, k, out, u, key0, key1, True, False, base)
    return _run_sr(x, k, out, u, key0, key1, False, False, base)


@njit(cache=True, nogil=True)
def quantize_sr_f32(x, C, u, key0, key1, seeded, out, base):
    """quantize_f32 for stochastic rounding; words as in encode_sr_f32."""
    k = _unpack(C)
    if seeded:
        return _run_sr(x, k, out, u, key0, key1, True, True, base)
    return _run_sr(x, k, out, u, key0, key1, False, True, base)


@njit(cache=True)
def widen_f16(h, out):
    """out[i] = the float32 pattern of the float16 pattern h[i] (uint16), exactly, from bits only
    (a float16 subnormal is a float32 normal: ``float(f)`` built by :func:`f32_bits_of`, then
    rescaled by 2**-24 in the exponent field; NaN payloads and signs are kept)."""
    for i in range(h.size):
        b = np.uint32(h[i])
        sign = shl(and_(b, np.uint32(0x8000)), np.uint32(16))
        e = and_(shr(b, np.uint32(10)), np.uint32(0x1F))
        f = and_(b, np.uint32(0x3FF))
        normal = add(shl(and_(b, np.uint32(0x7FFF)), np.uint32(13)), np.uint32(112 << 23))
        special = or_(shl(f, np.uint32(13)), _EXP)
        sub16 = select(eq(f, _0), _0, sub(f32_bits_of(f), np.uint32(24 << 23)))
        out[i] = or_(sign, select(eq(e, _0), sub16, select(eq(e, np.uint32(0x1F)), special, normal)))
