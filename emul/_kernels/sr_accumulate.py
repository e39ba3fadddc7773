"""Stochastic-rounding float accumulators, vectorised over the output row (fast_accumulate's lanes).

The step is fast_accumulate's ``fstep`` (its proof covers SR: the discarded fraction's top
sr_bits are read from the binary64 bits); what this module adds is where the words come from.
Output element e (flat C-order index over the output, e = row * N + j) uses words
``e * T + t`` for its T steps in execution order (emul/accumulate.py's layout). The words of
t0 … t0 + nt - 1 for the whole row are staged in a (nt, N) tile, so that the step loop reads
them contiguously over j:

* from ``u`` (the caller's or materialised words), read row by row of ``u`` (contiguous over t);
* or generated in place (``gen``): word w is ``(y0 ^ y1) >> shift`` with (y0, y1) =
  Threefry-2x32 of the counter (w >> 32, w & 0xFFFFFFFF) under key (k0, k1), exactly as
  ``emul.random.bits(key, ...)`` and ``emul.quantize.sr_words`` define it (shift = 32 - sr_bits),
  without the (out.size * T)-word array.

A word depends only on its index, so results never depend on the thread count or the tiling.
Orders: 0 sequential, 1 pairwise, 2 chunked (the K chunk steps' words first, then the outer
steps'), as in emul/_kernels/accumulate.py. Conditions: those of fast_accumulate.float_rows.
"""

import numpy as np
from numba import njit

from .fast_accumulate import F_DOWN, F_SRBITS, F_SRCMP, _f2u, _step, _u2f, _unpack, fround
from .intrinsics import threefry_rows
from .threefry import threefry2x32

TW = 32  # steps per word tile
_U32 = np.uint32
_SIGN = np.uint64(1 << 63)
_ABS = np.uint64((1 << 63) - 1)


@njit(inline="always")
def sr_add_params(m, emin, qbelow, maxbits, negzero):
    """(ok, D, emin_bits, bias, zadd) of sr_add for a format (fast_accumulate._unpack's fields).
    ok: the format meets sr_add's condition qbelow + m <= emax + 1 (the bias is at most 2**(emax+1))."""
    ok = qbelow + m + 1023 <= np.int64(maxbits >> np.uint64(52)) + 1
    bias = _u2f(np.uint64(max(qbelow + m + 1023, 1)) << np.uint64(52))
    return ok, np.uint64(52 - m), np.uint64(emin + 1023) << np.uint64(52), bias, 0.0 if not negzero else -0.0


@njit(inline="always")
def sr_add(s, p, uw, r, D, emin_bits, bias, maxbits, ovp, ovn, zadd):
    """Q(s + p) with stochastic rounding, add method (r = sr_bits, word uw < 2**r), for the
    sequential steps without TwoSum: bit for bit fast_accumulate.fstep(s, p, uw, twosum=False,
    down=False, ..., sr=True, r, cmp=False) when

    * s + p is exact in binary64, and if |s + p| < 2**emin a multiple of 2**(qbelow + m - 52);
    * r <= D = 52 - m, and B = 2**(qbelow + m) <= 2**(emax + 1) (sr_add_params' ``ok``);
    * the format's quantum 2**qbelow is at least 2**-1022 (every value formed is 0 or normal).

    (emul/accumulate.py's single-grid condition gives the first: every operand is a multiple of
    2**q with max(top) + 1 - q <= 53 and 2**(qbelow + m) <= 2**(emax + 1) <= 2**max(top).) A
    non-finite s + p gives a non-finite result (±inf as fstep; a NaN's bits may differ): the
    caller recomputes such rows.

    x = |s + p|. In the binade [2**e, 2**(e+1)) with e >= emin the format's quantum is 2**(e - m),
    i.e. the binary64 bits of x below bit D. Below 2**emin the quantum is 2**qbelow everywhere
    (subnormals: qbelow = emin - m; without: qbelow = emin, the grid 0, 2**emin): there
    x' = x + B is exact (x < 2**emin <= B and x is a multiple of 2**(qbelow + m - 52)), lies in
    [B, 2B) whose quantum at m bits is 2**qbelow, and the grid points q of [0, 2**emin] map to
    q + B. So in both cases SR is on the bits of x' (x' = x when x >= 2**emin) with the fixed
    cut D: rnd's decision is inc = (t + uw >= 2**r), t the top r of the D discarded bits, and the
    result ((x' >> D) + inc) << D; both come from one integer sum, ((x' >> (D - r)) + uw) >> r =
    (x' >> D) + inc, since the low r bits of x' >> (D - r) are t. A carry out of the significand
    lands on the next power of two (on the grid). The result minus B (below 2**emin) is exact:
    a multiple of 2**qbelow in [0, 2**emin]. Then overflow (> max: ovp or ovn by the sign of
    s + p), the sign, and zadd (+0.0 without -0 in the format, else -0.0) turns -0 into +0 only
    where the format has no -0, as fstep's zero rule (s + p = ±0 gives ±0)."""
    hi = s + p
    hb = _f2u(hi)
    ab = hb & _ABS
    small = ab < emin_bits
    bs = bias if small else 0.0
    xb = _f2u(_u2f(ab) + bs)
    rb = _f2u(_u2f((((xb >> (D - r)) + np.uint64(uw)) >> r) << D) - bs)
    neg = np.int64(hb) < 0
    res = (ovn if neg else ovp) if rb > maxbits else (rb | (hb & _SIGN))
    return _u2f(res) + zadd


@njit(inline="always")
def fill_words(W, nt, base, t0, N, T, k0, k1, shift, gen, u):
    """W[tt, j] = word (base + j * T + t0 + tt) for tt < nt, j < N.

    Generated words: when the tile's counters share their high 32 bits (every call unless the
    output has more than 2**32 / T elements per row boundary), intrinsics.threefry_rows makes
    them in 32-bit vector lanes; otherwise one at a time, with the 64-bit counter split per word."""
    if gen:
        first = base + t0
        last = first + (N - 1) * T + nt - 1
        if (first >> 32) == (last >> 32):
            threefry_rows(W, np.int64(nt), _U32(first & 0xFFFFFFFF), _U32(T & 0xFFFFFFFF), np.int64(N),
                          _U32(first >> 32), _U32(k0), _U32(k1), _U32(shift))
        else:
            for tt in range(nt):
                for j in range(N):
                    w = base + j * T + t0 + tt
                    y0, y1 = threefry2x32(k0, k1, _U32(w >> 32), _U32(w & 0xFFFFFFFF))
                    W[tt, j] = _U32(y0 ^ y1) >> shift
    else:
        for j in range(N):
            for tt in range(nt):
                W[tt, j] = u[base + j * T + t0 + tt]


@njit(cache=True, nogil=True)
def sr_rows(A3, B3, ia, ib, M, N, K, order, chunk, init, Fa, Fo, Fp, has_prod, twosum, k0, k1, shift, gen, u, T,
            rows_ids, out, bad):
    """Rows ``rows_ids`` of the product with a float accumulator and stochastic rounding: out[n]
    is output row rows_ids[n] (float64); bad[n] = 1 when a value in it is not finite (the caller
    recomputes those elements with the general kernel). Arguments as fast_accumulate.float_rows,
    plus the word source (k0, k1, shift, gen, u) described in the module docstring."""
    Pa = _unpack(Fa)
    Po = _unpack(Fo)
    Qa = (False, np.uint64(0), np.uint64(0), np.uint64(0), np.uint64(0), 0.0, np.uint64(0), 0.0)  # RNE unused
    p_m, p_emin, p_qb, p_pq, p_max, p_ovp, p_ovn, p_near, p_k0, p_ks, p_kl, p_nz, p_sub = _unpack(Fp)
    r = Fa[F_SRBITS]
    cmp = Fa[F_SRCMP] != 0
    down = Fa[F_DOWN] != 0
    a_m, a_emin, a_qb, a_pq, a_max, a_ovp, a_ovn, _, _, _, _, a_nz, _ = Pa
    a_ok, a_D, a_eb, a_bias, a_zadd = sr_add_params(a_m, a_emin, a_qb, a_max, a_nz)
    fast = a_ok and not (twosum or cmp or down)  # sr_add's conditions
    ur = np.uint64(r)
    k0 = _U32(k0)
    k1 = _U32(k1)
    shift = _U32(shift)
    for n_row in range(rows_ids.size):
        row = rows_ids[n_row]
        b = row // M
        i = row - b * M
        A = A3[ia[b]]
        B = B3[ib[b]]
        base = row * N * T
        W = np.empty((TW, N), np.uint32)
        s = np.empty(N, np.float64)
        for j in range(N):
            s[j] = init[(row * N + j) % init.size]
        if order == 1:  # pairwise: leaves are the (product-rounded) products
            nodes = np.empty((K, N), np.float64)
            sc = np.empty(N, np.float64)
            for k in range(K):
                a = A[i, k]
                for j in range(N):
                    p = a * B[k, j]
                    if has_prod:
                        p = fround(p, p_m, p_emin, p_qb, p_pq, p_max, p_ovp, p_ovn, p_near, p_k0, p_ks, p_kl, p_nz)
                    nodes[k, j] = p
            t = 0
            t_end = 0  # words W[0 : t_end - t_tile] hold steps t_tile …
            t_tile = 0
            n = K
            while n > 1:
                half = n // 2
                for q in range(half):
                    if t >= t_end:
                        t_tile = t
                        t_end = min(t + TW, T)
                        fill_words(W, t_end - t_tile, base, t_tile, N, T, k0, k1, shift, gen, u)
                    wr = W[t - t_tile]
                    x = nodes[2 * q]
                    y = nodes[2 * q + 1]
                    for j in range(N):
                        sc[j] = _step(x[j], y[j], wr[j], False, twosum, down, True, r, cmp, Pa, Qa)
                    nodes[q, :] = sc  # row q is read at pair q only (2q >= q): safe to overwrite now
                    t += 1
                if n % 2:
                    for j in range(N):
                        nodes[half, j] = nodes[n - 1, j]
                n = half + n % 2
            fill_words(W, 1, base, t, N, T, k0, k1, shift, gen, u)
            for j in range(N):
                s[j] = _step(s[j], nodes[0, j], W[0, j], False, twosum, down, True, r, cmp, Pa, Qa)
        else:  # sequential (one chunk of length K, from init) or chunked
            step_len = chunk if order == 2 else K
            sc = np.empty(N, np.float64)
            for c0 in range(0, K, step_len):
                c1 = min(c0 + step_len, K)
                for j in range(N):
                    sc[j] = 0.0 if order == 2 else s[j]
                for t0 in range(c0, c1, TW):
                    nt = min(TW, c1 - t0)
                    fill_words(W, nt, base, t0, N, T, k0, k1, shift, gen, u)
                    for tt in range(nt):
                        a = A[i, t0 + tt]
                        Bk = B[t0 + tt]
                        wr = W[tt]
                        if has_prod:
                            for j in range(N):
                                p = fround(a * Bk[j], p_m, p_emin, p_qb, p_pq, p_max, p_ovp, p_ovn, p_near, p_k0,
                                           p_ks, p_kl, p_nz)
                                sc[j] = _step(sc[j], p, wr[j], False, twosum, down, True, r, cmp, Pa, Qa)
                        elif fast:
                            for j in range(N):
                                sc[j] = sr_add(sc[j], a * Bk[j], wr[j], ur, a_D, a_eb, a_bias, a_max, a_ovp, a_ovn,
                                               a_zadd)
                        else:
                            for j in range(N):
                                sc[j] = _step(sc[j], a * Bk[j], wr[j], False, twosum, down, True, r, cmp, Pa, Qa)
                if order == 2:  # words: the K chunk steps first, then the outer steps
                    fill_words(W, 1, base, K + c0 // step_len, N, T, k0, k1, shift, gen, u)
                    for j in range(N):
                        s[j] = _step(s[j], sc[j], W[0, j], False, twosum, down, True, r, cmp, Po, Qa)
                else:
                    for j in range(N):
                        s[j] = sc[j]
        flag = 0
        for j in range(N):
            out[n_row, j] = s[j]
            if not np.isfinite(s[j]):
                flag = 1
        bad[n_row] = flag
