"""Row-wise dot products (``emul.dot(a, b, acc, axis=-1)``) with a float accumulator, vectorised.

The steps are fast_accumulate's (``rne_step`` / ``fstep`` via ``_step``) under the same
conditions and proofs; only the data layout differs from the matmul kernels. Row r of A and B
(R x K, float64, row-major) is output element r and uses SR words ``r * T + t`` in the order of
its steps (emul/accumulate.py's layout; words as in emul/_kernels/sr_accumulate.py).

* sequential and chunked: LANES rows side by side; each tile of TK products of those rows is
  formed into a (TK, LANES) block (the transposition happens in L1) and the steps run over the
  lanes, as the matmul kernels run over an output row.
* pairwise: one row at a time, each tree level vectorised over its pairs (ping-pong buffers);
  a level's SR words are consecutive, so they are read (or generated) contiguously.

Products are formed here and checked exact, from bits: both operands 0 or with exponent fields
in [2**-400, 2**500) (so every product is 0 or normal, and its rounding error, a multiple of
2**-904, is 0 or normal) and the FMA residual x*y - fl(x*y) zero. The kernels return False when
some product fails (the caller then takes the exact general path); results of non-finite rows
are flagged in ``bad`` for the caller to recompute with the general kernel. TwoSum always runs.
"""

import numpy as np
from numba import njit, prange

from .fast_accumulate import (_ABS, _ROW_EHI, _ROW_ELO, _U0, F_DOWN, F_SR, F_SRBITS, F_SRCMP, _f2u, _fma, _step,
                              _unpack, _unpack_rne, fround)
from .threefry import threefry2x32

LANES = 32  # rows side by side (sequential, chunked)
TK = 128  # products per row and tile
_U32 = np.uint32


@njit(inline="always")
def _exact(x, y):
    """Whether x*y is exact in binary64 and 0 or normal (operands and residual checked from bits)."""
    bx = _f2u(x) & _ABS
    by = _f2u(y) & _ABS
    ex = bx >> np.uint64(52)
    ey = by >> np.uint64(52)
    return (((bx == _U0) | ((ex >= _ROW_ELO) & (ex < _ROW_EHI)))
            & ((by == _U0) | ((ey >= _ROW_ELO) & (ey < _ROW_EHI))) & (_fma(x, y, -(x * y)) == 0.0))


@njit(inline="always")
def _word(w, k0, k1, shift, gen, u):
    if gen:
        y0, y1 = threefry2x32(k0, k1, _U32(w >> 32), _U32(w & 0xFFFFFFFF))
        return _U32(y0 ^ y1) >> shift
    return _U32(u[w])


@njit(cache=True, parallel=True)
def rowwise_float(A, B, init, order, chunk, Fa, Fo, Fp, Ra, Ro, has_prod, rne, k0, k1, shift, gen, u, T, out, bad):
    """out[r] = the row-wise dot product of A[r] and B[r] from init[r % init.size] (float64
    values of the final format), orders 0 sequential / 1 pairwise / 2 chunked (``chunk``; outer
    parameters Fo/Ro). ``rne``: nearest_even on rne_step (Ra/Ro); SR when Fa says so, with words
    from (k0, k1, shift, gen, u) as in sr_accumulate. Returns False when a product is not exact."""
    R, K = A.shape
    Pa = _unpack(Fa)
    Po = _unpack(Fo)
    Qa = _unpack_rne(Ra)
    Qo = _unpack_rne(Ro)
    p_m, p_emin, p_qb, p_pq, p_max, p_ovp, p_ovn, p_near, p_k0, p_ks, p_kl, p_nz, p_sub = _unpack(Fp)
    sr = Fa[F_SR] != 0
    r = Fa[F_SRBITS]
    cmp = Fa[F_SRCMP] != 0
    down = Fa[F_DOWN] != 0
    k0 = _U32(k0)
    k1 = _U32(k1)
    shift = _U32(shift)
    if order == 1:
        okr = np.ones(R, np.bool_)
        for row in prange(R):
            x = np.empty(max(K, 1), np.float64)
            y = np.empty(max(K, 1), np.float64)
            w = np.zeros(max(K // 2, 1), np.uint32)
            unfit = 0
            for k in range(K):
                a = A[row, k]
                b = B[row, k]
                unfit += 0 if _exact(a, b) else 1
                p = a * b
                if has_prod:
                    p = fround(p, p_m, p_emin, p_qb, p_pq, p_max, p_ovp, p_ovn, p_near, p_k0, p_ks, p_kl, p_nz)
                x[k] = p
            if unfit:
                okr[row] = False
                continue
            base = row * T
            t = 0
            n = K
            while n > 1:
                half = n // 2
                if sr:
                    for q in range(half):
                        w[q] = _word(base + t + q, k0, k1, shift, gen, u)
                    for q in range(half):
                        y[q] = _step(x[2 * q], x[2 * q + 1], w[q], False, True, down, True, r, cmp, Pa, Qa)
                elif rne:
                    for q in range(half):
                        y[q] = _step(x[2 * q], x[2 * q + 1], 0, True, True, down, False, r, cmp, Pa, Qa)
                else:
                    for q in range(half):
                        y[q] = _step(x[2 * q], x[2 * q + 1], 0, False, True, down, False, r, cmp, Pa, Qa)
                if n % 2:  # an odd last element passes up unchanged
                    y[half] = x[n - 1]
                t += half
                n = half + n % 2
                x, y = y, x
            uw = _word(base + t, k0, k1, shift, gen, u) if sr else _U32(0)
            s = _step(init[row % init.size], x[0], uw, rne, True, down, sr, r, cmp, Pa, Qa)
            out[row] = s
            bad[row] = 0 if np.isfinite(s) else 1
        return okr.all()
    nblk = (R + LANES - 1) // LANES
    okb = np.ones(nblk, np.bool_)
    step_len = chunk if order == 2 else K
    for c in prange(nblk):
        r0 = c * LANES
        n = min(LANES, R - r0)
        s = np.zeros(LANES, np.float64)
        for j in range(n):
            s[j] = init[(r0 + j) % init.size]
        sc = np.zeros(LANES, np.float64)
        stage = np.zeros((TK, LANES), np.float64)
        W = np.zeros((TK, LANES), np.uint32)
        unfit = 0  # first the check, over the block's rows in memory order (a loop LLVM vectorises)
        for j in range(n):
            for k in range(K):
                unfit += 0 if _exact(A[r0 + j, k], B[r0 + j, k]) else 1
        if unfit:
            okb[c] = False
            continue
        for c0 in range(0, K, step_len):
            c1 = min(c0 + step_len, K)
            for j in range(LANES):
                sc[j] = 0.0 if order == 2 else s[j]
            for t0 in range(c0, c1, TK):
                nt = min(TK, c1 - t0)
                for j in range(n):
                    for tt in range(nt):
                        stage[tt, j] = A[r0 + j, t0 + tt] * B[r0 + j, t0 + tt]
                if has_prod:
                    for tt in range(nt):
                        for j in range(LANES):
                            stage[tt, j] = fround(stage[tt, j], p_m, p_emin, p_qb, p_pq, p_max, p_ovp, p_ovn, p_near,
                                                  p_k0, p_ks, p_kl, p_nz)
                if sr:
                    for tt in range(nt):
                        for j in range(n):
                            W[tt, j] = _word((r0 + j) * T + t0 + tt, k0, k1, shift, gen, u)
                    for tt in range(nt):
                        for j in range(LANES):
                            sc[j] = _step(sc[j], stage[tt, j], W[tt, j], False, True, down, True, r, cmp, Pa, Qa)
                elif rne:
                    for tt in range(nt):
                        for j in range(LANES):
                            sc[j] = _step(sc[j], stage[tt, j], 0, True, True, down, False, r, cmp, Pa, Qa)
                else:
                    for tt in range(nt):
                        for j in range(LANES):
                            sc[j] = _step(sc[j], stage[tt, j], 0, False, True, down, False, r, cmp, Pa, Qa)
            if order == 2:  # words: the K chunk steps first, then the outer steps
                t_outer = K + c0 // step_len
                for j in range(n):
                    W[0, j] = _word((r0 + j) * T + t_outer, k0, k1, shift, gen, u) if sr else _U32(0)
                for j in range(LANES):
                    s[j] = _step(s[j], sc[j], W[0, j], rne, True, down, sr, r, cmp, Po, Qo)
            else:
                for j in range(LANES):
                    s[j] = sc[j]
        for j in range(n):
            out[r0 + j] = s[j]
            bad[r0 + j] = 0 if np.isfinite(s[j]) else 1
    return okb.all()
