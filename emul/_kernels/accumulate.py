"""Numba kernel of dot/matmul: the general path, one output element at a time, exact steps.

Every product is exact (a 128-bit integer) or rounded once to the product format; every
accumulation step forms the exact sum of the running value and the new term (emul/_kernels/
wide.py) and rounds it once, overflow rule included, with the core's rounding. Nothing here is
approximate, so this path defines the results; the fast paths (fast_accumulate.py) are tested
equal to it.

Operands are read from their bits and results written from bits (``round.parts``,
``round.code_value``), so the thread's MXCSR (flush-to-zero, denormals-are-zero) plays no part.

Output element ``idx`` (C order over the output) uses random words ``u[idx*T : idx*T + T]`` in
the order its rounding steps execute. Orders: 0 sequential, 1 pairwise, 2 chunked.
"""

import numpy as np
from numba import njit

from . import round as R
from . import wide as W

SEQUENTIAL, PAIRWISE, CHUNKED = 0, 1, 2
# Error flags (per output element; the first error of an element stops it).
ACC_NAN, ACC_INF, PROD_NAN, PROD_INF = 1, 2, 3, 4

_Z = np.uint64(0)
BLOCK = 16  # output elements per task (pairwise scratch is allocated once per task)


@njit
def product(va, vb, has_prod, Pp):
    """(kind, sign, hi, lo, e, flag) of a·b, exact or rounded once to the product format."""
    kind, sign, hi, lo, e = W.mul_exact(va, vb)
    if not has_prod:
        return kind, sign, hi, lo, e, 0
    if kind == W.FINITE:
        code, flag = W.finish(sign, _Z, hi, lo, e, False, _Z, Pp)
    else:
        code, flag = W.special_code(kind, sign, Pp)
        if flag:
            return kind, sign, hi, lo, e, PROD_NAN if flag == W.BAD_NAN else PROD_INF
    kind, sign, mag, e = W.code_parts(code, Pp)
    return kind, sign, _Z, mag, e, 0


@njit
def step(kx, sx, xh, xl, ex, ky, sy, yh, yl, ey, u, P):
    """Q_P(x + y): (code, flag) with flag ACC_NAN / ACC_INF when the result cannot go into P."""
    kind, sign, w2, w1, w0, fe, st = W.sum_exact(kx, sx, xh, xl, ex, ky, sy, yh, yl, ey, P)
    if kind != W.FINITE:
        code, flag = W.special_code(kind, sign, P)
        return code, (ACC_NAN if flag == W.BAD_NAN else ACC_INF) if flag else 0
    code, flag = W.finish(sign, w2, w1, w0, fe, st, u, P)
    return code, 0  # sums never need more bits than their frame holds (wide.add_frame)


@njit
def word(u, sr, i):
    return np.uint64(u[i]) if sr else _Z


@njit
def sequential_codes(A3, B3, a_i, b_i, i, j, k0, k1, start, Pacc, has_prod, Pp, u, sr, t):
    """Q_acc steps over products k0…k1-1 from the code ``start``; (code, next word index, flag)."""
    s = start
    for k in range(k0, k1):
        pk, ps, ph, pl, pe, flag = product(A3[a_i, i, k], B3[b_i, k, j], has_prod, Pp)
        if flag:
            return s, t, flag
        sk, ss, sm, se = W.code_parts(s, Pacc)
        s, flag = step(sk, ss, _Z, sm, se, pk, ps, ph, pl, pe, word(u, sr, t), Pacc)
        t += 1
        if flag:
            return s, t, flag
    return s, t, 0


@njit
def one_output(A3, B3, a_i, b_i, i, j, K, order, chunk, init, Pacc, Pout, has_prod, Pp, u, sr, t,
               nk, ns, nh, nl, ne):
    """(code in the final format, flag) of one output element."""
    if order == SEQUENTIAL:
        code, t, flag = sequential_codes(A3, B3, a_i, b_i, i, j, 0, K, init, Pacc, has_prod, Pp, u, sr, t)
        return code, flag
    if order == CHUNKED:  # words: the K chunk steps in order, then the outer steps
        so = init
        t_outer = t + K
        for c0 in range(0, K, chunk):
            sc, t, flag = sequential_codes(A3, B3, a_i, b_i, i, j, c0, min(c0 + chunk, K), _Z, Pacc,
                                           has_prod, Pp, u, sr, t)
            if flag:
                return so, flag
            ck, cs, cm, ce = W.code_parts(sc, Pacc)
            ok, os_, om, oe = W.code_parts(so, Pout)
            so, flag = step(ok, os_, _Z, om, oe, ck, cs, _Z, cm, ce, word(u, sr, t_outer), Pout)
            t_outer += 1
            if flag:
                return so, flag
        return so, 0
    # pairwise: leaves are the exact (or product-rounded) products
    for k in range(K):
        kind, sign, hi, lo, e, flag = product(A3[a_i, i, k], B3[b_i, k, j], has_prod, Pp)
        if flag:
            return init, flag
        nk[k], ns[k], nh[k], nl[k], ne[k] = kind, sign, hi, lo, e
    n = K
    while n > 1:
        half = n // 2
        for p in range(half):
            code, flag = step(nk[2 * p], ns[2 * p], nh[2 * p], nl[2 * p], ne[2 * p],
                              nk[2 * p + 1], ns[2 * p + 1], nh[2 * p + 1], nl[2 * p + 1], ne[2 * p + 1],
                              word(u, sr, t), Pacc)
            t += 1
            if flag:
                return init, flag
            kind, sign, mag, e = W.code_parts(code, Pacc)
            nk[p], ns[p], nh[p], nl[p], ne[p] = kind, sign, _Z, mag, e
        if n % 2:  # an odd last element passes up unchanged
            nk[half], ns[half], nh[half], nl[half], ne[half] = nk[n - 1], ns[n - 1], nh[n - 1], nl[n - 1], ne[n - 1]
        n = half + n % 2
    sk, ss, sm, se = W.code_parts(init, Pacc)
    return step(sk, ss, _Z, sm, se, nk[0], ns[0], nh[0], nl[0], ne[0], word(u, sr, t), Pacc)


@njit(cache=True, nogil=True)
def matmul_general(A3, B3, ia, ib, M, N, K, order, chunk, init, Pacc, Pout, has_prod, Pp, u, T, idxs, out, flags):
    """The output elements ``idxs`` (flat indices, C order over (batch, M, N)): out[n] (float64) and
    flags[n] for element idxs[n]. Batch b multiplies A3[ia[b]] (M×K) by B3[ib[b]] (K×N).
    ``init``: codes in the final format (size 1 or nbatch*M*N)."""
    total = idxs.size
    sr = Pacc[R.SR] != 0
    nblocks = (total + BLOCK - 1) // BLOCK
    for blk in range(nblocks):
        nk = np.empty(max(K, 1), np.int64)
        ns = np.empty(max(K, 1), np.int64)
        nh = np.empty(max(K, 1), np.uint64)
        nl = np.empty(max(K, 1), np.uint64)
        ne = np.empty(max(K, 1), np.int64)
        for n in range(blk * BLOCK, min(total, blk * BLOCK + BLOCK)):
            idx = idxs[n]
            row = idx // N
            j = idx - row * N
            b = row // M
            i = row - b * M
            start = init[idx] if init.size > 1 else init[0]
            code, flag = one_output(A3, B3, ia[b], ib[b], i, j, K, order, chunk, start, Pacc, Pout,
                                    has_prod, Pp, u, sr, idx * T, nk, ns, nh, nl, ne)
            flags[n] = flag
            out[n] = W.value(code, Pout if order == CHUNKED else Pacc) if flag == 0 else 0.0


@njit(cache=True)
def code_values(codes, P, out):
    """out[i] = the value of codes[i] (valid codes of the format in P; NaN signs kept). Serial:
    for the handful of codes (init, overflow results) a call needs."""
    for i in range(codes.size):
        out[i] = W.value(np.uint64(codes[i]), P)
