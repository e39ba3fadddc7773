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
from numba import njit, prange

from .fast_accumulate import F_DOWN, F_SRBITS, F_SRCMP, _f2u, _step, _u2f, _unpack, fround
from .intrinsics import threefry_rows
from .threefry import threefry2x32

TW = 32  # steps per word tile
_U32 = np.uint32
_SIGN = np.uint64(1 << 63)
_ABS = np.uint64((1 << 63) - 1)
_FRAC = np.uint64((1 << 52) - 1)
_HID = np.uint64(1 << 52)
_EXPM = np.uint64(0x7FF << 52)


@njit(inline="always")
def sr_add(s, p, uw, r, m, emin, qbelow, pow_qbelow, maxbits, ovp, ovn, negzero):
    """Q(s + p) with stochastic rounding, add method (sr_bits = r, word uw < 2**r), when s + p is
    exact in binary64 (no TwoSum residual) and the mode is not ``down``: bit for bit
    fast_accumulate.fstep(s, p, uw, twosum=False, down=False, ..., sr=True, r, cmp=False).

    With |s + p| = ab (binary64 bits, exponent field E) and d = the number of its bits below the
    format's quantum there (52 - m in the normal range, qbelow + 1075 - E below it): rnd's
    decision is inc = (t + uw >= 2**r) with t the top r of the d discarded bits, and its result
    ((ab >> d) + inc) << d. Both come from one integer sum: ((ab >> (d - r)) + uw) >> r equals
    (ab >> d) + inc, since the low r bits of ab >> (d - r) are t. Adding 1 << d to the bits carries
    into the exponent field exactly at the binade's end, where the next power of two is on the
    grid. When d > 52 (|s + p| below the quantum 2**qbelow) the result is 0 or 2**qbelow, decided
    from the significand as in rnd. Overflow, zero sign and non-finite sums as in fstep."""
    hi = s + p
    hb = _f2u(hi)
    ab = hb & _ABS
    E = np.int64(ab >> np.uint64(52))
    Ee = max(E, np.int64(1))
    d = qbelow + 1075 - Ee if Ee - 1023 < emin else 52 - m
    ur = np.uint64(r)
    ud = np.uint64(min(d, np.int64(52)))
    u = np.uint64(uw)
    rab_n = (((ab >> (ud - ur)) + u) >> ur) << ud
    mant = (ab & _FRAC) | (_HID if E != 0 else np.uint64(0))
    t = mant >> np.uint64(min(d - r, np.int64(63)))
    rab_t = _f2u(pow_qbelow) if t + u >= (np.uint64(1) << ur) else np.uint64(0)
    rab = rab_t if d > 52 else rab_n
    res = (ovn if (hb >> np.uint64(63)) != 0 else ovp) if rab > maxbits else (rab | (hb & _SIGN))
    if rab == 0 and not negzero:
        res = np.uint64(0)
    if (hb & _EXPM) == _EXPM:
        res = hb
    return _u2f(res)


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
            threefry_rows(W, nt, _U32(first & 0xFFFFFFFF), _U32(T & 0xFFFFFFFF), N, _U32(first >> 32),
                          k0, k1, shift)
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


@njit(cache=True, parallel=True)
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
    fast = not (twosum or cmp or down)  # sr_add's conditions
    a_m, a_emin, a_qb, a_pq, a_max, a_ovp, a_ovn, _, _, _, _, a_nz, _ = Pa
    k0 = _U32(k0)
    k1 = _U32(k1)
    shift = _U32(shift)
    for n_row in prange(rows_ids.size):
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
                                sc[j] = sr_add(sc[j], a * Bk[j], wr[j], r, a_m, a_emin, a_qb, a_pq, a_max, a_ovp,
                                               a_ovn, a_nz)
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
