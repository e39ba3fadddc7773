"""Numba kernels for emul.sparsity.

Kernels take plain arrays and integers; validation, dtype handling and layout live in
emul/sparsity.py.  Every block/tile is computed from its own data (and its own random words) only,
so results never depend on the thread count or on how prange splits the work.

Floating kernels are written once and specialised by Numba for float32 and float64, and for
float16/bfloat16 data held in float32 with every operation rounded to the data's dtype (the
`tag` argument, see _rd).  Constants that must be in the block's own dtype (the small integers
t = 1..n) come in as the array `tv` (tv[k] == k in the data dtype): Numba would otherwise
promote `int * float32` to float64.

Transposable optimal masks are exact for any float weights: integer costs per tile, refined in
stages on exact remainders when one 50-bit integer cannot hold a tile's values (see
_refine_stage for the invariant and its proof).
"""

import math

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

_U32 = 4294967296.0  # 2**32
_TWO52 = 4503599627370496.0  # 2**52


# --------------------------------------------------------------------------------------------
# top-n magnitude masks


@njit(cache=True, parallel=True)
def nm_mask_blocks(v, n, high_index, out):
    """v: (B, m) float32/float64 values or uint64 magnitudes; out: (B, m) bool.

    Element i of a block is kept iff fewer than n elements of the block beat it, where j beats i
    iff |v_j| > |v_i|, or |v_j| == |v_i| and j < i (j > i when high_index).  NaN is larger than
    every number; NaNs are ordered among themselves by index.
    """
    nb, m = v.shape
    for b in prange(nb):
        for i in range(m):
            ai = abs(v[b, i])
            nan_i = ai != ai
            beaten = 0
            for j in range(m):
                aj = abs(v[b, j])
                nan_j = aj != aj
                gt = (aj > ai) | (nan_j & (not nan_i))
                eq = (aj == ai) | (nan_j & nan_i)
                later = (j > i) if high_index else (j < i)
                beaten += gt | (eq & later)
            out[b, i] = beaten < n


# --------------------------------------------------------------------------------------------
# MVUE arithmetic in the input's dtype
#
# float32/float64 blocks are computed in their own dtype.  float16 and bfloat16 blocks are held
# in float32 (exactly) and every arithmetic result is rounded to the input dtype by _rd: the
# float32 result of +, *, / on two values of a p-bit format (p = 11 or 8) is rounded once more
# to p bits, which gives the correctly rounded p-bit result because 24 >= 2p + 2.  This is what
# numpy float16 and ml_dtypes bfloat16 arithmetic compute, operation by operation.  The kernels
# take a 0-length `tag` array whose dtype selects the rounding at compile time: float32/float64
# (none), uint16 (float16), int16 (bfloat16).


def _rd(y, tag):
    """y rounded to the working dtype selected by tag (see above)."""
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
def _rd_overload(y, tag):
    if isinstance(tag, types.Array) and tag.dtype == types.uint16:
        return lambda y, tag: _rd_f16(y)
    if isinstance(tag, types.Array) and tag.dtype == types.int16:
        return lambda y, tag: _rd_bf16(y)
    return lambda y, tag: y


# --------------------------------------------------------------------------------------------
# MVUE, exact (water-filling + systematic sampling)


@njit(cache=True, error_model="numpy")
def _mvue_exact_block(x, b, n, m, word, tv, big, scale_down, scale_up, a, capped, out, tag):
    """One block of mvue(method="exact"); see the docstring of emul.sparsity.mvue."""
    nz = 0
    finite = True
    for i in range(m):
        xi = x[b, i]
        ai = abs(xi)
        if not (ai <= big):  # NaN or inf (big = the dtype's max)
            finite = False
        a[i] = ai
        if ai != 0:
            nz += 1
        capped[i] = False
    if not finite:
        for i in range(m):
            out[b, i] = np.nan
        return
    zero = a[0] - a[0]
    if nz <= n:
        for i in range(m):
            out[b, i] = x[b, i] if a[i] != 0 else zero
        return
    # overflow guard: if n * (sum of |x|) overflows, work on |x| * 2^-q (power-of-two scaling)
    r = zero
    for i in range(m):
        r = _rd(r + a[i], tag)
    scaled = False
    if not (_rd(tv[n] * r, tag) <= big):
        scaled = True
        for i in range(m):
            a[i] = _rd(a[i] * scale_down, tag)
    # water-filling: cap the largest remaining element while t * a_max >= R (t = n - #capped)
    ncap = 0
    while True:
        r = zero
        for i in range(m):
            if not capped[i]:
                r = _rd(r + a[i], tag)
        t = n - ncap
        if t == 1:
            break
        imax = -1
        amax = zero
        for i in range(m):
            if not capped[i] and (imax < 0 or a[i] > amax):
                imax = i
                amax = a[i]
        if _rd(tv[t] * amax, tag) >= r:
            capped[imax] = True
            ncap += 1
        else:
            break
    t = n - ncap
    tf = tv[t]
    v = _rd(r / tf, tag)
    if scaled:
        v = _rd(v * scale_up, tag)
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
        d = _rd(d + ai, tag)
        if i == last:
            c = np.float64(tf)
        else:
            c = np.float64(_rd(_rd(tf * d, tag) / r, tag))
        sel = False
        while j < t and u + j < c:  # exact: u has 32 bits, c is a float32/float64 value
            j += 1
            sel = True
        if sel:
            out[b, i] = math.copysign(v, xi)
        else:
            out[b, i] = zero


@njit(cache=True, parallel=True, error_model="numpy")
def mvue_exact_blocks(x, n, words, tv, big, scale_down, scale_up, out, tag):
    """x: (B, m) float32/float64; words: (B,) uint32; out like x; tag: see _rd."""
    nb, m = x.shape
    nchunk = min(nb, 1024)
    for ch in prange(nchunk):
        lo = ch * nb // nchunk
        hi = (ch + 1) * nb // nchunk
        a = np.empty(m, x.dtype)
        capped = np.empty(m, np.bool_)
        for b in range(lo, hi):
            _mvue_exact_block(x, b, n, m, words[b], tv, big, scale_down, scale_up, a, capped, out, tag)


@njit(cache=True, parallel=True, error_model="numpy")
def mvue_exact24_blocks(x, words, tv, big, scale_down, scale_up, out, tag):
    """mvue_exact_blocks for n=2, m=4, unrolled (same operations in the same order)."""
    nb = x.shape[0]
    one = tv[1]
    two = tv[2]
    for b in prange(nb):
        x0 = x[b, 0]
        x1 = x[b, 1]
        x2 = x[b, 2]
        x3 = x[b, 3]
        a0 = abs(x0)
        a1 = abs(x1)
        a2 = abs(x2)
        a3 = abs(x3)
        zero = a0 - a0
        if not (a0 <= big and a1 <= big and a2 <= big and a3 <= big):
            for i in range(4):
                out[b, i] = np.nan
            continue
        nz = (a0 != 0) + (a1 != 0) + (a2 != 0) + (a3 != 0)
        if nz <= 2:
            out[b, 0] = x0 if a0 != 0 else zero
            out[b, 1] = x1 if a1 != 0 else zero
            out[b, 2] = x2 if a2 != 0 else zero
            out[b, 3] = x3 if a3 != 0 else zero
            continue
        r = _rd(_rd(_rd(a0 + a1, tag) + a2, tag) + a3, tag)
        scaled = not (_rd(two * r, tag) <= big)
        if scaled:
            a0 = _rd(a0 * scale_down, tag)
            a1 = _rd(a1 * scale_down, tag)
            a2 = _rd(a2 * scale_down, tag)
            a3 = _rd(a3 * scale_down, tag)
            r = _rd(_rd(_rd(a0 + a1, tag) + a2, tag) + a3, tag)
        # branch-free from here: the data decide too much for branch prediction
        im = 0
        am = a0
        im = 1 if a1 > am else im
        am = a1 if a1 > am else am
        im = 2 if a2 > am else im
        am = a2 if a2 > am else am
        im = 3 if a3 > am else im
        am = a3 if a3 > am else am
        capped = _rd(two * am, tag) >= r
        cap = im if capped else -1
        # contributions of the uncapped elements (+0 in place of the capped one: adding +0 to
        # a left-to-right sum changes nothing)
        e0 = zero if cap == 0 else a0
        e1 = zero if cap == 1 else a1
        e2 = zero if cap == 2 else a2
        e3 = zero if cap == 3 else a3
        rc = _rd(_rd(_rd(e0 + e1, tag) + e2, tag) + e3, tag)
        r = rc if capped else r
        tf = one if capped else two
        v = _rd(r / tf, tag)
        if scaled:
            v = _rd(v * scale_up, tag)
        last = 3 if e3 != 0 else (2 if e2 != 0 else (1 if e1 != 0 else 0))
        d0 = e0
        d1 = _rd(d0 + e1, tag)
        d2 = _rd(d1 + e2, tag)
        tf64 = np.float64(tf)
        c0 = tf64 if last <= 0 else np.float64(_rd(_rd(tf * d0, tag) / r, tag))
        c1 = tf64 if last <= 1 else np.float64(_rd(_rd(tf * d1, tag) / r, tag))
        c2 = tf64 if last <= 2 else np.float64(_rd(_rd(tf * d2, tag) / r, tag))
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


@njit(cache=True, parallel=True, error_model="numpy")
def mvue_exact12_blocks(x, words, big, scale_down, scale_up, out, tag):
    """mvue_exact_blocks for n=1, m=2: keep x_0 iff u < a_0 / (a_0 + a_1), value sign * S."""
    nb = x.shape[0]
    for b in prange(nb):
        x0 = x[b, 0]
        x1 = x[b, 1]
        a0 = abs(x0)
        a1 = abs(x1)
        zero = a0 - a0
        if not (a0 <= big and a1 <= big):
            out[b, 0] = np.nan
            out[b, 1] = np.nan
            continue
        if a0 == 0 or a1 == 0:
            out[b, 0] = x0 if a0 != 0 else zero
            out[b, 1] = x1 if a1 != 0 else zero
            continue
        r = _rd(a0 + a1, tag)
        scaled = not (r <= big)
        if scaled:  # q = 1
            a0 = _rd(a0 * scale_down, tag)
            a1 = _rd(a1 * scale_down, tag)
            r = _rd(a0 + a1, tag)
            v = _rd(r * scale_up, tag)
        else:
            v = r
        u = np.float64(words[b]) / _U32
        sel0 = u < np.float64(_rd(a0 / r, tag))
        v0 = math.copysign(v, x0)
        v1 = math.copysign(v, x1)
        out[b, 0] = v0 if sel0 else zero
        out[b, 1] = zero if sel0 else v1


# --------------------------------------------------------------------------------------------
# MVUE, approx 2:4 (two successive magnitude-proportional draws, Horvitz-Thompson values)


@njit(cache=True, parallel=True, error_model="numpy")
def mvue_approx24_blocks(x, words, one, big, scale_down, tiny, scale_tiny, out, tag):
    """x: (B, 4) float32/float64; words: (2B,) uint32 (block b uses 2b and 2b+1); out like x.

    Data-dependent choices index small arrays instead of branching (they are unpredictable)."""
    nb = x.shape[0]
    nchunk = min(nb, 1024)
    for ch in prange(nchunk):
        lo = ch * nb // nchunk
        hi = (ch + 1) * nb // nchunk
        av = np.empty(4, x.dtype)
        rv = np.empty(4, x.dtype)
        tv = np.empty(4, x.dtype)
        for b in range(lo, hi):
            a0 = abs(x[b, 0])
            a1 = abs(x[b, 1])
            a2 = abs(x[b, 2])
            a3 = abs(x[b, 3])
            zero = a0 - a0
            if not (a0 <= big and a1 <= big and a2 <= big and a3 <= big):
                for i in range(4):
                    out[b, i] = np.nan
                continue
            nz = (a0 != 0) + (a1 != 0) + (a2 != 0) + (a3 != 0)
            if nz <= 2:
                for i in range(4):
                    xi = x[b, i]
                    out[b, i] = xi if xi != 0 else zero
                continue
            s = _rd(_rd(_rd(a0 + a1, tag) + a2, tag) + a3, tag)
            if not (s <= big):  # power-of-two rescaling: ratios and x_i / pi_i unchanged
                a0 = _rd(a0 * scale_down, tag)
                a1 = _rd(a1 * scale_down, tag)
                a2 = _rd(a2 * scale_down, tag)
                a3 = _rd(a3 * scale_down, tag)
                s = _rd(_rd(_rd(a0 + a1, tag) + a2, tag) + a3, tag)
            elif s < tiny:  # so that 1 / S cannot overflow
                a0 = _rd(a0 * scale_tiny, tag)
                a1 = _rd(a1 * scale_tiny, tag)
                a2 = _rd(a2 * scale_tiny, tag)
                a3 = _rd(a3 * scale_tiny, tag)
                s = _rd(_rd(_rd(a0 + a1, tag) + a2, tag) + a3, tag)
            av[0] = a0
            av[1] = a1
            av[2] = a2
            av[3] = a3
            # sums of all but one element, left to right
            rv[0] = _rd(_rd(a1 + a2, tag) + a3, tag)
            rv[1] = _rd(_rd(a0 + a2, tag) + a3, tag)
            rv[2] = _rd(_rd(a0 + a1, tag) + a3, tag)
            rv[3] = _rd(_rd(a0 + a1, tag) + a2, tag)
            u0 = np.float64(words[2 * b]) / _U32
            u1 = np.float64(words[2 * b + 1]) / _U32
            inv = _rd(one / s, tag)
            # first draw: smallest i with a_i > 0 and u0 < C_i, C_i = (a_0 + ... + a_i) * (1/S),
            # except C = 1 for the last non-zero element.  The C_i are nondecreasing and a zero
            # a_i repeats C_(i-1): count the C_0..C_2 <= u0, capped at the last non-zero index.
            last = 3 if a3 != 0 else 2  # nz >= 3: one of a2, a3 is non-zero
            d = a0
            first = np.int64(np.float64(_rd(d * inv, tag)) <= u0)
            d = _rd(d + a1, tag)
            first += np.float64(_rd(d * inv, tag)) <= u0
            d = _rd(d + a2, tag)
            first += np.float64(_rd(d * inv, tag)) <= u0
            first -= np.int64(first > last)
            # second draw: the same over the other three in index order, with 1 / R_first
            # (selects and index arithmetic below, not branches: the draws are unpredictable)
            i0 = 1 if first == 0 else 0  # the remaining three indices, in order
            i1 = 1 if first >= 2 else 2
            i2 = 2 if first == 3 else 3
            b0 = av[i0]
            b1 = av[i1]
            last2 = 2 if av[i2] != 0 else 1  # at least two of them are non-zero
            invf = _rd(one / rv[first], tag)
            d = b0
            k = np.int64(np.float64(_rd(d * invf, tag)) <= u1)
            d = _rd(d + b1, tag)
            k += np.float64(_rd(d * invf, tag)) <= u1
            k -= np.int64(k > last2)
            second = k + np.int64(k >= first)
            for j in range(4):
                tv[j] = _rd(av[j] * inv, tag)
            # pi_i = t_i + sum_{j != i, index order} t_j (a_i / R_j) (the skipped j adds +0)
            fa = av[first]
            sa = av[second]
            pf = tv[first]
            ps = tv[second]
            for j in range(4):
                rj = rv[j]
                tj = tv[j]
                pf = _rd(pf + (zero if j == first else _rd(tj * _rd(fa / rj, tag), tag)), tag)
                ps = _rd(ps + (zero if j == second else _rd(tj * _rd(sa / rj, tag), tag)), tag)
            qf = _rd(x[b, first] / pf, tag)
            qs = _rd(x[b, second] / ps, tag)
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
# f = |w| - D * 2^-S (kept as floats in the units of w, where they are exact), each stage
# resolving K more bits; see _refine_stage for the invariant and the proof.

_COST_BITS = 50  # stage costs lie in [0, 2^50]: sums and potentials stay far below 2^62 for m <= 32


@njit(cache=True)
def _rne_signed(y):
    """Round-half-even of a float |y| < 2^51 to int64."""
    if y >= 0.0:
        return np.int64((y + _TWO52) - _TWO52)
    return -np.int64((_TWO52 - y) - _TWO52)


@njit(cache=True)
def _tile_costs(w, r0, c0, m, cost):
    """Stage-1 costs: cost[i, j] = RNE(|w[r0+i, c0+j]| * 2^S), S = 50 - e, 2^(e-1) <= max|w| < 2^e
    (S = 0 and all costs 0 for an all-zero tile).  Returns (S, exact): exact is True when every
    |w| * 2^S is an integer, i.e. the costs are the exact magnitudes times 2^S."""
    mx = 0.0
    for i in range(m):
        for j in range(m):
            v = abs(np.float64(w[r0 + i, c0 + j]))
            if v > mx:
                mx = v
    if mx == 0.0:
        for i in range(m):
            for j in range(m):
                cost[i, j] = 0
        return 0, True
    e = math.frexp(mx)[1]
    sc = _COST_BITS - e
    exact = True
    if sc <= 1000:
        s = math.ldexp(1.0, sc)
        frac = 0.0
        for i in range(m):
            for j in range(m):
                y = abs(np.float64(w[r0 + i, c0 + j])) * s  # exact unless it underflows (sc < 0)
                d = (y + _TWO52) - _TWO52  # round half to even (0 <= y <= 2^50)
                cost[i, j] = np.int64(d)
                frac = max(frac, y - d if y >= d else d - y)
        exact = frac == 0.0
        if exact and sc < 0:  # a product that underflowed to 0 is not exact
            for i in range(m):
                for j in range(m):
                    if cost[i, j] == 0 and w[r0 + i, c0 + j] != 0:
                        exact = False
    else:  # tiles of tiny float64 subnormals: 2^sc itself would overflow; scaling up is exact
        for i in range(m):
            for j in range(m):
                y = math.ldexp(abs(np.float64(w[r0 + i, c0 + j])), sc)
                d = np.int64((y + _TWO52) - _TWO52)
                cost[i, j] = d
                exact &= y == d
    return sc, exact


@njit(cache=True)
def _remainders(w, r0, c0, m, cost, sc, rem):
    """rem[i, j] = |w| - cost[i, j] * 2^-sc, exactly (see _refine_stage)."""
    q = math.ldexp(1.0, -sc)
    fast = -1022 <= sc <= 1022  # cost * 2^-sc is then a product by a normal power of two
    for i in range(m):
        for j in range(m):
            d = np.float64(cost[i, j])
            dq = d * q if fast else math.ldexp(d, -sc)
            rem[i, j] = abs(np.float64(w[r0 + i, c0 + j])) - dq


@njit(cache=True)
def _next_digits(rem, m, sc, dig):
    """dig[i, j] = RNE(rem[i, j] * 2^sc) and rem[i, j] -= dig[i, j] * 2^-sc, exactly: rem * 2^sc
    is exact or underflows below 1/2 (digit 0, rem unchanged); the digit times 2^-sc and the
    difference are exact floats (multiples of the ulp of rem with at most 53 bits).  Returns
    whether any remainder is left."""
    p = math.ldexp(1.0, sc)
    q = math.ldexp(1.0, -sc)
    fast = -1022 <= sc <= 1022
    left = False
    for i in range(m):
        for j in range(m):
            r = rem[i, j]
            y = r * p if fast else math.ldexp(r, sc)
            d = _rne_signed(y)
            dig[i, j] = d
            if d != 0:
                r -= (np.float64(d) * q) if fast else math.ldexp(np.float64(d), -sc)
                rem[i, j] = r
            left |= r != 0.0
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
def _refine_stage(cost, m, n, x, prow, pcol, rem, forced, sc, dig, indeg, queue):
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
    rem 2^(sc+K) is exact or underflows below 1/2 (RNE 0, rem unchanged); RNE(.) 2^-(sc+K) and
    the difference are exact floats (multiples of the ulp of rem, of at most 53 bits).
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
                rem[i, j] = 0.0
            else:
                more |= rem[i, j] != 0.0
                free_out |= x[i, j] == 0
    if not (more and free_out) or _free_acyclic(x, forced, m, indeg, queue):
        return sc
    a = np.int64(nm + 1)
    k = _COST_BITS - 1 - _bit_length(a)  # 2 a 2^k <= 2^50
    sk = np.int64(1) << k
    nsc = sc + k
    # forced edges have rem = 0, hence digit 0
    _next_digits(rem, m, nsc, dig)
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
def _solve_tile(w, r0, c0, m, n, cost, x, prow, pcol, excess, dist, prev, done, fixed, queue, rem, forced,
                dig):
    """The exact optimal tile (maximum sum of kept |w|, lexicographically smallest among optima)."""
    sc, exact = _tile_costs(w, r0, c0, m, cost)
    _ssp_tile(cost, m, n, x, prow, pcol, excess, dist, prev, done)
    if not exact:
        _remainders(w, r0, c0, m, cost, sc, rem)
        for k in range(m * m):
            forced[k] = 0
        while True:
            nsc = _refine_stage(cost, m, n, x, prow, pcol, rem, forced, sc, dig, dist, queue)
            if nsc == sc:
                break
            sc = nsc
            _ssp_tile(cost, m, n, x, prow, pcol, excess, dist, prev, done)
    _lex_tile(cost, m, x, prow, pcol, prev, done, fixed, queue)


@njit(cache=True, parallel=True)
def transposable_optimal(w, n, m, out):
    """w: (R, C) float32/float64 with m | R and m | C; out: (R, C) bool."""
    nr = w.shape[0] // m
    nc = w.shape[1] // m
    nt = nr * nc
    nchunk = min(nt, 1024)
    for ch in prange(nchunk):
        lo = ch * nt // nchunk
        hi = (ch + 1) * nt // nchunk
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
        rem = np.empty((m, m), np.float64)
        forced = np.empty(m * m, np.int8)
        dig = np.empty((m, m), np.int64)
        for t in range(lo, hi):
            r0 = (t // nc) * m
            c0 = (t % nc) * m
            _solve_tile(w, r0, c0, m, n, cost, x, prow, pcol, excess, dist, prev, done, fixed, queue,
                        rem, forced, dig)
            for i in range(m):
                for j in range(m):
                    out[r0 + i, c0 + j] = x[i, j] == 1


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
def _best24_exact(w, r0, c0, cand, cost, ps, sc, bestv, rem, off, live):
    """The first candidate of maximal exact kept sum when the stage-1 costs are not exact.

    With o_q = (candidate cost sum - best cost sum) in units of 2^-sc and |rem| <= 2^-sc / 2,
    a candidate's exact sum is const + 2^-sc (o_q + r_q) with |r_q| <= 4 (8 kept edges), so
    only candidates with o_q >= -8 can be optimal.  Each further stage multiplies the offsets of
    those by 2^50 and adds their sums of the next RNE digits of the remainders (_next_digits);
    offsets stay within [-8 * 2^50 - 2^52, 2^52].  When no remainder is left the offsets are
    exact and the first maximal one wins."""
    _remainders(w, r0, c0, 4, cost, sc, rem)
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
        left = _next_digits(rem, 4, sc, cost)
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


@njit(cache=True, parallel=True)
def transposable_optimal_24(w, cand, out):
    """2:4 by enumeration. cand: (90, 4) int64, the row-pair ids (0..5 for (0,1),(0,2),(0,3),
    (1,2),(1,3),(2,3)) of the 90 tiles, sorted by sorted flat kept-index list; the first
    candidate of maximal exact kept sum wins (integer costs of _tile_costs when exact, else
    _best24_exact)."""
    m = 4
    nr = w.shape[0] // m
    nc = w.shape[1] // m
    nt = nr * nc
    nchunk = min(nt, 1024)
    pa = (0, 0, 0, 1, 1, 2)
    pb = (1, 2, 3, 2, 3, 3)
    ncand = cand.shape[0]
    for ch in prange(nchunk):
        lo = ch * nt // nchunk
        hi = (ch + 1) * nt // nchunk
        cost = np.empty((m, m), np.int64)
        ps = np.empty((m, 6), np.int64)
        rem = np.empty((m, m), np.float64)
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
                    best = _best24_exact(w, r0, c0, cand, cost, ps, sc, bestv, rem, off, live)
            for i in range(m):
                p = cand[best, i]
                for j in range(m):
                    out[r0 + i, c0 + j] = (j == pa[p]) or (j == pb[p])


# --------------------------------------------------------------------------------------------
# transposable masks: greedy 2-approximation


@njit(cache=True)
def _greedy_order(w, bits, packed, r0, c0, m, key, mag, order):
    """order = flat tile indices sorted by (-|w|, flat index), through ranks: element k goes to
    position #{l : |w_l| > |w_k| or (|w_l| == |w_k| and l < k)}.  With `packed` (float32 data),
    the rank counts int64 keys (|w| bits << 32 | (m*m - 1 - k)), which vectorises well."""
    mm = m * m
    if packed:
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
                mag[i * m + j] = abs(np.float64(w[r0 + i, c0 + j]))
        for k in range(mm):
            ak = mag[k]
            rank = 0
            for l in range(k):
                rank += mag[l] >= ak
            for l in range(k + 1, mm):
                rank += mag[l] > ak
            order[rank] = k


@njit(cache=True, parallel=True)
def transposable_greedy(w, bits, packed, n, m, out, step, blocked, record):
    """Full greedy per tile.  out (all False on entry): kept mask.  bits: w viewed as uint32 when
    packed (float32 w).  If record: step[r, c] (all -1 on entry) = visiting step at which the
    element was kept; blocked[t, k] = the candidate of step k had both its row and its column
    already full (for the reference's batch-global early stop)."""
    nr = w.shape[0] // m
    nc = w.shape[1] // m
    nt = nr * nc
    mm = m * m
    full = n * m
    nchunk = min(nt, 1024)
    for ch in prange(nchunk):
        lo = ch * nt // nchunk
        hi = (ch + 1) * nt // nchunk
        key = np.empty(mm, np.int64)
        mag = np.empty(mm, np.float64)
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
            _greedy_order(w, bits, packed, r0, c0, m, key, mag, order)
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
