"""Row-wise dot products (``emul.dot(a, b, acc, axis=-1)``), vectorised: float accumulators
(``rowwise_float``), fixed-point ones on exact integer lanes (``rowwise_fixed``), and fixed-point
ones whose steps round off-grid float products (``rowwise_grid``, see :func:`gstep`).

The steps are fast_accumulate's (``rne_step`` / ``fstep`` via ``_step``) under the same
conditions and proofs; only the data layout differs from the matmul kernels. Row r of A and B
(R x K, float64, row-major) is output element r and uses SR words ``r * T + t`` in the order of
its steps (emul/accumulate.py's layout; words as in emul/_kernels/sr_accumulate.py).

* sequential and chunked: LANES rows side by side. Their products are formed row by row, TB at a
  time, into a (LANES, PS) block (contiguous reads, in L2; rows PS = TB + 8 apart, not 4 KiB, so
  that they do not share L1 sets), which is transposed tile by tile into (TK, LANES) (in L1, 8 x 8
  blocks of vector shuffles, :func:`_t8`); the steps run over the lanes, as the matmul kernels run
  over an output row. Each step also prefetches its share of the next pass's operands
  (:func:`_ahead`): the product pass then reads from cache, and the memory traffic overlaps the
  steps. Indices are unsigned so that Numba emits no negative-index wraparound (which keeps LLVM
  from vectorising the loops).
* pairwise: one row at a time, each tree level vectorised over its pairs (ping-pong buffers);
  a level's SR words are consecutive, so they are read (or generated) contiguously.

Products are formed here and checked exact in the same pass (:func:`_products`): both operands
0 or with exponent fields in [2**-400, 2**500) (so every product is 0 or normal, and its rounding
error, a multiple of 2**-904, is 0 or normal), and the product exact: every significand of the
pass at most 26 bits wide (two of them make at most 52 bits; always so for operands from 8- and
16-bit formats and float32), else the FMA residual x*y - fl(x*y) zero (:func:`_exact`). The
kernels return False when some product fails (the caller then takes the exact general path);
results of non-finite rows are flagged in ``bad`` for the caller to recompute with the general
kernel. TwoSum runs unless the sums are provably exact (see rowwise_float's ``check``).
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .fast_accumulate import (_ABS, _ROW_EHI, _ROW_ELO, _U0, _U1, F_DOWN, F_SR, F_SRBITS, F_SRCMP, RULE_SAT, RULE_WRAP,
                              _f2u, _fma, _step, _u2f, _unpack, _unpack_rne, fround, xstep)
from .sr_accumulate import fill_words
from .threefry import threefry2x32

LANES = 32  # rows side by side (sequential, chunked)
TK = 128  # products per row and tile of steps (a (TK, LANES) tile in L1)
TB = 512  # products per row formed in one row-major pass (a (LANES, TB) block in L2)
PS = TB + 8  # the row stride of that block: rows 4 KiB apart would share L1 sets (measured: 2x slower transposes)
_U32 = np.uint32
_UI = np.uint64


@njit(inline="always")
def _exact(x, y):
    """Whether x*y is exact in binary64 and 0 or normal (operands and residual checked from bits)."""
    bx = _f2u(x) & _ABS
    by = _f2u(y) & _ABS
    ex = bx >> np.uint64(52)
    ey = by >> np.uint64(52)
    return (((bx == _U0) | ((ex >= _ROW_ELO) & (ex < _ROW_EHI)))
            & ((by == _U0) | ((ey >= _ROW_ELO) & (ey < _ROW_EHI))) & (_fma(x, y, -(x * y)) == 0.0))


_F32_ABS = np.uint32(0x7FFFFFFF)
_LOW27 = np.uint64((1 << 27) - 1)  # the fraction bits below a 26-bit significand


def _limits(A):
    """(lo1, hi, low) for operands of A's dtype (Numba only; see the overload): with b = the bits
    of |x| as uint64, x is admissible when b - 1 >= lo1 (wrapping: 0 passes) and b < hi, and every
    product of two admissible values whose bits have none of ``low`` set is exact. float64: the
    exponent range of :func:`_exact` and significands of at most 26 bits (two of them make at most
    52); float32: 0 or normal and finite (the product of two, 48 bits within [2**-252, 2**256), is
    exact, normal and inside that range), ``low`` 0."""
    raise NotImplementedError


def _abs_bits(x):
    """The bits of |x| as uint64 (Numba only; float32 from its own bits, so that
    denormals-are-zero cannot change a test)."""
    raise NotImplementedError


@overload(_limits, inline="always")
def _limits_impl(A):
    if A.dtype == types.float64:
        return lambda A: (np.uint64((int(_ROW_ELO) << 52) - 1), np.uint64(int(_ROW_EHI) << 52), _LOW27)
    if A.dtype == types.float32:
        return lambda A: (np.uint64(0x00800000 - 1), np.uint64(0x7F800000), _U0)
    return None


@overload(_abs_bits, inline="always")
def _abs_bits_impl(x):
    if x == types.float64:
        return lambda x: _f2u(x) & _ABS
    if x == types.float32:
        return lambda x: np.uint64(np.float32(x).view(np.uint32) & _F32_ABS)
    return None


@njit(inline="always")
def _word(w, k0, k1, shift, gen, u):
    if gen:
        y0, y1 = threefry2x32(k0, k1, _U32(w >> 32), _U32(w & 0xFFFFFFFF))
        return _U32(y0 ^ y1) >> shift
    return _U32(u[w])


@njit(inline="always")
def _products(A, B, r0, n, T0, nq, P):
    """P[j, q] = A[r0 + j, T0 + q] * B[r0 + j, T0 + q] (float64) for j < n, q < nq, row by row
    (contiguous reads); returns (ok, m): ok when every one of those products is exact in binary64
    and 0 or normal (both operands admissible, see :func:`_limits`, and the product exact: from
    the operands' bits when no significand has more than 26 bits, else by :func:`_exact`), m the
    largest |product|. The pass keeps only reductions (an OR of the bits, their max and their min
    less 1), so that it vectorises into few instructions per product; float32 operands widen
    exactly (they are normal when ok). Unsigned indices throughout: a signed index makes Numba emit
    a negative-index wraparound per access, which keeps LLVM from vectorising these loops."""
    lo1, hi, low = _limits(A)
    orb = _U0
    mx = _U0
    mn = ~_U0
    mp = _U0  # the largest |product|'s bits (an integer max vectorises; a float max() does not)
    for j in range(n):
        rr = _UI(r0 + j)
        for q in range(nq):
            kk = _UI(T0 + q)
            x = A[rr, kk]
            y = B[rr, kk]
            bx = _abs_bits(x)
            by = _abs_bits(y)
            orb |= bx | by
            mx = max(mx, max(bx, by))
            mn = min(mn, min(bx - _U1, by - _U1))
            p = np.float64(x) * np.float64(y)
            mp = max(mp, _f2u(p) & _ABS)
            P[_UI(j), _UI(q)] = p
    m = _u2f(mp)
    if mx >= hi or mn < lo1:
        return False, m
    if orb & low:  # some significand is wider than 26 bits: the residual test (float64 only)
        return _residuals_zero(A, B, r0, n, T0, nq), m
    return True, m


@njit(cache=True)
def _residuals_zero(A, B, r0, n, T0, nq):
    """Whether :func:`_exact` holds for every product of :func:`_products`'s range (a function of
    its own, not inlined: compiled once, not at each call site)."""
    unfit = 0
    for j in range(n):
        rr = _UI(r0 + j)
        for q in range(nq):
            kk = _UI(T0 + q)
            unfit += 0 if _exact(A[rr, kk], B[rr, kk]) else 1
    return unfit == 0


@njit(inline="always")
def _products_lanes(A, B, scale, r0, n, T0, nq, P):
    """_products_f64 for rowwise_fixed: products as exact integers in the lanes' dtype (P's)."""
    dt = P.dtype.type
    for j in range(n):
        rr = _UI(r0 + j)
        for q in range(nq):
            kk = _UI(T0 + q)
            P[_UI(j), _UI(q)] = dt(dt(A[rr, kk]) * dt(B[rr, kk]) * scale)


def _shuffle_transpose(builder, rows):
    """The 8 x 8 transpose of 8 LLVM vectors of 8 elements (rows[r][c] -> out[c][r]): three stages
    of two-input shuffles; at distance d, rows r and r + d (r & d == 0) swap their elements p & d
    != 0 of the first with p & d == 0 of the second."""
    i32x8 = ir.VectorType(ir.IntType(32), 8)
    for d in (1, 2, 4):
        lo = ir.Constant(i32x8, [p if p & d == 0 else 8 + p - d for p in range(8)])
        hi = ir.Constant(i32x8, [p + d if p & d == 0 else 8 + p for p in range(8)])
        out = list(rows)
        for r in range(8):
            if r & d == 0:
                out[r] = builder.shuffle_vector(rows[r], rows[r + d], lo)
                out[r + d] = builder.shuffle_vector(rows[r], rows[r + d], hi)
        rows = out
    return rows


@intrinsic
def _t8(typingctx, src, i0, j0, dst, k0, l0):
    """dst[k0 + c, l0 + r] = src[i0 + r, j0 + c] for r, c < 8 (2-D arrays of one dtype, rows
    contiguous, indices unchecked): eight vector loads, 24 shuffles, eight vector stores (LLVM
    does not find this from the scalar loops)."""
    sig = types.void(src, i0, j0, dst, k0, l0)

    def codegen(context, builder, signature, args):
        sty, _, _, dty, _, _ = signature.args
        i64 = ir.IntType(64)
        elt = context.get_data_type(sty.dtype)
        size = context.get_abi_sizeof(elt)
        vptr = ir.VectorType(elt, 8).as_pointer()

        def row(aty, arr, r0, c0, r):  # the address of arr[r0 + r, c0], as a vector pointer
            a = context.make_array(aty)(context, builder, arr)
            off = builder.add(builder.mul(builder.add(r0, ir.Constant(i64, r)), builder.extract_value(a.strides, 0)),
                              builder.mul(c0, ir.Constant(i64, size)))
            return builder.inttoptr(builder.add(builder.ptrtoint(a.data, i64), off), vptr)

        _, i0v, j0v, _, k0v, l0v = (builder.sext(v, i64) if isinstance(v.type, ir.IntType) and v.type.width < 64 else v
                                    for v in args)
        rows = [builder.load(row(sty, args[0], i0v, j0v, r), align=size) for r in range(8)]
        for c, v in enumerate(_shuffle_transpose(builder, rows)):
            builder.store(v, row(dty, args[3], k0v, l0v, c), align=size)
        return context.get_dummy_value()

    return sig, codegen


@njit(inline="always")
def _transpose(P, q0, nt, stage):
    """stage[tt, j] = P[j, q0 + tt] for tt < nt and every lane: whole 8 x 8 blocks by :func:`_t8`,
    then the remaining columns one by one. P is L2-resident (LANES x PS), stage L1-resident
    (TK x LANES)."""
    full = nt - nt % 8
    for tb in range(0, full, 8):
        for jb in range(0, LANES, 8):
            _t8(P, _UI(jb), _UI(q0 + tb), stage, _UI(tb), _UI(jb))
    for tt in range(full, nt):
        for j in range(LANES):
            stage[_UI(tt), _UI(j)] = P[_UI(j), _UI(q0 + tt)]


@intrinsic
def _prefetch(typingctx, arr, i, j):
    """A hint to bring the cache line of arr[i, j] (a 2-D array with contiguous rows, indices
    unchecked) towards the core (llvm.prefetch, read, to L2 and inward); never faults."""
    sig = types.void(arr, i, j)

    def codegen(context, builder, signature, args):
        aty = signature.args[0]
        i64, i32, i8p = ir.IntType(64), ir.IntType(32), ir.IntType(8).as_pointer()
        a = context.make_array(aty)(context, builder, args[0])
        size = context.get_abi_sizeof(context.get_data_type(aty.dtype))
        off = builder.add(builder.mul(args[1], builder.extract_value(a.strides, 0)),
                          builder.mul(args[2], ir.Constant(i64, size)))
        ptr = builder.inttoptr(builder.add(builder.ptrtoint(a.data, i64), off), i8p)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0i8")
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 2), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


@njit(inline="always")
def _plan_ahead(A, B, r0, T0, ns, cur):
    """cur = the prefetch plan (:func:`_ahead`) for the pass after (r0, T0) (its rows r1 …
    r1 + LANES - 1 and columns T1 … T1 + TB - 1: the same rows TB columns on, else the next
    block of rows from column 0), spread over the ns steps of the current pass: (row, column)
    of the next line, the end row, T1, the end column and the lines per step."""
    R, K = A.shape
    r1, T1 = (r0, T0 + TB) if T0 + TB < K else (r0 + LANES, 0)
    epl = 64 // max(A.itemsize, B.itemsize)  # elements per cache line (of the wider operand)
    c1 = min(T1 + TB, K)
    lines = min(LANES, R - r1) * ((c1 - T1 + epl - 1) // epl) if r1 < R else 0
    cur[0] = r1
    cur[1] = T1
    cur[2] = min(r1 + LANES, R)
    cur[3] = T1
    cur[4] = c1
    cur[5] = (lines + ns - 1) // ns


@njit(inline="always")
def _ahead(A, B, cur):
    """Prefetch the next cur[5] cache lines of A and B of the plan ``cur`` (:func:`_plan_ahead`),
    once per step: the next pass's product pass then reads its operands from cache, and their
    memory traffic overlaps the steps (measured: without it, that pass, memory-bound, took about
    a third of the time)."""
    epl = 64 // max(A.itemsize, B.itemsize)
    row = cur[0]
    col = cur[1]
    for _ in range(cur[5]):
        if row < cur[2]:
            _prefetch(A, _UI(row), _UI(col))
            _prefetch(B, _UI(row), _UI(col))
            col += epl
            if col >= cur[4]:
                col = cur[3]
                row += 1
    cur[0] = row
    cur[1] = col


@njit(inline="always")
def _tile_end(t, T1, order, step_len):
    """End of the tile of steps that starts at product t: at most TK products, within the
    current row-major pass (ending at T1) and, for chunked order, within the chunk."""
    te = min(t + TK, T1)
    if order == 2:
        te = min(te, (t // step_len + 1) * step_len)
    return te


@njit(inline="always")
def _off_grid(x, n, gC, gB):
    """Whether some x[q], q < n, is not a multiple of the check grid 2**g or not below gB = 2**(g + 51)
    in magnitude (gC = 1.5 * 2**(52 + g): below gB, x + gC lies in [2**(52+g), 2**(53+g)), where
    binary64's spacing is 2**g, so (x + gC) - gC == x exactly when x is on the grid)."""
    off = 0
    for q in range(n):
        v = x[_UI(q)]
        off += 0 if (((v + gC) - gC) == v) & (abs(v) < gB) else 1
    return off != 0


@njit(inline="always")
def _level(x, y, w, half, sr, rne, tw, down, r, cmp, Pa, Qa):
    """One pairwise tree level: y[q] = Q(x[2q] + x[2q+1]) for q < half (SR words w[q])."""
    if sr:
        for q in range(half):
            y[q] = _step(x[2 * q], x[2 * q + 1], w[q], False, tw, down, True, r, cmp, Pa, Qa)
    elif rne:
        for q in range(half):
            y[q] = _step(x[2 * q], x[2 * q + 1], 0, True, tw, down, False, r, cmp, Pa, Qa)
    else:
        for q in range(half):
            y[q] = _step(x[2 * q], x[2 * q + 1], 0, False, tw, down, False, r, cmp, Pa, Qa)


@njit(inline="always")
def _tile(sc, stage, W, nt, sr, rne, tw, down, r, cmp, Pa, Qa, A, B, cur):
    """nt steps of every lane: sc[j] = Q(sc[j] + stage[tt, j]) (SR words W[tt, j]); step tt also
    prefetches its share of the next pass (:func:`_ahead`)."""
    if sr:
        for tt in range(nt):
            _ahead(A, B, cur)
            for j in range(LANES):
                sc[j] = _step(sc[j], stage[tt, j], W[tt, j], False, tw, down, True, r, cmp, Pa, Qa)
    elif rne:
        for tt in range(nt):
            _ahead(A, B, cur)
            for j in range(LANES):
                sc[j] = _step(sc[j], stage[tt, j], 0, True, tw, down, False, r, cmp, Pa, Qa)
    else:
        for tt in range(nt):
            _ahead(A, B, cur)
            for j in range(LANES):
                sc[j] = _step(sc[j], stage[tt, j], 0, False, tw, down, False, r, cmp, Pa, Qa)


@njit(cache=True, nogil=True)
def rowwise_float(A, B, init, order, chunk, Fa, Fo, Fp, Ra, Ro, has_prod, rne, k0, k1, shift, gen, u, T, check, gC,
                  gB, out, bad, c_lo, c_hi):
    """Parts c_lo … c_hi - 1 (rows in pairwise order, else blocks of LANES rows: see
    :func:`rowwise_parts`; emul.accumulate runs slices of the parts on several threads, a Numba
    parallel region compiles several times slower) of: out[r] = the row-wise dot product of A[r] and B[r] from init[r % init.size] (float64
    values of the final format), orders 0 sequential / 1 pairwise / 2 chunked (``chunk``; outer
    parameters Fo/Ro). ``rne``: nearest_even on rne_step (Ra/Ro); SR when Fa says so, with words
    from (k0, k1, shift, gen, u) as in sr_accumulate. Returns False when a product is not exact.

    TwoSum runs in every step unless ``check`` and ``rne`` in pairwise order: then the tree levels
    of a row skip it when every (rounded) product there is on the check grid 2**g and below
    2**(g + 51) (:func:`_off_grid`; gC, gB from g). The caller picks g so that every format's
    values are multiples of 2**g below 2**(g + 51) as well: then every sum a step forms (two such
    values, or an overflow value of the same bound) is a multiple of 2**g below 2**(g + 52), exact
    in binary64, and TwoSum's lo would be 0. A non-finite sum flags its row (recomputed by the caller)."""
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
    all_ok = True
    if order == 1:
        for row in range(c_lo, c_hi):
            xy = np.empty((2, max(K, 1)), np.float64)
            x = xy[0]
            y = xy[1]
            w = np.zeros(max(K // 2, 1), np.uint32)
            ok, _ = _products(A, B, row, 1, 0, K, xy)
            if not ok:
                all_ok = False
                continue
            if has_prod:
                for k in range(K):
                    x[k] = fround(x[k], p_m, p_emin, p_qb, p_pq, p_max, p_ovp, p_ovn, p_near, p_k0, p_ks, p_kl, p_nz)
            tw = True
            if check:
                tw = _off_grid(x, K, gC, gB)
            base = row * T
            t = 0
            n = K
            while n > 1:
                half = n // 2
                if sr:
                    for q in range(half):
                        w[q] = _word(base + t + q, k0, k1, shift, gen, u)
                if rne and not tw:  # (only RNE has a TwoSum-free twin: each twin costs compile time)
                    _level(x, y, w, half, False, True, False, down, r, cmp, Pa, Qa)
                else:
                    _level(x, y, w, half, sr, rne, True, down, r, cmp, Pa, Qa)
                if n % 2:  # an odd last element passes up unchanged
                    y[half] = x[n - 1]
                t += half
                n = half + n % 2
                x, y = y, x
            uw = _word(base + t, k0, k1, shift, gen, u) if sr else _U32(0)
            s = _step(init[row % init.size], x[0], uw, rne, True, down, sr, r, cmp, Pa, Qa)
            out[row] = s
            bad[row] = 0 if np.isfinite(s) else 1
        return all_ok
    step_len = chunk if order == 2 else K
    for c in range(c_lo, c_hi):
        r0 = c * LANES
        n = min(LANES, R - r0)
        s = np.zeros(LANES, np.float64)
        for j in range(n):
            s[j] = init[(r0 + j) % init.size]
        sc = np.zeros(LANES, np.float64)  # the running sum (sequential) or the chunk's sum (chunked)
        if order != 2:
            for j in range(LANES):
                sc[j] = s[j]
        P = np.zeros((LANES, PS), np.float64)
        stage = np.zeros((TK, LANES), np.float64)
        W = np.zeros((TK, LANES), np.uint32)
        cur = np.zeros(6, np.int64)
        block_ok = True
        for T0 in range(0, K, TB):
            nq = min(TB, K - T0)
            ok, _ = _products(A, B, r0, n, T0, nq, P)
            if not ok:
                block_ok = False
                break
            _plan_ahead(A, B, r0, T0, nq, cur)
            if has_prod:
                for j in range(n):
                    for q in range(nq):
                        P[_UI(j), _UI(q)] = fround(P[_UI(j), _UI(q)], p_m, p_emin, p_qb, p_pq, p_max, p_ovp, p_ovn,
                                                   p_near, p_k0, p_ks, p_kl, p_nz)
            t = T0
            while t < T0 + nq:
                te = _tile_end(t, T0 + nq, order, step_len)
                nt = te - t
                _transpose(P, t - T0, nt, stage)
                if sr:  # W[tt, j] = word (r0 + j) * T + t + tt
                    fill_words(W, nt, r0 * T, t, n, T, k0, k1, shift, gen, u)
                _tile(sc, stage, W, nt, sr, rne, True, down, r, cmp, Pa, Qa, A, B, cur)
                if order == 2 and (te % step_len == 0 or te == K):  # the chunk ends: one outer step
                    t_outer = K + (te - 1) // step_len  # words: the K chunk steps first, then the outer steps
                    for j in range(n):
                        W[0, j] = _word((r0 + j) * T + t_outer, k0, k1, shift, gen, u) if sr else _U32(0)
                    for j in range(LANES):
                        s[j] = _step(s[j], sc[j], W[0, j], rne, True, down, sr, r, cmp, Po, Qo)
                        sc[j] = 0.0
                t = te
        if not block_ok:
            all_ok = False
            continue
        if order != 2:
            for j in range(LANES):
                s[j] = sc[j]
        for j in range(n):
            out[r0 + j] = s[j]
            bad[r0 + j] = 0 if np.isfinite(s[j]) else 1
    return all_ok


def rowwise_parts(order, rows):
    """The number of parts of rowwise_float: one per row in pairwise order (1), else one per
    block of LANES rows."""
    return rows if order == 1 else (rows + LANES - 1) // LANES


@njit(cache=True, nogil=True)
def rowwise_fixed(A, B, scale, init, order, chunk, Xa, Xo, sum_only, out, c_lo, c_hi):
    """Row-wise dot products with a fixed-point accumulator, as exact integers in the lanes' dtype
    (float32, float64 or int16: the dtype of ``init``), in units of the finest lsb: fast_accumulate's
    ``fixed_rows`` (``xstep``; sat_rows_i16 for int16) under the same conditions, with rows as lanes.

    Product k of row r is ``lane(A[r, k]) * lane(B[r, k]) * scale`` (the caller passes integer
    operands raw and ``scale`` a power of two, or scaled operands and ``scale`` 1: either way an
    exact integer below the lanes' limit). Xa/Xo: (lo, hi, rule, signed, modulus, unit) of acc and
    outer, float64 (lo and hi are taken into the lanes; int16 lanes only for saturating sequential
    sums that never leave (-2**15, 2**15)). ``sum_only`` (wrapping accumulators, the caller checks
    that the exact total fits the lanes): the exact sum, wrapped once at the end — the same value,
    as wrapping is reduction modulo 2**bits. out[r] (float64) is row r's result in units of the
    finest lsb. Parts c_lo … c_hi - 1 (see :func:`fixed_parts`): emul.accumulate runs slices of
    the parts on several threads (a Numba parallel region compiles several times slower)."""
    for c in range(c_lo, c_hi):
        _fixed_part(A, B, scale, init, order, chunk, Xa, Xo, sum_only, out, c)


def fixed_parts(order, sum_only, rows):
    """The number of parts of rowwise_fixed: one per row in pairwise order (unless sum_only), else
    one per block of LANES rows."""
    return rows if order == 1 and not sum_only else (rows + LANES - 1) // LANES


@njit(cache=True)
def _fixed_part(A, B, scale, init, order, chunk, Xa, Xo, sum_only, out, c):
    """Part c of rowwise_fixed: row c (pairwise order), else the block of rows c*LANES … (c+1)*LANES-1."""
    R, K = A.shape
    dt = init.dtype.type
    a_lo, a_hi, a_rule, a_signed, a_mw, a_unit = dt(Xa[0]), dt(Xa[1]), np.int64(Xa[2]), Xa[3] != 0, Xa[4], Xa[5]
    o_lo, o_hi, o_rule, o_signed, o_mw, o_unit = dt(Xo[0]), dt(Xo[1]), np.int64(Xo[2]), Xo[3] != 0, Xo[4], Xo[5]
    sat = a_rule == RULE_SAT
    if order == 1 and not sum_only:
        row = c
        x = np.empty(max(K, 1), init.dtype)
        y = np.empty(max(K, 1), init.dtype)
        for k in range(K):
            x[k] = dt(dt(A[_UI(row), _UI(k)]) * dt(B[_UI(row), _UI(k)]) * scale)
        n = K
        while n > 1:
            half = n // 2
            for q in range(half):
                y[q] = dt(xstep(x[2 * q], x[2 * q + 1], a_lo, a_hi, a_rule, a_signed, a_mw, a_unit))
            if n % 2:  # an odd last element passes up unchanged
                y[half] = x[n - 1]
            n = half + n % 2
            x, y = y, x
        out[row] = xstep(init[row % init.size], x[0], a_lo, a_hi, a_rule, a_signed, a_mw, a_unit)
        return
    r0 = c * LANES
    n = min(LANES, R - r0)
    if sum_only:
        for j in range(n):
            v = np.float64(_row_sum(A, B, scale, r0 + j, K, init, (r0 + j) % init.size))
            out[r0 + j] = v - np.floor((v - Xa[0]) / a_mw) * a_mw  # modulo 2**bits into [lo, lo + modulus)
        return
    chunked = order == 2
    step_len = chunk if chunked else K
    s = np.zeros(LANES, init.dtype)
    for j in range(n):
        s[j] = init[(r0 + j) % init.size]
    sc = np.zeros(LANES, init.dtype)
    if not chunked:
        for j in range(LANES):
            sc[j] = s[j]
    P = np.zeros((LANES, PS), init.dtype)
    stage = np.zeros((TK, LANES), init.dtype)
    cur = np.zeros(6, np.int64)
    for T0 in range(0, K, TB):
        nq = min(TB, K - T0)
        _products_lanes(A, B, scale, r0, n, T0, nq, P)
        _plan_ahead(A, B, r0, T0, nq, cur)
        t = T0
        while t < T0 + nq:
            te = _tile_end(t, T0 + nq, 2 if chunked else 0, step_len)
            nt = te - t
            _transpose(P, t - T0, nt, stage)
            if sat:  # the common case, spelled out so that it vectorises tightly
                for tt in range(nt):
                    _ahead(A, B, cur)
                    for j in range(LANES):
                        sc[j] = min(max(dt(sc[j] + stage[tt, j]), a_lo), a_hi)
            else:
                for tt in range(nt):
                    _ahead(A, B, cur)
                    for j in range(LANES):
                        sc[j] = dt(xstep(sc[j], stage[tt, j], a_lo, a_hi, a_rule, a_signed, a_mw, a_unit))
            if chunked and (te % step_len == 0 or te == K):
                for j in range(LANES):
                    s[j] = dt(xstep(s[j], sc[j], o_lo, o_hi, o_rule, o_signed, o_mw, o_unit))
                    sc[j] = dt(0)
            t = te
    if not chunked:
        for j in range(LANES):
            s[j] = sc[j]
    for j in range(n):
        out[r0 + j] = np.float64(s[j])


@njit(fastmath={"reassoc"})  # a call of its own: the flag reaches this loop only
def _row_sum(A, B, scale, r, K, init, i):
    """init[i] + the sum of the products of row r in the lanes' dtype (init's), in any order: the
    caller has checked that every partial sum is an exact integer of the lanes, so the order
    cannot change it, and ``reassoc`` lets the loop vectorise along the row (one thread, int8
    operands in float64 lanes: 2.7x the MAC rate of 16 partial sums in an array)."""
    dt = init.dtype.type
    s = init[i]
    rr = _UI(r)
    for k in range(K):
        kk = _UI(k)
        s = dt(s + dt(dt(A[rr, kk]) * dt(B[rr, kk]) * scale))
    return s


# --- fixed-point accumulators with products off their grid (float operands) ------------------------
# One step rounds the exact sum s + p (any two finite binary64 values below 2**51 lsb) to the
# accumulator's grid by a deterministic mode, then applies its overflow rule. Parameter slots of the
# float64 array G (accumulate.py fills one per format: acc, outer):
(G_U, G_NEAR, G_C1, G_CPOS, G_CNEG, G_CODD, G_CEVEN, G_LO, G_HI, G_RULE, G_SIGNED, G_MW, G_UNIT) = range(13)
NG = 13


@njit(inline="always")
def _unpack_grid(G):
    return (G[G_U], 1.0 / G[G_U], 0.5 * G[G_U], G[G_NEAR] != 0, G[G_C1] != 0, G[G_CPOS] != 0, G[G_CNEG] != 0,
            G[G_CODD] != 0, G[G_CEVEN] != 0, G[G_LO], G[G_HI], np.int64(G[G_RULE]), G[G_SIGNED] != 0, G[G_MW],
            G[G_UNIT])


@njit(inline="always")
def gstep(s, p, u, uinv, half, near, c1, cpos, cneg, codd, ceven, lo, hi, rule, signed, mw, unit):
    """Q(s + p) on the grid of multiples of u (a power of two), then the overflow rule (xstep).

    TwoSum gives h = fl(s + p) and e with h + e = s + p exactly. With |h| < 2**51 u, ulp(h) <= u/2,
    so f = floor(h/u) u and r = h - f are exact, r is a multiple of ulp(h) and |e| <= ulp(h)/2.
    When r = 0 and e < 0 the sum lies just below f: take f - u and r = u. Then the exact sum is
    f + r + e with 0 < r + e < u (inexact), or r = e = 0 (on the grid); r + e compares with u/2 as
    r does, except r = u/2 where e's sign decides (both are multiples of ulp(h), e is below it).
    The mode decides between f and f + u: nearest modes by that comparison, ties (and directed
    modes always) by ``c1 | cpos & x > 0 | cneg & x < 0 | codd & (f/u odd) | ceven & (f/u even)``
    (x > 0 exactly when f >= 0, the sum being strictly between f and f + u)."""
    h = s + p
    bp = h - s
    e = (s - (h - bp)) + (p - bp)
    f = np.floor(h * uinv) * u
    r = h - f
    below = (r == 0.0) & (e < 0.0)
    f = f - u if below else f
    r = u if below else r
    inexact = (r != 0.0) | (e != 0.0)
    k = f * uinv
    odd = (k - 2.0 * np.floor(0.5 * k)) != 0.0
    pos = f >= 0.0
    dec = c1 | (cpos & pos) | (cneg & (not pos)) | (codd & odd) | (ceven & (not odd))
    above = (r > half) | ((r == half) & (e > 0.0))
    tie = (r == half) & (e == 0.0)
    inc = (above | (tie & dec)) if near else dec
    v = f + u if inexact & inc else f
    return xstep(v, 0.0, lo, hi, rule, signed, mw, unit)


@njit(inline="always")
def _gstep(s, p, g, rc):
    """gstep with Ga/Go's unpacked parameters g; ``rc`` (a constant at each call) is g's rule
    (RULE_SAT or RULE_WRAP), or -1 to read it from g: with a constant the loop holds no branch on
    the rule and vectorises."""
    u, uinv, half, near, c1, cpos, cneg, codd, ceven, lo, hi, rule, signed, mw, unit = g
    return gstep(s, p, u, uinv, half, near, c1, cpos, cneg, codd, ceven, lo, hi, rule if rc < 0 else rc, signed,
                 mw, unit)


@njit(cache=True)
def _grid_part(A, B, init, order, chunk, Ga, Go, pmax, out, c):
    """Part c of rowwise_grid: row c (pairwise order), else rows c*LANES … (c+1)*LANES-1. False when
    a product is not exact or not below pmax (the caller then takes the general path)."""
    R, K = A.shape
    ga = _unpack_grid(Ga)
    go = _unpack_grid(Go)
    if order == 1:
        row = c
        xy = np.empty((2, max(K, 1)), np.float64)
        x = xy[0]
        y = xy[1]
        ok, m = _products(A, B, row, 1, 0, K, xy)
        if not (ok and m < pmax):
            return False
        n = K
        while n > 1:
            half = n // 2
            for q in range(half):
                y[q] = _gstep(x[2 * q], x[2 * q + 1], ga, -1)
            if n % 2:  # an odd last element passes up unchanged
                y[half] = x[n - 1]
            n = half + n % 2
            x, y = y, x
        out[row] = _gstep(init[row % init.size], x[0], ga, -1) + 0.0  # + 0.0: no -0 in fixed point
        return True
    chunked = order == 2
    step_len = chunk if chunked else K
    r0 = c * LANES
    n = min(LANES, R - r0)
    s = np.zeros(LANES, np.float64)
    for j in range(n):
        s[j] = init[(r0 + j) % init.size]
    sc = np.zeros(LANES, np.float64)
    if not chunked:
        for j in range(LANES):
            sc[j] = s[j]
    P = np.zeros((LANES, PS), np.float64)
    stage = np.zeros((TK, LANES), np.float64)
    cur = np.zeros(6, np.int64)
    for T0 in range(0, K, TB):
        nq = min(TB, K - T0)
        ok, m = _products(A, B, r0, n, T0, nq, P)
        if not (ok and m < pmax):
            return False
        _plan_ahead(A, B, r0, T0, nq, cur)
        t = T0
        while t < T0 + nq:
            te = _tile_end(t, T0 + nq, order, step_len)
            nt = te - t
            _transpose(P, t - T0, nt, stage)
            if ga[11] == RULE_SAT:  # the common rules with the rule constant in the loop
                for tt in range(nt):
                    _ahead(A, B, cur)
                    for j in range(LANES):
                        sc[j] = _gstep(sc[j], stage[tt, j], ga, RULE_SAT)
            elif ga[11] == RULE_WRAP:
                for tt in range(nt):
                    _ahead(A, B, cur)
                    for j in range(LANES):
                        sc[j] = _gstep(sc[j], stage[tt, j], ga, RULE_WRAP)
            else:
                for tt in range(nt):
                    _ahead(A, B, cur)
                    for j in range(LANES):
                        sc[j] = _gstep(sc[j], stage[tt, j], ga, -1)
            if chunked and (te % step_len == 0 or te == K):
                for j in range(LANES):
                    s[j] = _gstep(s[j], sc[j], go, -1)
                    sc[j] = 0.0
            t = te
    if not chunked:
        for j in range(LANES):
            s[j] = sc[j]
    for j in range(n):
        out[r0 + j] = s[j] + 0.0
    return True


@njit(cache=True, nogil=True)
def rowwise_grid(A, B, init, order, chunk, Ga, Go, pmax, out, c_lo, c_hi):
    """Row-wise dot products into a fixed-point accumulator whose steps round: out[r] (float64, the
    value) = row r of A·B (R x K, float64) from init[r % init.size], orders 0 sequential / 1
    pairwise / 2 chunked, each step :func:`gstep` with the grid, mode and overflow rule of Ga
    (acc) or Go (outer; values, not units). Conditions (the caller's): every format's values are
    multiples of its lsb below 2**49 lsb in magnitude, the finest lsb at least 2**-1022 (so that
    every sum stays below 2**51 lsb of the step's grid and no value is subnormal); every product
    is checked here: exact, 0 or normal (:func:`_exact`) and below pmax (at most 2**49 of the
    finest lsb). Returns False when one is not. Parts c_lo … c_hi - 1: rows in pairwise
    order, else blocks of LANES rows (:func:`rowwise_parts`), as rowwise_float."""
    for c in range(c_lo, c_hi):
        if not _grid_part(A, B, init, order, chunk, Ga, Go, pmax, out, c):
            return False
    return True
