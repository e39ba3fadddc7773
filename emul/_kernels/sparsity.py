"""Numba kernels for emul.sparsity.

Kernels take plain arrays and integers; validation, dtype handling and layout live in
emul/sparsity.py.  Every block/tile is computed from its own data (and its own random words) only,
so results never depend on the thread count or on how prange splits the work.

Floating kernels are written once and specialised by Numba for float32 and float64.  Constants
that must be in the block's own dtype (the small integers t = 1..n) come in as the array `tv`
(tv[k] == k in the data dtype): Numba would otherwise promote `int * float32` to float64.
"""

import math

import numpy as np
from numba import njit, prange

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
# MVUE, exact (water-filling + systematic sampling)


@njit(cache=True, error_model="numpy")
def _mvue_exact_block(x, b, n, m, word, tv, big, scale_down, scale_up, a, capped, out):
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
    # overflow guard: if n * (sum of |x|) overflows, work on |x| * 2^-q (exact power-of-two scaling)
    r = zero
    for i in range(m):
        r += a[i]
    scaled = False
    if not (tv[n] * r <= big):
        scaled = True
        for i in range(m):
            a[i] = a[i] * scale_down
    # water-filling: cap the largest remaining element while t * a_max >= R (t = n - #capped)
    ncap = 0
    while True:
        r = zero
        for i in range(m):
            if not capped[i]:
                r += a[i]
        t = n - ncap
        if t == 1:
            break
        imax = -1
        amax = zero
        for i in range(m):
            if not capped[i] and (imax < 0 or a[i] > amax):
                imax = i
                amax = a[i]
        if tv[t] * amax >= r:
            capped[imax] = True
            ncap += 1
        else:
            break
    t = n - ncap
    tf = tv[t]
    v = r / tf
    if scaled:
        v = v * scale_up
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
        d += ai
        if i == last:
            c = np.float64(tf)
        else:
            c = np.float64((tf * d) / r)
        sel = False
        while j < t and u + j < c:  # exact: u has 32 bits, c is a float32/float64 value
            j += 1
            sel = True
        if sel:
            out[b, i] = math.copysign(v, xi)
        else:
            out[b, i] = zero


@njit(cache=True, parallel=True, error_model="numpy")
def mvue_exact_blocks(x, n, words, tv, big, scale_down, scale_up, out):
    """x: (B, m) float32/float64; words: (B,) uint32; out like x."""
    nb, m = x.shape
    nchunk = min(nb, 1024)
    for ch in prange(nchunk):
        lo = ch * nb // nchunk
        hi = (ch + 1) * nb // nchunk
        a = np.empty(m, x.dtype)
        capped = np.empty(m, np.bool_)
        for b in range(lo, hi):
            _mvue_exact_block(x, b, n, m, words[b], tv, big, scale_down, scale_up, a, capped, out)


@njit(cache=True, parallel=True, error_model="numpy")
def mvue_exact24_blocks(x, words, tv, big, scale_down, scale_up, out):
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
        r = a0 + a1 + a2 + a3
        scaled = not (two * r <= big)
        if scaled:
            a0 = a0 * scale_down
            a1 = a1 * scale_down
            a2 = a2 * scale_down
            a3 = a3 * scale_down
            r = a0 + a1 + a2 + a3
        # branch-free from here: the data decide too much for branch prediction
        im = 0
        am = a0
        im = 1 if a1 > am else im
        am = a1 if a1 > am else am
        im = 2 if a2 > am else im
        am = a2 if a2 > am else am
        im = 3 if a3 > am else im
        am = a3 if a3 > am else am
        capped = two * am >= r
        cap = im if capped else -1
        # contributions of the uncapped elements (+0 in place of the capped one: adding +0 to
        # a left-to-right sum changes nothing)
        e0 = zero if cap == 0 else a0
        e1 = zero if cap == 1 else a1
        e2 = zero if cap == 2 else a2
        e3 = zero if cap == 3 else a3
        rc = e0 + e1 + e2 + e3
        r = rc if capped else r
        tf = one if capped else two
        v = r / tf
        if scaled:
            v = v * scale_up
        last = 3 if e3 != 0 else (2 if e2 != 0 else (1 if e1 != 0 else 0))
        d0 = e0
        d1 = d0 + e1
        d2 = d1 + e2
        tf64 = np.float64(tf)
        c0 = tf64 if last <= 0 else np.float64((tf * d0) / r)
        c1 = tf64 if last <= 1 else np.float64((tf * d1) / r)
        c2 = tf64 if last <= 2 else np.float64((tf * d2) / r)
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
def mvue_exact12_blocks(x, words, big, scale_down, scale_up, out):
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
        r = a0 + a1
        scaled = not (r <= big)
        if scaled:  # q = 1
            a0 = a0 * scale_down
            a1 = a1 * scale_down
            r = a0 + a1
            v = r * scale_up
        else:
            v = r
        u = np.float64(words[b]) / _U32
        sel0 = u < np.float64(a0 / r)
        v0 = math.copysign(v, x0)
        v1 = math.copysign(v, x1)
        out[b, 0] = v0 if sel0 else zero
        out[b, 1] = zero if sel0 else v1


# --------------------------------------------------------------------------------------------
# MVUE, approx 2:4 (two successive magnitude-proportional draws, Horvitz-Thompson values)


@njit(cache=True, parallel=True, error_model="numpy")
def mvue_approx24_blocks(x, words, one, big, scale_down, tiny, scale_tiny, out):
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
            s = a0 + a1 + a2 + a3
            if not (s <= big):  # exact power-of-two rescaling: ratios and x_i / pi_i unchanged
                a0 = a0 * scale_down
                a1 = a1 * scale_down
                a2 = a2 * scale_down
                a3 = a3 * scale_down
                s = a0 + a1 + a2 + a3
            elif s < tiny:  # so that 1 / S cannot overflow
                a0 = a0 * scale_tiny
                a1 = a1 * scale_tiny
                a2 = a2 * scale_tiny
                a3 = a3 * scale_tiny
                s = a0 + a1 + a2 + a3
            av[0] = a0
            av[1] = a1
            av[2] = a2
            av[3] = a3
            # sums of all but one element, left to right
            rv[0] = a1 + a2 + a3
            rv[1] = a0 + a2 + a3
            rv[2] = a0 + a1 + a3
            rv[3] = a0 + a1 + a2
            u0 = np.float64(words[2 * b]) / _U32
            u1 = np.float64(words[2 * b + 1]) / _U32
            inv = one / s
            # first draw: smallest i with a_i > 0 and u0 < C_i, C_i = (a_0 + ... + a_i) * (1/S),
            # except C = 1 for the last non-zero element.  The C_i are nondecreasing and a zero
            # a_i repeats C_(i-1): count the C_0..C_2 <= u0, capped at the last non-zero index.
            last = 3 if a3 != 0 else 2  # nz >= 3: one of a2, a3 is non-zero
            d = a0
            first = np.int64(np.float64(d * inv) <= u0)
            d += a1
            first += np.float64(d * inv) <= u0
            d += a2
            first += np.float64(d * inv) <= u0
            first -= np.int64(first > last)
            # second draw: the same over the other three in index order, with 1 / R_first
            # (selects and index arithmetic below, not branches: the draws are unpredictable)
            i0 = 1 if first == 0 else 0  # the remaining three indices, in order
            i1 = 1 if first >= 2 else 2
            i2 = 2 if first == 3 else 3
            b0 = av[i0]
            b1 = av[i1]
            last2 = 2 if av[i2] != 0 else 1  # at least two of them are non-zero
            invf = one / rv[first]
            d = b0
            k = np.int64(np.float64(d * invf) <= u1)
            d += b1
            k += np.float64(d * invf) <= u1
            k -= np.int64(k > last2)
            second = k + np.int64(k >= first)
            for j in range(4):
                tv[j] = av[j] * inv
            # pi_i = t_i + sum_{j != i, index order} t_j (a_i / R_j) (the skipped j adds +0)
            fa = av[first]
            sa = av[second]
            pf = tv[first]
            ps = tv[second]
            for j in range(4):
                rj = rv[j]
                tj = tv[j]
                pf += zero if j == first else tj * (fa / rj)
                ps += zero if j == second else tj * (sa / rj)
            qf = x[b, first] / pf
            qs = x[b, second] / ps
            for i in range(4):
                out[b, i] = qf if i == first else (qs if i == second else zero)


# --------------------------------------------------------------------------------------------
# transposable masks: integer costs per tile


@njit(cache=True)
def _tile_costs(w, r0, c0, m, cost):
    """cost[i, j] = RNE(|w[r0+i, c0+j]| * 2^(50 - e)), 2^(e-1) <= max|w| < 2^e (0 if max is 0)."""
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
        return
    e = math.frexp(mx)[1]
    if 50 - e <= 1000:
        s = math.ldexp(1.0, 50 - e)
        for i in range(m):
            for j in range(m):
                y = abs(np.float64(w[r0 + i, c0 + j])) * s  # exact: power-of-two scaling, <= 2^50
                cost[i, j] = np.int64((y + _TWO52) - _TWO52)  # round half to even (0 <= y < 2^52)
    else:  # tiles of tiny float64 subnormals: 2^(50-e) itself would overflow
        for i in range(m):
            for j in range(m):
                y = math.ldexp(abs(np.float64(w[r0 + i, c0 + j])), 50 - e)
                cost[i, j] = np.int64((y + _TWO52) - _TWO52)


@njit(cache=True)
def _optimal_tile(cost, m, n, x, prow, pcol, excess, dist, prev, done, fixed, queue):
    """Maximum-weight n-regular bipartite b-matching of the m x m tile `cost` (int64), written to
    x (int8, 1 = kept); among optima the lexicographically smallest sorted flat kept-index list.

    Successive shortest paths with potentials, started from each row's top-n (which is optimal
    for the row constraints alone, with potentials prow = the row's n-th largest cost, pcol = 0),
    moving column excess to column deficits.  Then, with the final (optimal) duals, edges of
    nonzero reduced cost are forced; the tight ones are fixed in flat-index order, each one pulled
    into the mask by an alternating cycle of tight undecided edges when one exists.
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
    # lexicographic refinement over tight edges (reduced cost rho = -c + prow - pcol == 0)
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
        for t in range(lo, hi):
            r0 = (t // nc) * m
            c0 = (t % nc) * m
            _tile_costs(w, r0, c0, m, cost)
            _optimal_tile(cost, m, n, x, prow, pcol, excess, dist, prev, done, fixed, queue)
            for i in range(m):
                for j in range(m):
                    out[r0 + i, c0 + j] = x[i, j] == 1


@njit(cache=True, parallel=True)
def transposable_optimal_24(w, cand, out):
    """2:4 by enumeration. cand: (90, 4) int64, the row-pair ids (0..5 for (0,1),(0,2),(0,3),
    (1,2),(1,3),(2,3)) of the 90 tiles, sorted by sorted flat kept-index list; the first
    candidate of maximal integer cost wins."""
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
        for t in range(lo, hi):
            r0 = (t // nc) * m
            c0 = (t % nc) * m
            _tile_costs(w, r0, c0, m, cost)
            for i in range(m):
                for p in range(6):
                    ps[i, p] = cost[i, pa[p]] + cost[i, pb[p]]
            best = 0
            bestv = np.int64(-1)
            for q in range(ncand):
                v = ps[0, cand[q, 0]] + ps[1, cand[q, 1]] + ps[2, cand[q, 2]] + ps[3, cand[q, 3]]
                if v > bestv:
                    bestv = v
                    best = q
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
