"""Numba kernels for emul.sparsity.

Kernels take plain arrays and integers; validation, dtype handling and layout live in
emul/sparsity.py.  The kernels are serial and release the GIL (a Numba ``parallel=True`` kernel
compiles 2-3x slower); each one computes the blocks/tiles lo..hi-1 of its arrays, and
emul.sparsity runs slices of them on a thread pool (emul._threads).  Every block/tile is computed
from its own data (and its own random words, indexed by the global block number) only, so
results never depend on the thread count or on the split.

Floating kernels are written once and specialised by Numba for float32 and float64; float16 and
bfloat16 data are held in float32 and run the float32 kernel with every operation rounded to the
data's dtype (the run-time `rmode` argument, see _rd: one compiled kernel for all three).
Constants that must be in the block's own dtype (the small integers t = 1..n) come in as the
array `tv` (tv[k] == k in the data dtype): Numba would otherwise promote `int * float32` to
float64.

Transposable optimal masks are exact for any float weights: integer costs per tile, refined in
stages on exact remainders when one 50-bit integer cannot hold a tile's values (see
_refine_stage for the invariant and its proof).

The floating-point environment plays no part (docs/rounding.md): with flush-to-zero /
denormals-are-zero set (MXCSR bits 15 and 6, as on XLA's CPU threads) a floating-point instruction
reads a subnormal operand as 0 and writes a subnormal result as 0.  So magnitudes are compared as
integer bit patterns (nm_mask, greedy order), the transposable costs and remainders are integers
taken from the bits, and the MVUE kernels classify every block from its bits first: a block whose
every intermediate value is provably a normal number (or an exact 0) runs the float arithmetic as
before (the fast path, bit for bit IEEE in any environment); any other block (subnormal inputs,
an extreme dynamic range, values near the overflow threshold) runs the same operations on an
integer emulation of the working dtype's IEEE arithmetic (section "MVUE arithmetic emulated from
bits"), which gives the bits IEEE arithmetic in the default environment gives.
"""

import math

import numpy as np
from numba import njit, types
from numba.cpython.unsafe.numbers import leading_zeros
from numba.extending import overload

from .round import shl, shr, split

_U32 = 4294967296.0  # 2**32


# --------------------------------------------------------------------------------------------
# top-n magnitude masks


@njit(cache=True, nogil=True)
def nm_mask_blocks(v, n, high_index, absmask, inf_key, nan_key, out, lo, hi):
    """v: (B, m) unsigned integers -- float bit patterns (emul.sparsity passes uint32/uint64) or
    integer magnitudes (uint64); out: (B, m) bool; blocks lo..hi-1 (one thread: emul.sparsity runs
    slices of the blocks on several).

    The key of an element is ``v & absmask`` (|x| as a bit pattern: monotone in |x| for non-NaN
    floats, -0 and +0 equal), and ``nan_key`` (> inf_key) when that exceeds ``inf_key`` (every NaN:
    larger than every number, NaNs equal among themselves); integers pass absmask = inf_key = all
    ones.  absmask, inf_key and nan_key are unsigned like v (no signed/unsigned mixing).
    Element i of a block is kept iff fewer than n elements of the block beat it, where j beats i
    iff key_j > key_i, or key_j == key_i and j < i (j > i when high_index).  Integer compares only:
    the thread's MXCSR (denormals-are-zero) cannot merge subnormals with 0.
    """
    m = v.shape[1]
    for b in range(lo, hi):
        for i in range(m):
            ki = v[b, i] & absmask
            ki = nan_key if ki > inf_key else ki
            beaten = 0
            for j in range(m):
                kj = v[b, j] & absmask
                kj = nan_key if kj > inf_key else kj
                later = (j > i) if high_index else (j < i)
                beaten += (kj > ki) | ((kj == ki) & later)
            out[b, i] = beaten < n


# --------------------------------------------------------------------------------------------
# MVUE arithmetic in the input's dtype
#
# float32/float64 blocks are computed in their own dtype.  float16 and bfloat16 blocks are held
# in float32 (exactly) and every arithmetic result is rounded to the input dtype by _rd: the
# float32 result of +, *, / on two values of a p-bit format (p = 11 or 8) is rounded once more
# to p bits, which gives the correctly rounded p-bit result because 24 >= 2p + 2.  This is what
# numpy float16 and ml_dtypes bfloat16 arithmetic compute, operation by operation.  The kernels
# take an integer `rmode`: 0 (no rounding: float32/float64 data), RD_F16 (float16) or RD_BF16
# (bfloat16), so that one compiled kernel serves float32, float16 and bfloat16 data.  Each kernel
# runs its loop (a separate function) with rmode = None when it is 0 -- a specialisation with no
# rounding at all, the plain float32 code -- and else with the integer, where every operation
# picks its rounding at run time (a branch that is always predicted); float64 kernels have only
# the first (_rounding).

RD_F16 = 1
RD_BF16 = 2


def _rd(y, rmode):
    """y rounded to the working dtype selected by rmode (see above): y itself when rmode is
    None."""
    raise NotImplementedError  # replaced by the overload below inside jitted code


@njit(cache=True)
def _rd_f16(y):
    """float32 y rounded to the nearest float16 (ties to even; overflow to +-inf), as float32."""
    u = np.int64(np.float32(y).view(np.uint32))
    a = u & 0x7FFFFFFF
    if a >= 0x7F800000:  # inf, NaN
        return y
    if a >= 0x38800000:  # >= 2^-14: a float16 normal; keep 10 of the 23 fraction bits
        r = (a + 0xFFF + ((a >> 13) & 1)) & 0x7FFFE000
        if r >= 0x47800000:  # 2^16 or more: overflow
            r = 0x7F800000
    else:  # float16 subnormals: multiples of 2^-24 (float32 has ulp 2^-24 on [0.5, 1))
        r = np.int64(np.float32((abs(y) + np.float32(0.5)) - np.float32(0.5)).view(np.uint32))
    return np.uint32(r | (u & 0x80000000)).view(np.float32)


@njit(cache=True)
def _rd_bf16(y):
    """float32 y rounded to the nearest bfloat16 (ties to even; overflow to +-inf), as float32."""
    u = np.int64(np.float32(y).view(np.uint32))
    if (u & 0x7FFFFFFF) > 0x7F800000:  # NaN
        return y
    return np.uint32((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000).view(np.float32)


@overload(_rd)
def _rd_overload(y, rmode):
    if rmode == types.none:
        return lambda y, rmode: y
    if y != types.float32:
        raise TypeError(f"_rd: rounds float32 values, got {y}")
    return lambda y, rmode: _rd_f16(y) if rmode == RD_F16 else _rd_bf16(y)


def _rounding(x, rmode):
    """rmode (an integer, not 0) for float32 data x; None for float64 data (never rounded)."""
    raise NotImplementedError  # replaced by the overload below inside jitted code


@overload(_rounding)
def _rounding_overload(x, rmode):
    if x.dtype == types.float64:
        return lambda x, rmode: None
    return lambda x, rmode: rmode


# --------------------------------------------------------------------------------------------
# MVUE arithmetic emulated from bits (blocks the fast path cannot take)
#
# With flush-to-zero / denormals-are-zero set, a float instruction reads a subnormal operand as 0
# and writes a subnormal result as 0, and so does a comparison.  Every block is first classified
# from its bits (_classify): NaN/inf, at most n non-zeros (no arithmetic), the fast path, or the
# emulated path.  The fast path is taken only when every value the block's arithmetic forms is a
# normal number or an exact 0 (see _classify and emul.sparsity._mvue_limits for the bounds), where
# IEEE arithmetic and its flush-to-zero variant agree; float16 blocks (held in float32) always
# qualify.  The emulated path runs the same operations, in the same order, with integer
# arithmetic on float64 bit patterns (uint64 "carriers" of working-dtype values; a float64
# subnormal pattern for a float64 subnormal): the exact result of a (+) b, a (x) b or a (/) b is
# formed as a uint64 significand with a sticky bit and rounded to nearest-even in the working
# dtype's precision and exponent range (gradual underflow, overflow to +-inf): the IEEE result.
# Special operands are decided as IEEE 754 says: a NaN operand gives that NaN (quieted), an
# invalid operation (0 x inf, 0 / 0, inf / inf) gives the platform's default NaN (measured once
# by emul.sparsity and passed in W: x86's is negative), as the hardware operations of the fast
# path do.  bfloat16 (and float16) results are rounded to float32 and then to the dtype, exactly
# as the fast path's float32 operation followed by _rd.  Comparisons use an order-preserving
# integer key (NaN compares false).  No float instruction is involved, not even a bitcast of a
# float loaded from memory: data come in through integer views of the arrays, results go out
# through them (an optimizer may turn a bit test on a bitcast float back into a float compare).
#
# W, the working format: (p1, emin1, emax1, p2, emin2, emax2, default NaN pattern as int64):
# round to p1 bits with exponents emin1..emax1, then (p2 > 0) once more to p2 bits in emin2..emax2.

_SIGN64 = np.uint64(1 << 63)
_ABS64 = np.uint64((1 << 63) - 1)
_MANT64 = np.uint64((1 << 52) - 1)
_INF64 = np.uint64(0x7FF0000000000000)
_QUIET64 = np.uint64(1 << 51)
_HALF64 = np.uint64(1 << 63)
_ONE64 = np.uint64(1)
_ZERO64 = np.uint64(0)


@njit(inline="always")
def _u(v):
    return np.uint64(v)


@njit
def _pat(sign, mag, e):
    """The float64 bit pattern of (-1)**sign * mag * 2**e (uint64 mag), a float64 value (a
    precondition: nothing is rounded)."""
    sb = _u(sign) << _u(63)
    if mag == 0:
        return sb
    top = 63 - np.int64(leading_zeros(mag))
    x = e + top
    if x >= -1022:
        f = mag << _u(52 - top) if top <= 52 else mag >> _u(top - 52)
        return sb | (_u(x + 1023) << _u(52)) | (f & _MANT64)
    s = e + 1074  # a subnormal: mag on the grid of 2**-1074
    return sb | (mag << _u(s) if s >= 0 else mag >> _u(-s))


@njit
def _unpack(c):
    """(sign, mag, e, kind) of the float64 bit pattern c: |c| = mag * 2**e; kind 0 = zero,
    1 = finite non-zero, 2 = inf, 3 = NaN."""
    sign = np.int64(c >> _u(63))
    ef = np.int64((c >> _u(52)) & _u(0x7FF))
    f = c & _MANT64
    if ef == 0x7FF:
        return sign, f, np.int64(0), 2 if f == 0 else 3
    if ef == 0:
        return sign, f, np.int64(-1074), 0 if f == 0 else 1
    return sign, f | _u(1 << 52), ef - 1075, 1


@njit(inline="always")
def _signed_zero(sign):
    return _u(sign) << _u(63)


@njit(inline="always")
def _signed_inf(sign):
    return (_u(sign) << _u(63)) | _INF64


@njit
def _round_fmt(sign, mag, e, p, emin, emax):
    """(-1)**sign * mag * 2**e (mag > 0) rounded to nearest-even with p bits and exponents
    emin..emax (subnormals below 2**emin, +-inf above the largest finite value), as a float64
    pattern.  Bit 0 of mag may be a sticky bit standing for a non-zero tail below it; callers that
    set it pass mag >= 2**(p + 1), so that it lies at least two places below the rounding
    position."""
    top = 63 - np.int64(leading_zeros(mag))
    x = e + top
    qe = (x if x > emin else emin) - (p - 1)  # exponent of the result's last place
    s = qe - e
    if s <= 0:  # exact
        q = mag << _u(-s)
    else:
        q, F, st = split(mag, s, False)
        if F > _HALF64 or (F == _HALF64 and (st or (q & _ONE64) != 0)):
            q += _ONE64
    if q == 0:
        return _signed_zero(sign)
    if qe + 63 - np.int64(leading_zeros(q)) > emax:
        return _signed_inf(sign)
    return _pat(sign, q, qe)


@njit
def _round_w(sign, mag, e, W):
    c = _round_fmt(sign, mag, e, W[0], W[1], W[2])
    if W[3] == 0:
        return c
    s2, m2, e2, k2 = _unpack(c)
    if k2 != 1:
        return c
    return _round_fmt(s2, m2, e2, W[3], W[4], W[5])


@njit
def _mul128(a, b):
    """(hi, lo) words of the 128-bit product of uint64 a, b < 2**53."""
    mask = _u(0xFFFFFFFF)
    a0 = a & mask
    a1 = a >> _u(32)
    b0 = b & mask
    b1 = b >> _u(32)
    p00 = a0 * b0
    mid = a0 * b1 + a1 * b0  # < 2**54
    lo = p00 + (mid << _u(32))
    carry = _ONE64 if lo < p00 else _ZERO64
    hi = a1 * b1 + (mid >> _u(32)) + carry
    return hi, lo


@njit
def _sadd(a, b, W):
    """a (+) b in W for patterns a, b of equal sign or zero (the MVUE kernels add magnitudes)."""
    sa, ma, ea, ka = _unpack(a)
    sb, mb, eb, kb = _unpack(b)
    if ka == 3:
        return a | _QUIET64
    if kb == 3:
        return b | _QUIET64
    if ka == 2 or kb == 0:
        return a
    if kb == 2 or ka == 0:
        return b
    if ea < eb:
        ma, ea, mb, eb = mb, eb, ma, ea
    d = ea - eb
    if d <= 10:  # exact in 64 bits
        return _round_w(sa, (ma << _u(d)) + mb, eb, W)
    # the larger is normal (ea > -1074) and the smaller below 2**-10 of it: its bits under the
    # larger's last place moved 10 places down are sticky
    sh = d - 10
    lo = shr(mb, sh)
    mag = (ma << _u(10)) + lo
    if shl(lo, sh) != mb:
        mag |= _ONE64
    return _round_w(sa, mag, ea - 10, W)


@njit
def _smul(a, b, W):
    """a (x) b in W (patterns)."""
    sa, ma, ea, ka = _unpack(a)
    sb, mb, eb, kb = _unpack(b)
    s = sa ^ sb
    if ka == 3:
        return a | _QUIET64
    if kb == 3:
        return b | _QUIET64
    if ka == 2 or kb == 2:
        if ka == 0 or kb == 0:
            return _u(W[6])  # inf x 0: invalid
        return _signed_inf(s)
    if ka == 0 or kb == 0:
        return _signed_zero(s)
    hi, lo = _mul128(ma, mb)
    if hi == 0:
        return _round_w(s, lo, ea + eb, W)
    sh = 64 - np.int64(leading_zeros(hi))  # 1..42
    mag = (hi << _u(64 - sh)) | (lo >> _u(sh))
    if (lo << _u(64 - sh)) != 0:
        mag |= _ONE64
    return _round_w(s, mag, ea + eb + sh, W)


@njit
def _sdiv(a, b, W):
    """a (/) b in W (patterns)."""
    sa, ma, ea, ka = _unpack(a)
    sb, mb, eb, kb = _unpack(b)
    s = sa ^ sb
    if ka == 3:
        return a | _QUIET64
    if kb == 3:
        return b | _QUIET64
    if ka == 2:
        return _u(W[6]) if kb == 2 else _signed_inf(s)  # inf / inf: invalid
    if ka == 0:
        return _u(W[6]) if kb == 0 else _signed_zero(s)  # 0 / 0: invalid
    if kb == 2:
        return _signed_zero(s)
    if kb == 0:
        return _signed_inf(s)
    # both finite non-zero: significands to [2**52, 2**53), the numerator to [den, 2 den)
    la = np.int64(leading_zeros(ma)) - 11
    lb = np.int64(leading_zeros(mb)) - 11
    na = ma << _u(la)
    nb = mb << _u(lb)
    e = (ea - la) - (eb - lb)
    if na < nb:
        na <<= _ONE64
        e -= 1
    # restoring division, k = p1 + 3 quotient bits (enough for the sticky rule of _round_fmt):
    # q = floor(na 2**(k-1) / nb) in [2**(k-1), 2**k), the rest sticky
    k = W[0] + 3
    q = _ZERO64
    r = na
    for _ in range(k):
        q <<= _ONE64
        if r >= nb:
            q |= _ONE64
            r -= nb
        r <<= _ONE64
    if r != 0:
        q |= _ONE64
    return _round_w(s, q, e - (k - 1), W)


@njit(inline="always")
def _key(c):
    """An int64 ordered like the value of the non-NaN float64 pattern c (-0 and +0 equal)."""
    k = np.int64(c & _ABS64)
    return -k if (c >> _u(63)) != 0 else k


@njit(inline="always")
def _isnan(c):
    return (c & _ABS64) > _INF64


@njit(inline="always")
def _lt(a, b):
    return not (_isnan(a) or _isnan(b)) and _key(a) < _key(b)


@njit(inline="always")
def _le(a, b):
    return not (_isnan(a) or _isnan(b)) and _key(a) <= _key(b)


@njit(inline="always")
def _nonzero(c):
    return (c & _ABS64) != 0


@njit(inline="always")
def _point(word, j):
    """The pattern of u + j, u = word / 2**32 (exact)."""
    return _pat(0, (_u(j) << _u(32)) + _u(word), -32)


def _load(bits):
    """The float64 pattern of a float32/float64 data element given as its bits (uint32/uint64)."""
    raise NotImplementedError  # replaced by the overload below inside jitted code


@overload(_load)
def _load_overload(bits):
    if bits == types.uint32:
        def impl(bits):
            b = _u(bits)
            sign = np.int64(b >> _u(31))
            ef = np.int64((b >> _u(23)) & _u(0xFF))
            f = b & _u(0x7FFFFF)
            if ef == 0xFF:
                return (_u(sign) << _u(63)) | _INF64 | (f << _u(29))
            if ef == 0:
                return _pat(sign, f, -149)
            return _pat(sign, f | _u(1 << 23), ef - 150)
        return impl
    if bits == types.uint64:
        return lambda bits: bits


@njit
def _f32_pattern(c):
    """The float32 bit pattern of the float64 pattern c, whose value is a float32 value (or +-inf,
    or a NaN: quieted, its sign and top payload bits kept)."""
    sb = _u(c >> _u(63)) << _u(31)
    ef = np.int64((c >> _u(52)) & _u(0x7FF))
    f = c & _MANT64
    if ef == 0x7FF:
        return np.uint32(sb | _u(0x7F800000) | ((f >> _u(29)) | (_u(0x400000) if f != 0 else _ZERO64)))
    if ef == 0:  # +-0 (a float64 subnormal is never a float32 value)
        return np.uint32(sb)
    x = ef - 1023
    if x >= -126:
        return np.uint32(sb | (_u(x + 127) << _u(23)) | (f >> _u(29)))
    return np.uint32(sb | ((f | _u(1 << 52)) >> _u(-97 - x)))  # a float32 subnormal


def _store(obits, b, i, c):
    """obits[b, i] = the pattern c in obits' width (a value of that dtype)."""
    raise NotImplementedError  # replaced by the overload below inside jitted code


@overload(_store)
def _store_overload(obits, b, i, c):
    if obits.dtype == types.uint32:
        def impl(obits, b, i, c):
            obits[b, i] = _f32_pattern(c)
        return impl

    def impl(obits, b, i, c):
        obits[b, i] = c
    return impl


def _expo(bits):
    """(|v|'s bit pattern as int64, the number of fraction bits, the all-ones exponent field) from
    v's bits (uint32/uint64)."""
    raise NotImplementedError  # replaced by the overload below inside jitted code


@overload(_expo)
def _expo_overload(bits):
    if bits == types.uint32:
        return lambda bits: (np.int64(bits & np.uint32(0x7FFFFFFF)), 23, 0xFF)
    if bits == types.uint64:
        return lambda bits: (np.int64(bits & _ABS64), 52, 0x7FF)


# block kinds, from the bits (_classify)
_NONFINITE = 0
_SPARSE = 1
_FAST = 2
_SOFT = 3


@njit(inline="always")
def _classify(xbits, b, m, n, lim):
    """The kind of block b, from its bits: _NONFINITE (a NaN or inf), _SPARSE (at most n
    non-zeros), _FAST or _SOFT.

    lim = (L0, D, K, H, T0, T1) in biased exponent fields of the data's dtype: the fast path is
    taken when the non-zero magnitudes' smallest and largest fields lo, hi satisfy lo >= L0,
    K (lo - hi) >= D, hi <= H and (hi >= T0 or hi <= T1).  emul.sparsity._mvue_limits derives them
    per kernel so that every intermediate value of the fast path is a normal number or an exact 0
    and that no overflow guard or rescaling decision can go differently from the bounds assumed."""
    # the common case first: no zero, every field within the limits (then finite, nz = m > n)
    mn = np.int64(1) << 62
    mx = np.int64(0)
    for i in range(m):
        a, mbits, top = _expo(xbits[b, i])
        mn = min(mn, a)
        mx = max(mx, a)
    lo = mn >> mbits
    hi = mx >> mbits
    if m > n and mn != 0 and hi < top and _within(lo, hi, lim):
        return _FAST
    nz = 0
    lo = np.int64(1) << 62
    for i in range(m):
        a, mbits, top = _expo(xbits[b, i])
        nz += np.int64(a != 0)
        lo = min(lo, (a >> mbits) if a != 0 else lo)
    if hi >= top:
        return _NONFINITE
    if nz <= n:
        return _SPARSE
    if _within(lo, hi, lim):
        return _FAST
    return _SOFT


@njit(inline="always")
def _within(lo, hi, lim):
    return lo >= lim[0] and lim[2] * (lo - hi) >= lim[1] and hi <= lim[3] and (hi >= lim[4] or hi <= lim[5])


@njit(inline="always")
def _trivial_block(xbits, b, m, kind, nan, obits):
    """A block with a NaN/inf (all positions the quiet NaN `nan`) or with at most n non-zeros (as
    it is, zeros as +0); bits in, bits out."""
    for i in range(m):
        v = xbits[b, i]
        if kind == _NONFINITE:
            obits[b, i] = nan
        elif _expo(v)[0] != 0:
            obits[b, i] = v
        else:
            obits[b, i] = 0


@njit(cache=True)
def _mvue_exact_soft(xbits, b, n, m, word, W, tvc, cst, obits):
    """_mvue_exact_block's operations on the emulated arithmetic (a block of kind _SOFT); the
    2:4 and 1:2 kernels use it too (their operations are the general kernel's).  tvc: the
    patterns of tv's values; cst: the patterns of (big, scale_down, scale_up)."""
    big = cst[0]
    xc = np.empty(m, np.uint64)
    a = np.empty(m, np.uint64)
    capped = np.zeros(m, np.bool_)
    for i in range(m):
        xc[i] = _load(xbits[b, i])
        a[i] = xc[i] & _ABS64
    zero = _ZERO64
    r = zero
    for i in range(m):
        r = _sadd(r, a[i], W)
    scaled = False
    if not _le(_smul(tvc[n], r, W), big):
        scaled = True
        for i in range(m):
            a[i] = _smul(a[i], cst[1], W)
    ncap = 0
    while True:
        r = zero
        for i in range(m):
            if not capped[i]:
                r = _sadd(r, a[i], W)
        t = n - ncap
        if t == 1:
            break
        imax = -1
        amax = zero
        for i in range(m):
            if not capped[i] and (imax < 0 or _lt(amax, a[i])):
                imax = i
                amax = a[i]
        if _le(r, _smul(tvc[t], amax, W)):
            capped[imax] = True
            ncap += 1
        else:
            break
    t = n - ncap
    tf = tvc[t]
    v = _sdiv(r, tf, W)
    if scaled:
        v = _smul(v, cst[2], W)
    last = -1
    for i in range(m):
        if not capped[i] and _nonzero(a[i]):
            last = i
    j = 0
    d = zero
    for i in range(m):
        if capped[i]:
            obits[b, i] = xbits[b, i]
            continue
        if not _nonzero(a[i]):
            obits[b, i] = 0
            continue
        d = _sadd(d, a[i], W)
        c = tf if i == last else _sdiv(_smul(tf, d, W), r, W)
        sel = False
        while j < t and _lt(_point(word, j), c):
            j += 1
            sel = True
        if sel:
            _store(obits, b, i, (v & _ABS64) | (xc[i] & _SIGN64))
        else:
            obits[b, i] = 0


@njit(cache=True)
def _mvue_approx_soft(xbits, b, w0, w1, W, cst, obits):
    """mvue_approx24_blocks' operations on the emulated arithmetic (a block of kind _SOFT).
    cst: the patterns of (one, big, scale_down, tiny, scale_tiny)."""
    one = cst[0]
    xc = np.empty(4, np.uint64)
    av = np.empty(4, np.uint64)
    rv = np.empty(4, np.uint64)
    tv = np.empty(4, np.uint64)
    for i in range(4):
        xc[i] = _load(xbits[b, i])
        av[i] = xc[i] & _ABS64
    zero = _ZERO64
    s = _sadd(_sadd(_sadd(av[0], av[1], W), av[2], W), av[3], W)
    if not _le(s, cst[1]):
        for i in range(4):
            av[i] = _smul(av[i], cst[2], W)
        s = _sadd(_sadd(_sadd(av[0], av[1], W), av[2], W), av[3], W)
    elif _lt(s, cst[3]):
        for i in range(4):
            av[i] = _smul(av[i], cst[4], W)
        s = _sadd(_sadd(_sadd(av[0], av[1], W), av[2], W), av[3], W)
    a0 = av[0]
    a1 = av[1]
    a2 = av[2]
    a3 = av[3]
    rv[0] = _sadd(_sadd(a1, a2, W), a3, W)
    rv[1] = _sadd(_sadd(a0, a2, W), a3, W)
    rv[2] = _sadd(_sadd(a0, a1, W), a3, W)
    rv[3] = _sadd(_sadd(a0, a1, W), a2, W)
    u0 = _point(w0, 0)
    u1 = _point(w1, 0)
    inv = _sdiv(one, s, W)
    last = 3 if _nonzero(a3) else 2
    d = a0
    first = np.int64(_le(_smul(d, inv, W), u0))
    d = _sadd(d, a1, W)
    first += np.int64(_le(_smul(d, inv, W), u0))
    d = _sadd(d, a2, W)
    first += np.int64(_le(_smul(d, inv, W), u0))
    first -= np.int64(first > last)
    i0 = 1 if first == 0 else 0
    i1 = 1 if first >= 2 else 2
    i2 = 2 if first == 3 else 3
    last2 = 2 if _nonzero(av[i2]) else 1
    invf = _sdiv(one, rv[first], W)
    d = av[i0]
    k = np.int64(_le(_smul(d, invf, W), u1))
    d = _sadd(d, av[i1], W)
    k += np.int64(_le(_smul(d, invf, W), u1))
    k -= np.int64(k > last2)
    second = k + np.int64(k >= first)
    for j in range(4):
        tv[j] = _smul(av[j], inv, W)
    fa = av[first]
    sa = av[second]
    pf = tv[first]
    ps = tv[second]
    for j in range(4):
        rj = rv[j]
        tj = tv[j]
        pf = _sadd(pf, zero if j == first else _smul(tj, _sdiv(fa, rj, W), W), W)
        ps = _sadd(ps, zero if j == second else _smul(tj, _sdiv(sa, rj, W), W), W)
    qf = _sdiv(xc[first], pf, W)
    qs = _sdiv(xc[second], ps, W)
    for i in range(4):
        if i == first:
            _store(obits, b, i, qf)
        elif i == second:
            _store(obits, b, i, qs)
        else:
            obits[b, i] = 0


# --------------------------------------------------------------------------------------------
# MVUE, exact (water-filling + systematic sampling)


@njit(cache=True, error_model="numpy")
def _mvue_exact_block(x, b, n, m, word, tv, big, scale_down, scale_up, a, capped, out, rmode):
    """One block of mvue(method="exact") of kind _FAST (finite, more than n non-zeros, every
    intermediate normal); see the docstring of emul.sparsity.mvue."""
    for i in range(m):
        a[i] = abs(x[b, i])
        capped[i] = False
    zero = a[0] - a[0]
    # overflow guard: if n * (sum of |x|) overflows, work on |x| * 2^-q (power-of-two scaling)
    r = zero
    for i in range(m):
        r = _rd(r + a[i], rmode)
    scaled = False
    if not (_rd(tv[n] * r, rmode) <= big):
        scaled = True
        for i in range(m):
            a[i] = _rd(a[i] * scale_down, rmode)
    # water-filling: cap the largest remaining element while t * a_max >= R (t = n - #capped)
    ncap = 0
    while True:
        r = zero
        for i in range(m):
            if not capped[i]:
                r = _rd(r + a[i], rmode)
        t = n - ncap
        if t == 1:
            break
        imax = -1
        amax = zero
        for i in range(m):
            if not capped[i] and (imax < 0 or a[i] > amax):
                imax = i
                amax = a[i]
        if _rd(tv[t] * amax, rmode) >= r:
            capped[imax] = True
            ncap += 1
        else:
            break
    t = n - ncap
    tf = tv[t]
    v = _rd(r / tf, rmode)
    if scaled:
        v = _rd(v * scale_up, rmode)
    last = -1
    for i in range(m):
        if not capped[i] and a[i] != 0:
            last = i
    u = np.float64(word) / _U32
    j = 0
    d = zero
    for i in range(m):
        xi = x[b, i]
        if capped[i]:
            out[b, i] = xi
            continue
        ai = a[i]
        if ai == 0:
            out[b, i] = zero
            continue
        d = _rd(d + ai, rmode)
        if i == last:
            c = np.float64(tf)
        else:
            c = np.float64(_rd(_rd(tf * d, rmode) / r, rmode))
        sel = False
        while j < t and u + j < c:  # exact: u has 32 bits, c is a float32/float64 value
            j += 1
            sel = True
        if sel:
            out[b, i] = math.copysign(v, xi)
        else:
            out[b, i] = zero


@njit(cache=True, nogil=True, error_model="numpy")
def mvue_exact_blocks(x, xbits, n, words, tv, big, scale_down, scale_up, out, obits, rmode, lim, W, tvc, cst,
                      nan, lo, hi):
    """x: (B, m) float32/float64; words: (B,) uint32; out like x; xbits, obits: x and out viewed
    as unsigned integers of their width; rmode: see _rd; lim: see _classify; W, tvc, cst: see
    _mvue_exact_soft; nan: the quiet NaN's bits (blocks with a NaN or inf).  Blocks lo..hi-1
    (block b uses words[b])."""
    if rmode == 0:
        _exact_range(x, xbits, n, words, tv, big, scale_down, scale_up, out, obits, None, lim, W, tvc, cst,
                     nan, lo, hi)
    else:
        _exact_range(x, xbits, n, words, tv, big, scale_down, scale_up, out, obits, _rounding(x, rmode), lim,
                     W, tvc, cst, nan, lo, hi)


@njit(cache=True, error_model="numpy")
def _exact_range(x, xbits, n, words, tv, big, scale_down, scale_up, out, obits, rmode, lim, W, tvc, cst,
                 nan, lo, hi):
    """The loop of mvue_exact_blocks (rmode: None or an integer, see _rd)."""
    m = x.shape[1]
    a = np.empty(m, x.dtype)
    capped = np.empty(m, np.bool_)
    for b in range(lo, hi):
        kind = _classify(xbits, b, m, n, lim)
        if kind == _FAST:
            _mvue_exact_block(x, b, n, m, words[b], tv, big, scale_down, scale_up, a, capped, out, rmode)
        elif kind == _SOFT:
            _mvue_exact_soft(xbits, b, n, m, words[b], W, tvc, cst, obits)
        else:
            _trivial_block(xbits, b, m, kind, nan, obits)


@njit(cache=True, nogil=True, error_model="numpy")
def mvue_exact24_blocks(x, xbits, words, tv, big, scale_down, scale_up, out, obits, rmode, lim, W, tvc, cst, nan,
                        lo, hi):
    """mvue_exact_blocks for n=2, m=4, unrolled (same operations in the same order)."""
    if rmode == 0:
        _exact24_range(x, xbits, words, tv, big, scale_down, scale_up, out, obits, None, lim, W, tvc, cst, nan,
                       lo, hi)
    else:
        _exact24_range(x, xbits, words, tv, big, scale_down, scale_up, out, obits, _rounding(x, rmode), lim, W,
                       tvc, cst, nan, lo, hi)


@njit(cache=True, error_model="numpy")
def _exact24_range(x, xbits, words, tv, big, scale_down, scale_up, out, obits, rmode, lim, W, tvc, cst, nan,
                   lo, hi):
    """The loop of mvue_exact24_blocks (rmode: None or an integer, see _rd)."""
    one = tv[1]
    two = tv[2]
    for b in range(lo, hi):
        kind = _classify(xbits, b, 4, 2, lim)
        if kind != _FAST:
            if kind == _SOFT:
                _mvue_exact_soft(xbits, b, 2, 4, words[b], W, tvc, cst, obits)
            else:
                _trivial_block(xbits, b, 4, kind, nan, obits)
            continue
        x0 = x[b, 0]
        x1 = x[b, 1]
        x2 = x[b, 2]
        x3 = x[b, 3]
        a0 = abs(x0)
        a1 = abs(x1)
        a2 = abs(x2)
        a3 = abs(x3)
        zero = a0 - a0
        r = _rd(_rd(_rd(a0 + a1, rmode) + a2, rmode) + a3, rmode)
        scaled = not (_rd(two * r, rmode) <= big)
        if scaled:
            a0 = _rd(a0 * scale_down, rmode)
            a1 = _rd(a1 * scale_down, rmode)
            a2 = _rd(a2 * scale_down, rmode)
            a3 = _rd(a3 * scale_down, rmode)
            r = _rd(_rd(_rd(a0 + a1, rmode) + a2, rmode) + a3, rmode)
        # branch-free from here: the data decide too much for branch prediction
        im = 0
        am = a0
        im = 1 if a1 > am else im
        am = a1 if a1 > am else am
        im = 2 if a2 > am else im
        am = a2 if a2 > am else am
        im = 3 if a3 > am else im
        am = a3 if a3 > am else am
        capped = _rd(two * am, rmode) >= r
        cap = im if capped else -1
        # contributions of the uncapped elements (+0 in place of the capped one: adding +0 to
        # a left-to-right sum changes nothing)
        e0 = zero if cap == 0 else a0
        e1 = zero if cap == 1 else a1
        e2 = zero if cap == 2 else a2
        e3 = zero if cap == 3 else a3
        rc = _rd(_rd(_rd(e0 + e1, rmode) + e2, rmode) + e3, rmode)
        r = rc if capped else r
        tf = one if capped else two
        v = _rd(r / tf, rmode)
        if scaled:
            v = _rd(v * scale_up, rmode)
        last = 3 if e3 != 0 else (2 if e2 != 0 else (1 if e1 != 0 else 0))
        d0 = e0
        d1 = _rd(d0 + e1, rmode)
        d2 = _rd(d1 + e2, rmode)
        tf64 = np.float64(tf)
        c0 = tf64 if last <= 0 else np.float64(_rd(_rd(tf * d0, rmode) / r, rmode))
        c1 = tf64 if last <= 1 else np.float64(_rd(_rd(tf * d1, rmode) / r, rmode))
        c2 = tf64 if last <= 2 else np.float64(_rd(_rd(tf * d2, rmode) / r, rmode))
        u = np.float64(words[b]) / _U32
        # number of the points u, u+1 (t = 2) below each interval end
        n0 = np.int64(u < c0) + np.int64((not capped) and u + 1.0 < c0)
        n1 = np.int64(u < c1) + np.int64((not capped) and u + 1.0 < c1)
        n2 = np.int64(u < c2) + np.int64((not capped) and u + 1.0 < c2)
        n3 = 1 if capped else 2
        out[b, 0] = x0 if cap == 0 else (math.copysign(v, x0) if n0 > 0 else zero)
        out[b, 1] = x1 if cap == 1 else (math.copysign(v, x1) if n1 > n0 else zero)
        out[b, 2] = x2 if cap == 2 else (math.copysign(v, x2) if n2 > n1 else zero)
        out[b, 3] = x3 if cap == 3 else (math.copysign(v, x3) if n3 > n2 else zero)


@njit(cache=True, nogil=True, error_model="numpy")
def mvue_exact12_blocks(x, xbits, words, big, scale_down, scale_up, out, obits, rmode, lim, W, tvc, cst, nan,
                        lo, hi):
    """mvue_exact_blocks for n=1, m=2: keep x_0 iff u < a_0 / (a_0 + a_1), value sign * S."""
    if rmode == 0:
        _exact12_range(x, xbits, words, big, scale_down, scale_up, out, obits, None, lim, W, tvc, cst, nan, lo,
                       hi)
    else:
        _exact12_range(x, xbits, words, big, scale_down, scale_up, out, obits, _rounding(x, rmode), lim, W,
                       tvc, cst, nan, lo, hi)


@njit(cache=True, error_model="numpy")
def _exact12_range(x, xbits, words, big, scale_down, scale_up, out, obits, rmode, lim, W, tvc, cst, nan,
                   lo, hi):
    """The loop of mvue_exact12_blocks (rmode: None or an integer, see _rd)."""
    for b in range(lo, hi):
        kind = _classify(xbits, b, 2, 1, lim)
        if kind != _FAST:
            if kind == _SOFT:
                _mvue_exact_soft(xbits, b, 1, 2, words[b], W, tvc, cst, obits)
            else:
                _trivial_block(xbits, b, 2, kind, nan, obits)
            continue
        x0 = x[b, 0]
        x1 = x[b, 1]
        a0 = abs(x0)
        a1 = abs(x1)
        zero = a0 - a0
        r = _rd(a0 + a1, rmode)
        scaled = not (r <= big)
        if scaled:  # q = 1
            a0 = _rd(a0 * scale_down, rmode)
            a1 = _rd(a1 * scale_down, rmode)
            r = _rd(a0 + a1, rmode)
            v = _rd(r * scale_up, rmode)
        else:
            v = r
        u = np.float64(words[b]) / _U32
        sel0 = u < np.float64(_rd(a0 / r, rmode))
        v0 = math.copysign(v, x0)
        v1 = math.copysign(v, x1)
        out[b, 0] = v0 if sel0 else zero
        out[b, 1] = zero if sel0 else v1


# --------------------------------------------------------------------------------------------
# MVUE, approx 2:4 (two successive magnitude-proportional draws, Horvitz-Thompson values)


@njit(cache=True, nogil=True, error_model="numpy")
def mvue_approx24_blocks(x, xbits, words, one, big, scale_down, tiny, scale_tiny, out, obits, rmode, lim, W, cst,
                         nan, lo, hi):
    """x: (B, 4) float32/float64; words: (2B,) uint32 (block b uses 2b and 2b+1); out like x;
    xbits, obits, lim, nan, lo, hi: see mvue_exact_blocks; W, cst: see _mvue_approx_soft.

    Data-dependent choices index small arrays instead of branching (they are unpredictable)."""
    if rmode == 0:
        _approx24_range(x, xbits, words, one, big, scale_down, tiny, scale_tiny, out, obits, None, lim, W, cst,
                        nan, lo, hi)
    else:
        _approx24_range(x, xbits, words, one, big, scale_down, tiny, scale_tiny, out, obits, _rounding(x,
                        rmode), lim, W, cst, nan, lo, hi)


@njit(cache=True, error_model="numpy")
def _approx24_range(x, xbits, words, one, big, scale_down, tiny, scale_tiny, out, obits, rmode, lim, W, cst,
                    nan, lo, hi):
    """The loop of mvue_approx24_blocks (rmode: None or an integer, see _rd)."""
    av = np.empty(4, x.dtype)
    rv = np.empty(4, x.dtype)
    tv = np.empty(4, x.dtype)
    for b in range(lo, hi):
        kind = _classify(xbits, b, 4, 2, lim)
        if kind != _FAST:
            if kind == _SOFT:
                _mvue_approx_soft(xbits, b, words[2 * b], words[2 * b + 1], W, cst, obits)
            else:
                _trivial_block(xbits, b, 4, kind, nan, obits)
            continue
        a0 = abs(x[b, 0])
        a1 = abs(x[b, 1])
        a2 = abs(x[b, 2])
        a3 = abs(x[b, 3])
        zero = a0 - a0
        s = _rd(_rd(_rd(a0 + a1, rmode) + a2, rmode) + a3, rmode)
        if not (s <= big):  # power-of-two rescaling: ratios and x_i / pi_i unchanged
            a0 = _rd(a0 * scale_down, rmode)
            a1 = _rd(a1 * scale_down, rmode)
            a2 = _rd(a2 * scale_down, rmode)
            a3 = _rd(a3 * scale_down, rmode)
            s = _rd(_rd(_rd(a0 + a1, rmode) + a2, rmode) + a3, rmode)
        elif s < tiny:  # so that 1 / S cannot overflow
            a0 = _rd(a0 * scale_tiny, rmode)
            a1 = _rd(a1 * scale_tiny, rmode)
            a2 = _rd(a2 * scale_tiny, rmode)
            a3 = _rd(a3 * scale_tiny, rmode)
            s = _rd(_rd(_rd(a0 + a1, rmode) + a2, rmode) + a3, rmode)
        av[0] = a0
        av[1] = a1
        av[2] = a2
        av[3] = a3
        # sums of all but one element, left to right
        rv[0] = _rd(_rd(a1 + a2, rmode) + a3, rmode)
        rv[1] = _rd(_rd(a0 + a2, rmode) + a3, rmode)
        rv[2] = _rd(_rd(a0 + a1, rmode) + a3, rmode)
        rv[3] = _rd(_rd(a0 + a1, rmode) + a2, rmode)
        u0 = np.float64(words[2 * b]) / _U32
        u1 = np.float64(words[2 * b + 1]) / _U32
        inv = _rd(one / s, rmode)
        # first draw: smallest i with a_i > 0 and u0 < C_i, C_i = (a_0 + ... + a_i) * (1/S),
        # except C = 1 for the last non-zero element.  The C_i are nondecreasing and a zero
        # a_i repeats C_(i-1): count the C_0..C_2 <= u0, capped at the last non-zero index.
        last = 3 if a3 != 0 else 2  # nz >= 3: one of a2, a3 is non-zero
        d = a0
        first = np.int64(np.float64(_rd(d * inv, rmode)) <= u0)
        d = _rd(d + a1, rmode)
        first += np.float64(_rd(d * inv, rmode)) <= u0
        d = _rd(d + a2, rmode)
        first += np.float64(_rd(d * inv, rmode)) <= u0
        first -= np.int64(first > last)
        # second draw: the same over the other three in index order, with 1 / R_first
        # (selects and index arithmetic below, not branches: the draws are unpredictable)
        i0 = 1 if first == 0 else 0  # the remaining three indices, in order
        i1 = 1 if first >= 2 else 2
        i2 = 2 if first == 3 else 3
        b0 = av[i0]
        b1 = av[i1]
        last2 = 2 if av[i2] != 0 else 1  # at least two of them are non-zero
        invf = _rd(one / rv[first], rmode)
        d = b0
        k = np.int64(np.float64(_rd(d * invf, rmode)) <= u1)
        d = _rd(d + b1, rmode)
        k += np.float64(_rd(d * invf, rmode)) <= u1
        k -= np.int64(k > last2)
        second = k + np.int64(k >= first)
        for j in range(4):
            tv[j] = _rd(av[j] * inv, rmode)
        # pi_i = t_i + sum_{j != i, index order} t_j (a_i / R_j) (the skipped j adds +0)
        fa = av[first]
        sa = av[second]
        pf = tv[first]
        ps = tv[second]
        for j in range(4):
            rj = rv[j]
            tj = tv[j]
            pf = _rd(pf + (zero if j == first else _rd(tj * _rd(fa / rj, rmode), rmode)), rmode)
            ps = _rd(ps + (zero if j == second else _rd(tj * _rd(sa / rj, rmode), rmode)), rmode)
        qf = _rd(x[b, first] / pf, rmode)
        qs = _rd(x[b, second] / ps, rmode)
        for i in range(4):
            out[b, i] = qf if i == first else (qs if i == second else zero)


# --------------------------------------------------------------------------------------------
# transposable masks: exact integer costs per tile
#
# A tile's objective is the exact sum of kept |w|.  Stage 1 gives every element the integer cost
# D = RNE(|w| * 2^S), S = 50 - e with 2^(e-1) <= max|w| < 2^e (so 0 <= D <= 2^50).  When every
# |w| * 2^S is an integer (all float16 tiles, float32/float64 tiles whose values span at most 50
# bits below the top bit) these costs are the exact objective times 2^S and one solve is final.
# Otherwise the solution is refined in further stages on the exact remainders
# f = |w| - D * 2^-S (kept as integers in units of the last place of w, where they are exact),
# each stage resolving K more bits; see _refine_stage for the invariant and the proof.  Costs and
# remainders come from the weights' bits with integer operations only.

_COST_BITS = 50  # stage costs lie in [0, 2^50]: sums and potentials stay far below 2^62 for m <= 32


# The transposable kernels read weights as their bit patterns: emul.sparsity passes float32 /
# float64 weights viewed as uint32 / uint64 (integer loads: no float instruction, and nothing an
# optimizer could turn back into a float compare); the whole-weight wrappers
# (transposable_optimal, transposable_optimal_24) view float arrays so too.


def _abs_key(v):
    """|v|'s bit pattern as an int64 (v: the bits of a float32/float64 as uint32/uint64): ordered
    like |v| for non-NaN v."""
    raise NotImplementedError  # replaced by the overload below inside jitted code


@overload(_abs_key)
def _abs_key_overload(v):
    if v == types.uint32:
        return lambda v: np.int64(v & np.uint32(0x7FFFFFFF))
    if v == types.uint64:
        return lambda v: np.int64(v & _ABS64)


def _wparts(v):
    """(mag, e) with |v| = mag * 2**e, mag < 2**53 (uint64), for the bits (uint32/uint64) of a
    finite float32/float64 weight."""
    raise NotImplementedError  # replaced by the overload below inside jitted code


@overload(_wparts)
def _wparts_overload(v):
    if v == types.uint32:
        return lambda v: _wfields(_u(v), 23, 0xFF, 150)
    if v == types.uint64:
        return lambda v: _wfields(v, 52, 0x7FF, 1075)


@njit(inline="always")
def _wfields(b, mbits, emask, shift):
    """(mag, e) of the finite float with bits b (uint64; mbits fraction bits, exponent field mask
    emask, bias + mbits = shift): |v| = mag * 2**e."""
    ef = np.int64((b >> _u(mbits)) & _u(emask))
    f = b & ((_ONE64 << _u(mbits)) - _ONE64)
    if ef == 0:
        return f, np.int64(1 - shift)
    return f | (_ONE64 << _u(mbits)), ef - shift


@njit(inline="always")
def _rne_shift(mag, t):
    """(RNE(mag 2^t), rest) for a uint64 mag < 2^53 with mag 2^t < 2^62: the integer nearest to
    mag 2^t (ties to even) and the exact rest mag - RNE(mag 2^t) 2^-t, in units of mag's last
    place (0 when t >= 0), both int64."""
    if t >= 0:  # (float32 tiles: nearly always)
        return np.int64(mag << np.uint64(t)), np.int64(0)
    s = min(-t, 62)  # s >= 54: mag 2^t < 1/2, q = 0, rest = mag
    v = np.int64(mag)
    q = v >> s
    rest = v & ((np.int64(1) << s) - 1)
    half = np.int64(1) << (s - 1)
    up = np.int64((rest > half) | ((rest == half) & ((q & 1) == 1)))  # (no branch: unpredictable)
    return q + up, rest - (up << s)


@njit(cache=True)
def _tile_costs(w, r0, c0, m, cost):
    """Stage-1 costs: cost[i, j] = RNE(|w[r0+i, c0+j]| * 2^S), S = 50 - e, 2^(e-1) <= max|w| < 2^e
    (S = 0 and all costs 0 for an all-zero tile).  Returns (S, exact): exact is True when every
    |w| * 2^S is an integer, i.e. the costs are the exact magnitudes times 2^S.  Integer work on
    the weights' bits (|w| = mag 2^e with mag < 2^53), so subnormal weights count whatever the
    thread's MXCSR."""
    best = np.int64(0)
    bi = 0
    bj = 0
    for i in range(m):
        for j in range(m):
            k = _abs_key(w[r0 + i, c0 + j])
            if k > best:
                best = k
                bi = i
                bj = j
    if best == 0:
        for i in range(m):
            for j in range(m):
                cost[i, j] = 0
        return 0, True
    mx, ex = _wparts(w[r0 + bi, c0 + bj])
    sc = _COST_BITS - (ex + 64 - np.int64(leading_zeros(mx)))
    exact = True
    for i in range(m):
        for j in range(m):
            mg, eg = _wparts(w[r0 + i, c0 + j])
            d, rest = _rne_shift(mg, eg + sc)  # mg 2^(eg+sc) <= max|w| 2^S < 2^50
            cost[i, j] = d
            exact &= rest == 0
    return sc, exact


@njit(cache=True)
def _remainders(w, r0, c0, m, sc, rem, rexp):
    """|w| - cost[i, j] * 2^-sc = rem[i, j] * 2^rexp[i, j] exactly, with the stage-1 costs of
    _tile_costs (see _refine_stage): the rest of each RNE in units of the weight's last place."""
    for i in range(m):
        for j in range(m):
            mg, eg = _wparts(w[r0 + i, c0 + j])
            _, rest = _rne_shift(mg, eg + sc)
            rem[i, j] = rest
            rexp[i, j] = eg


@njit(cache=True)
def _next_digits(rem, rexp, m, sc, dig):
    """dig[i, j] = RNE(r * 2^sc) and r -= dig[i, j] * 2^-sc, exactly, for the remainders
    r = rem[i, j] * 2^rexp[i, j] (|rem| < 2^53; |r| 2^sc <= 2^49 by the invariant of
    _refine_stage).  Returns whether any remainder is left."""
    left = False
    for i in range(m):
        for j in range(m):
            r = rem[i, j]
            if r == 0:
                dig[i, j] = 0
                continue
            t = rexp[i, j] + sc
            if t >= 0:
                dig[i, j] = r << t
                rem[i, j] = 0
                continue
            d, rest = _rne_shift(np.uint64(-r if r < 0 else r), t)
            dig[i, j] = -d if r < 0 else d
            rem[i, j] = -rest if r < 0 else rest
            left |= rest != 0
    return left


@njit(cache=True)
def _ssp_tile(cost, m, n, x, prow, pcol, excess, dist, prev, done):
    """Maximum-weight n-regular bipartite b-matching of the m x m tile `cost` (int64 in
    [0, 2^50]), written to x (int8, 1 = kept), with optimal duals: on return every kept edge has
    cost - prow[i] + pcol[j] >= 0 and every other edge <= 0 (complementary slackness).

    Successive shortest paths with potentials, started from each row's top-n (which is optimal
    for the row constraints alone, with potentials prow = the row's n-th largest cost, pcol = 0),
    moving column excess to column deficits.
    """
    inf = np.int64(1) << 62
    # rows' top-n by (cost desc, column asc)
    for i in range(m):
        for j in range(m):
            x[i, j] = 0
        for _ in range(n):
            best = -1
            for j in range(m):
                if x[i, j] == 0 and (best < 0 or cost[i, j] > cost[i, best]):
                    best = j
            x[i, best] = 1
            prow[i] = cost[i, best]
    for j in range(m):
        pcol[j] = 0
        load = 0
        for i in range(m):
            load += x[i, j]
        excess[j] = load - n
    # nodes: rows 0..m-1, columns m..2m-1
    while True:
        anyex = False
        for j in range(m):
            if excess[j] > 0:
                anyex = True
                break
        if not anyex:
            break
        for v in range(2 * m):
            dist[v] = inf
            prev[v] = -1
            done[v] = False
        for j in range(m):
            if excess[j] > 0:
                dist[m + j] = 0
        target = -1
        dtarget = inf
        while True:
            best = -1
            for v in range(2 * m):
                if not done[v] and dist[v] < inf and (best < 0 or dist[v] < dist[best]):
                    best = v
            if best < 0:
                break
            done[best] = True
            if best >= m and excess[best - m] < 0:
                target = best
                dtarget = dist[best]
                break
            if best >= m:  # column -> rows through kept edges (reverse residual)
                j = best - m
                for i in range(m):
                    if x[i, j] == 1 and not done[i]:
                        nd = dist[best] + cost[i, j] - prow[i] + pcol[j]
                        if nd < dist[i]:
                            dist[i] = nd
                            prev[i] = best
            else:  # row -> columns through unkept edges
                i = best
                for j in range(m):
                    if x[i, j] == 0 and not done[m + j]:
                        nd = dist[best] - cost[i, j] + prow[i] - pcol[j]
                        if nd < dist[m + j]:
                            dist[m + j] = nd
                            prev[m + j] = best
        if target < 0:  # cannot happen: a complete bipartite graph always has a path
            break
        # augment one unit along the path
        v = target
        while prev[v] >= 0:
            u = prev[v]
            if v >= m:  # u row -> v column: keep
                x[u, v - m] = 1
            else:  # u column -> v row: drop
                x[v, u - m] = 0
            v = u
        excess[v - m] -= 1
        excess[target - m] += 1
        for v in range(2 * m):
            dv = dist[v] if (done[v] and dist[v] < dtarget) else dtarget
            if v < m:
                prow[v] += dv
            else:
                pcol[v - m] += dv


@njit(cache=True)
def _lex_tile(cost, m, x, prow, pcol, prev, done, fixed, queue):
    """Among the optima of `cost` (x optimal, prow/pcol optimal duals), move x to the one whose
    sorted flat kept-index list is lexicographically smallest.

    Every optimum keeps the edges of positive reduced cost and none of negative reduced cost;
    the tight ones (reduced cost cost - prow + pcol == 0) are decided in flat-index order, each
    one pulled into the mask by an alternating cycle of tight undecided edges when one exists.
    """
    for k in range(m * m):
        fixed[k] = False
    for k in range(m * m):
        i0 = k // m  # (a division per tight candidate only)
        j0 = k - i0 * m
        if x[i0, j0] == 1 or cost[i0, j0] != prow[i0] - pcol[j0]:
            fixed[k] = True
            continue
        # BFS from column j0 to row i0 over tight undecided edges
        for v in range(2 * m):
            prev[v] = -1
            done[v] = False
        head = 0
        tail = 0
        queue[tail] = m + j0
        tail += 1
        done[m + j0] = True
        found = False
        while head < tail and not found:
            v = queue[head]
            head += 1
            if v >= m:
                j = v - m
                for i in range(m):
                    e = i * m + j
                    if (not done[i] and x[i, j] == 1 and not fixed[e]
                            and cost[i, j] == prow[i] - pcol[j]):
                        done[i] = True
                        prev[i] = v
                        if i == i0:
                            found = True
                            break
                        queue[tail] = i
                        tail += 1
            else:
                i = v
                for j in range(m):
                    e = i * m + j
                    if (not done[m + j] and x[i, j] == 0 and not fixed[e] and e != k
                            and cost[i, j] == prow[i] - pcol[j]):
                        done[m + j] = True
                        prev[m + j] = v
                        queue[tail] = m + j
                        tail += 1
        if found:
            v = i0
            while v != m + j0:
                u = prev[v]
                if v >= m:
                    x[u, v - m] = 1
                else:
                    x[v, u - m] = 0
                v = u
            x[i0, j0] = 1
        fixed[k] = True


@njit(cache=True)
def _refine_stage(cost, m, n, x, prow, pcol, rem, rexp, forced, sc, dig, indeg, queue):
    """One refinement stage of the exact tile objective.  Returns the new scale exponent, or
    sc itself when the current solution is final (then `cost` is unchanged).

    Invariant (I): for every mask X with n per row and column that respects `forced`
    (forced = 1: kept, -1: not kept, 0: free),
        sum_X |w| = const + 2^-sc * sum_X cost + sum_{X, free} rem,      |rem| <= 2^-sc / 2,
    rem = 0 on forced edges, and every exact optimum respects `forced`.

    Let x, prow, pcol be optimal for `cost`, rho = cost - prow + pcol (>= 0 on kept, <= 0 on
    other edges) and p = |rho|.  For any mask X, sum_X cost - sum_x cost = -sum_{X ^ x} p, so an
    exact optimum X* has 2^-sc sum_{X* ^ x} p <= |X* ^ x| 2^-sc / 2 <= n m 2^-sc: an edge with
    p > n m has the same status in every exact optimum as in x, and is forced.  x is final (after
    _lex_tile) when no free edge has a remainder: then sum_X |w| = const + 2^-sc sum_X cost over
    the masks respecting `forced`, and all optima of `cost` respect it (they have p = 0 on
    X ^ x), so the optima of `cost` are the exact optima.  x is also final when the free edges
    admit no alternating cycle (_free_acyclic): X ^ x of any other exact optimum, or of any
    other optimum of `cost`, is a union of such cycles, so x is the only one of both.
    Otherwise the next stage, at scale sc + K, takes
        cost' = (rho + A) 2^K + RNE(rem 2^(sc+K))  on free edges,  rem' = the exact rest,
        cost' = 2 A 2^K (forced kept)  or  0 (forced not kept),  rem' = 0,       A = n m + 1,
    which satisfies (I) (the shift A 2^K adds the same n m A 2^K to every mask), lies in
    [0, 2 A 2^K] <= 2^50, and whose optima respect `forced`: against x, a mask X breaking it
    loses A 2^K on a forced edge and gains at most |X ^ x| 2^K / 2 <= n m 2^K on free ones.
    rem and its digits are exact integers in units of the weight's last place (_next_digits).
    """
    nm = n * m
    more = False
    free_out = False
    for i in range(m):
        for j in range(m):
            e = i * m + j
            if forced[e] != 0:
                continue
            rho = cost[i, j] - prow[i] + pcol[j]
            if abs(rho) > nm:
                forced[e] = 1 if x[i, j] == 1 else -1
                rem[i, j] = 0
            else:
                more |= rem[i, j] != 0
                free_out |= x[i, j] == 0
    if not (more and free_out) or _free_acyclic(x, forced, m, indeg, queue):
        return sc
    a = np.int64(nm + 1)
    k = _COST_BITS - 1 - _bit_length(a)  # 2 a 2^k <= 2^50
    sk = np.int64(1) << k
    nsc = sc + k
    # forced edges have rem = 0, hence digit 0
    _next_digits(rem, rexp, m, nsc, dig)
    for i in range(m):
        for j in range(m):
            e = i * m + j
            if forced[e] == 1:
                cost[i, j] = 2 * a * sk
            elif forced[e] == -1:
                cost[i, j] = 0
            else:
                cost[i, j] = (cost[i, j] - prow[i] + pcol[j] + a) * sk + dig[i, j]
    return nsc


@njit(cache=True)
def _free_acyclic(x, forced, m, indeg, queue):
    """Whether the directed graph of free edges -- row i -> column j for (i, j) not in x, column j
    -> row i for (i, j) in x -- has no cycle (Kahn's algorithm; nodes: rows 0..m-1, columns
    m..2m-1).  A cycle of it is an alternating cycle: flipping it gives another n-regular mask."""
    for v in range(2 * m):
        indeg[v] = 0
    for i in range(m):
        for j in range(m):
            if forced[i * m + j] == 0:
                if x[i, j] == 1:
                    indeg[i] += 1
                else:
                    indeg[m + j] += 1
    tail = 0
    for v in range(2 * m):
        if indeg[v] == 0:
            queue[tail] = v
            tail += 1
    head = 0
    while head < tail:
        v = queue[head]
        head += 1
        if v < m:  # row v -> columns through free edges outside x
            for j in range(m):
                if forced[v * m + j] == 0 and x[v, j] == 0:
                    indeg[m + j] -= 1
                    if indeg[m + j] == 0:
                        queue[tail] = m + j
                        tail += 1
        else:  # column -> rows through free edges of x
            j = v - m
            for i in range(m):
                if forced[i * m + j] == 0 and x[i, j] == 1:
                    indeg[i] -= 1
                    if indeg[i] == 0:
                        queue[tail] = i
                        tail += 1
    return tail == 2 * m


@njit(cache=True)
def _bit_length(v):
    b = 0
    while v > 0:
        b += 1
        v >>= 1
    return b


@njit(cache=True)
def _solve_tile(w, r0, c0, m, n, cost, x, prow, pcol, excess, dist, prev, done, fixed, queue, rem, rexp,
                forced, dig):
    """The exact optimal tile (maximum sum of kept |w|, lexicographically smallest among optima)."""
    sc, exact = _tile_costs(w, r0, c0, m, cost)
    _ssp_tile(cost, m, n, x, prow, pcol, excess, dist, prev, done)
    if not exact:
        _remainders(w, r0, c0, m, sc, rem, rexp)
        for k in range(m * m):
            forced[k] = 0
        while True:
            nsc = _refine_stage(cost, m, n, x, prow, pcol, rem, rexp, forced, sc, dig, dist, queue)
            if nsc == sc:
                break
            sc = nsc
            _ssp_tile(cost, m, n, x, prow, pcol, excess, dist, prev, done)
    _lex_tile(cost, m, x, prow, pcol, prev, done, fixed, queue)


@njit(cache=True, nogil=True)
def transposable_optimal_tiles(w, n, m, out, lo, hi):
    """w: (R, C) float32/float64 weights as their bits (uint32/uint64) with m | R and m | C;
    out: (R, C) bool; tiles lo..hi-1 in C order over the (R/m, C/m) grid of tiles."""
    nc = w.shape[1] // m
    cost = np.empty((m, m), np.int64)
    x = np.empty((m, m), np.int8)
    prow = np.empty(m, np.int64)
    pcol = np.empty(m, np.int64)
    excess = np.empty(m, np.int64)
    dist = np.empty(2 * m, np.int64)
    prev = np.empty(2 * m, np.int64)
    done = np.empty(2 * m, np.bool_)
    fixed = np.empty(m * m, np.bool_)
    queue = np.empty(2 * m, np.int64)
    rem = np.empty((m, m), np.int64)
    rexp = np.empty((m, m), np.int64)
    forced = np.empty(m * m, np.int8)
    dig = np.empty((m, m), np.int64)
    for t in range(lo, hi):
        r0 = (t // nc) * m
        c0 = (t % nc) * m
        _solve_tile(w, r0, c0, m, n, cost, x, prow, pcol, excess, dist, prev, done, fixed, queue,
                    rem, rexp, forced, dig)
        for i in range(m):
            for j in range(m):
                out[r0 + i, c0 + j] = x[i, j] == 1


def transposable_optimal(w, n, m, out):
    """The whole weight on one thread (emul.sparsity runs transposable_optimal_tiles on slices of
    the tiles): w: (R, C) float32/float64 weights or their bits, m | R and m | C; out: (R, C)
    bool."""
    transposable_optimal_tiles(weight_bits(w), n, m, out, 0, (w.shape[0] // m) * (w.shape[1] // m))


def weight_bits(w):
    """A float32/float64 weight array (C-contiguous, writeable) as its bits: uint32/uint64 (bit
    arrays pass through), the only types the transposable kernels are compiled for."""
    if w.dtype.kind == "u":
        return w
    return w.view(np.uint32 if w.dtype.itemsize == 4 else np.uint64)


@njit(cache=True)
def _cand_value(ps, cand, q):
    return ps[0, cand[q, 0]] + ps[1, cand[q, 1]] + ps[2, cand[q, 2]] + ps[3, cand[q, 3]]


@njit(cache=True)
def _pair_sums(cost, ps):
    for i in range(4):
        ps[i, 0] = cost[i, 0] + cost[i, 1]
        ps[i, 1] = cost[i, 0] + cost[i, 2]
        ps[i, 2] = cost[i, 0] + cost[i, 3]
        ps[i, 3] = cost[i, 1] + cost[i, 2]
        ps[i, 4] = cost[i, 1] + cost[i, 3]
        ps[i, 5] = cost[i, 2] + cost[i, 3]


@njit(cache=True)
def _best24_exact(w, r0, c0, cand, cost, ps, sc, bestv, rem, rexp, off, live):
    """The first candidate of maximal exact kept sum when the stage-1 costs are not exact.

    With o_q = (candidate cost sum - best cost sum) in units of 2^-sc and |rem| <= 2^-sc / 2,
    a candidate's exact sum is const + 2^-sc (o_q + r_q) with |r_q| <= 4 (8 kept edges), so
    only candidates with o_q >= -8 can be optimal.  Each further stage multiplies the offsets of
    those by 2^50 and adds their sums of the next RNE digits of the remainders (_next_digits);
    offsets stay within [-8 * 2^50 - 2^52, 2^52].  When no remainder is left the offsets are
    exact and the first maximal one wins."""
    _remainders(w, r0, c0, 4, sc, rem, rexp)
    nlive = 0
    for q in range(cand.shape[0]):
        o = _cand_value(ps, cand, q) - bestv
        if o >= -8:
            live[nlive] = q
            off[nlive] = o
            nlive += 1
    left = True
    while left:
        sc += _COST_BITS
        left = _next_digits(rem, rexp, 4, sc, cost)
        _pair_sums(cost, ps)
        best = np.int64(-(1 << 62))
        for k in range(nlive):
            o = off[k] * (np.int64(1) << _COST_BITS) + _cand_value(ps, cand, live[k])
            off[k] = o
            best = max(best, o)
        kept = 0
        for k in range(nlive):
            o = off[k] - best
            if o >= -8:
                live[kept] = live[k]
                off[kept] = o
                kept += 1
        nlive = kept
    for k in range(nlive):
        if off[k] == 0:
            return live[k]
    return live[0]  # unreachable: the maximum has offset 0


@njit(cache=True, nogil=True)
def transposable_optimal_24_tiles(w, cand, out, lo, hi):
    """2:4 by enumeration, tiles lo..hi-1 (w, out: see transposable_optimal_tiles). cand: (90, 4)
    int64, the row-pair ids (0..5 for (0,1),(0,2),(0,3), (1,2),(1,3),(2,3)) of the 90 tiles,
    sorted by sorted flat kept-index list; the first candidate of maximal exact kept sum wins
    (integer costs of _tile_costs when exact, else _best24_exact)."""
    m = 4
    nc = w.shape[1] // m
    pa = (0, 0, 0, 1, 1, 2)
    pb = (1, 2, 3, 2, 3, 3)
    ncand = cand.shape[0]
    cost = np.empty((m, m), np.int64)
    ps = np.empty((m, 6), np.int64)
    rem = np.empty((m, m), np.int64)
    rexp = np.empty((m, m), np.int64)
    off = np.empty(ncand, np.int64)
    live = np.empty(ncand, np.int64)
    for t in range(lo, hi):
        r0 = (t // nc) * m
        c0 = (t % nc) * m
        sc, exact = _tile_costs(w, r0, c0, m, cost)
        _pair_sums(cost, ps)
        best = 0
        bestv = np.int64(-1)
        if exact:
            for q in range(ncand):
                v = _cand_value(ps, cand, q)
                if v > bestv:
                    bestv = v
                    best = q
        else:  # also the runner-up: is another candidate within the rounding margin?
            second = np.int64(-1)
            for q in range(ncand):
                v = _cand_value(ps, cand, q)
                if v > bestv:
                    second = bestv
                    bestv = v
                    best = q
                elif v > second:
                    second = v
            if second >= bestv - 8:
                best = _best24_exact(w, r0, c0, cand, cost, ps, sc, bestv, rem, rexp, off, live)
        for i in range(m):
            p = cand[best, i]
            for j in range(m):
                out[r0 + i, c0 + j] = (j == pa[p]) or (j == pb[p])


def transposable_optimal_24(w, cand, out):
    """transposable_optimal_24_tiles on the whole weight, one thread (w: float32/float64 weights
    or their bits; see transposable_optimal)."""
    transposable_optimal_24_tiles(weight_bits(w), cand, out, 0, (w.shape[0] // 4) * (w.shape[1] // 4))


# --------------------------------------------------------------------------------------------
# transposable masks: greedy 2-approximation


def _packed(bits):
    """True for float32 weights' bits (uint32): their keys pack into int64 (see _greedy_order)."""
    raise NotImplementedError  # replaced by the overload below inside jitted code


@overload(_packed)
def _packed_overload(bits):
    packed = isinstance(bits, types.Array) and bits.dtype == types.uint32
    return lambda bits: packed


@njit(cache=True)
def _greedy_order(bits, r0, c0, m, key, mag, order):
    """order = flat tile indices sorted by (-|w|, flat index), through ranks: element k goes to
    position #{l : |w_l| > |w_k| or (|w_l| == |w_k| and l < k)}.  bits: the weights' bits.  For
    float32 weights (uint32 bits, a compile-time choice) the rank counts int64 keys
    (|w| bits << 32 | (m*m - 1 - k)), which vectorises well; otherwise the magnitudes are
    compared as bit patterns (mag: int64), never as floats."""
    mm = m * m
    if _packed(bits):
        for i in range(m):
            for j in range(m):
                k = i * m + j
                key[k] = (np.int64(bits[r0 + i, c0 + j] & 0x7FFFFFFF) << 32) | (mm - 1 - k)
        for k in range(mm):
            kk = key[k]
            rank = 0
            for l in range(mm):
                rank += key[l] > kk
            order[rank] = k
    else:
        for i in range(m):
            for j in range(m):
                mag[i * m + j] = _abs_key(bits[r0 + i, c0 + j])
        for k in range(mm):
            ak = mag[k]
            rank = 0
            for l in range(k):
                rank += mag[l] >= ak
            for l in range(k + 1, mm):
                rank += mag[l] > ak
            order[rank] = k


@njit(cache=True, nogil=True)
def transposable_greedy(bits, n, m, out, step, blocked, record, lo, hi):
    """Full greedy per tile, tiles lo..hi-1 (C order over the grid of m x m tiles).  bits: the
    weights' bits (uint32 for float32 weights, uint64 for float64).  out (all False on entry):
    kept mask.  If record: step[r, c] (all -1 on entry) = visiting step at which the element was
    kept; blocked[t, k] = the candidate of step k had both its row and its column already full
    (for the reference's batch-global early stop)."""
    nc = bits.shape[1] // m
    mm = m * m
    full = n * m
    key = np.empty(mm, np.int64)
    mag = np.empty(mm, np.int64)
    order = np.empty(mm, np.int64)
    rc = np.empty(m, np.int64)
    cc = np.empty(m, np.int64)
    rowof = np.empty(mm, np.int64)  # e // m without a division per element
    colof = np.empty(mm, np.int64)
    for e in range(mm):
        rowof[e] = e // m
        colof[e] = e % m
    for t in range(lo, hi):
        r0 = (t // nc) * m
        c0 = (t % nc) * m
        _greedy_order(bits, r0, c0, m, key, mag, order)
        for i in range(m):
            rc[i] = 0
            cc[i] = 0
        kept = 0
        if not record:
            for k in range(mm):
                e = order[k]
                i = rowof[e]
                j = colof[e]
                ok = (rc[i] < n) & (cc[j] < n)  # branch-free: the order is data-dependent
                rc[i] += ok
                cc[j] += ok
                kept += ok
                if ok:
                    out[r0 + i, c0 + j] = True
                if kept == full:
                    break
            continue
        for k in range(mm):
            if kept == full:
                for kk in range(k, mm):
                    blocked[t, kk] = True
                break
            e = order[k]
            i = rowof[e]
            j = colof[e]
            if rc[i] < n and cc[j] < n:
                out[r0 + i, c0 + j] = True
                rc[i] += 1
                cc[j] += 1
                kept += 1
                step[r0 + i, c0 + j] = k
                blocked[t, k] = False
            else:
                blocked[t, k] = rc[i] >= n and cc[j] >= n


# --------------------------------------------------------------------------------------------
# exact conversions from bits (numpy's and the hardware's float conversions are not needed)


@njit(cache=True)
def f16_to_f32_bits(h, out):
    """out[i] = the float32 bit pattern of the float16 whose bits are h[i] (uint16); exact (every
    float16 is a float32 normal number), NaN payloads kept as numpy keeps them."""
    for i in range(h.size):
        v = np.int64(h[i])
        sign = (v & 0x8000) << 16
        ef = (v >> 10) & 0x1F
        f = v & 0x3FF
        if ef == 0x1F:
            r = 0x7F800000 | (f << 13)
        elif ef != 0:
            r = ((ef + 112) << 23) | (f << 13)
        elif f == 0:
            r = 0
        else:  # a subnormal f 2^-24: normalise f to 11 bits
            top = 63 - np.int64(leading_zeros(_u(f)))  # 0..9
            r = ((top + 103) << 23) | ((f << (23 - top)) & 0x7FFFFF)
        out[i] = np.uint32(sign | r)


@njit(cache=True)
def f32_to_f16_bits(x, out):
    """out[i] = the float16 bit pattern of the float32 with bits x[i] (uint32), a float16 value,
    +-inf or NaN (numpy's NaN rule: the payload's top bits, kept a NaN); exact, integer
    operations."""
    for i in range(x.size):
        b = np.int64(x[i])
        sign = (b >> 16) & 0x8000
        a = b & 0x7FFFFFFF
        if a >= 0x7F800000:
            r = 0x7C00 | ((a & 0x7FFFFF) >> 13)
            if a > 0x7F800000 and r == 0x7C00:
                r = 0x7C01
        elif a >= 0x38800000:  # a float16 normal
            r = (((a >> 23) - 112) << 10) | ((a >> 13) & 0x3FF)
        elif a == 0:
            r = 0
        else:  # a float16 subnormal k 2^-24 = (f | 2^23) 2^(ef - 150)
            r = ((a & 0x7FFFFF) | 0x800000) >> (126 - (a >> 23))
        out[i] = np.uint16(sign | r)


@njit(cache=True)
def f64_to_f32_bits_if_exact(x, out):
    """out[i] = the float32 bit pattern of the finite float64 with bits x[i] (uint64), and True,
    when every x[i] is a float32 value; False (out partly written) as soon as one is not."""
    for i in range(x.size):
        c = x[i]
        mag, e = _wfields(c, 52, 0x7FF, 1075)
        if mag != 0:
            top = e + 63 - np.int64(leading_zeros(mag))
            if top > 127:
                return False
            qe = (top if top > -126 else -126) - 23  # the float32 last place at this magnitude
            d = qe - e  # bits of mag below that place
            if d >= 64 or (d > 0 and (mag & ((_ONE64 << _u(d)) - _ONE64)) != 0):
                return False
        out[i] = _f32_pattern(c)
    return True
