"""Numba kernel of the elementwise operations: exact result as a frame, rounded once.

Special values follow IEEE 754: a NaN operand gives a NaN with the sign of the first NaN operand
(in argument order); an invalid operation (inf - inf, 0 * inf, 0 / 0, inf / inf, sqrt of a
negative number) gives +NaN; x / 0 is ±inf for finite nonzero x. Zero signs follow §6.3 (see
``wide.zero_sum_sign``). The result then goes into the format like a quantize input would.

Inputs are read from their bits (``round.parts``) and results written from bits
(``round.code_value``): no floating-point instruction touches a value, so the thread's MXCSR
(flush-to-zero, denormals-are-zero) cannot change a result.
"""

import numpy as np
from numba import njit

from . import round as R
from . import wide as W

ADD, SUB, MUL, DIV, FMA, SQRT = range(6)

_Z = np.uint64(0)


@njit
def op_frame(op, va, vb, vc, ins, P):
    """(kind, sign, w2, w1, w0, fe, st) of the exact result of one operation on the operands
    whose 64 bits are va, vb, vc, read as ``ins`` says (round.IN_FLOAT64, IN_INT64, IN_UINT64)."""
    sa, ma, ea, ka = R.bits_parts(va, ins[0])
    sb, mb, eb, kb = R.bits_parts(vb, ins[1])
    sc, mc, ec, kc = R.bits_parts(vc, ins[2])
    z = np.int64(0)
    if op == SQRT:
        if ka == 2:
            return W.NAN, sa, _Z, _Z, _Z, z, False
        if ma == _Z and ka == 0:
            return W.FINITE, sa, _Z, _Z, _Z, z, False  # sqrt(±0) = ±0
        if sa == 1:
            return W.NAN, z, _Z, _Z, _Z, z, False
        if ka == 1:
            return W.INF, z, _Z, _Z, _Z, z, False
        # root bits the rounding reads: the kept significand, the SR bits (or a round bit), a guard
        nbits = 96 if P[R.KIND] == 1 else min(96, P[R.M] + 4 + (P[R.SR_BITS] if P[R.SR] else 1))
        w2, w1, w0, fe, st = W.sqrt_frame(ma, ea, nbits)
        return W.FINITE, z, w2, w1, w0, fe, st
    if op == SUB and kb != 2:
        sb = sb ^ 1
    if ka == 2:
        return W.NAN, sa, _Z, _Z, _Z, z, False
    if kb == 2:
        return W.NAN, sb, _Z, _Z, _Z, z, False
    if op == FMA and kc == 2:
        return W.NAN, sc, _Z, _Z, _Z, z, False
    if op == ADD or op == SUB:
        return sum_frame(sa, _Z, ma, ea, ka, sb, mb, eb, kb, P)
    s = sa ^ sb
    if op == DIV:
        if ka == 1 and kb == 1:
            return W.NAN, z, _Z, _Z, _Z, z, False
        if ka == 1:
            return W.INF, s, _Z, _Z, _Z, z, False
        if kb == 1:
            return W.FINITE, s, _Z, _Z, _Z, z, False
        if mb == _Z:
            if ma == _Z:
                return W.NAN, z, _Z, _Z, _Z, z, False
            return W.INF, s, _Z, _Z, _Z, z, False
        if ma == _Z:
            return W.FINITE, s, _Z, _Z, _Z, z, False
        w2, w1, w0, fe, st = W.div_frame(ma, ea, mb, eb)
        return W.FINITE, s, w2, w1, w0, fe, st
    # MUL and FMA: the exact product first
    if (ka == 1 and kb == 0 and mb == _Z) or (kb == 1 and ka == 0 and ma == _Z):
        return W.NAN, z, _Z, _Z, _Z, z, False  # 0 * inf
    kp = 1 if (ka == 1 or kb == 1) else 0
    ph, pl = W.mul128(ma, mb)
    if op == MUL:
        if kp == 1:
            return W.INF, s, _Z, _Z, _Z, z, False
        return W.FINITE, s, _Z, ph, pl, ea + eb, False
    return sum_frame(s, ph, pl, ea + eb, kp, sc, mc, ec, kc, P)


@njit
def sum_frame(sx, xh, xl, ex, kx, sy, my, ey, ky, P):
    """Exact x + y for x a 128-bit magnitude and y a 64-bit one, specials included."""
    return W.sum_exact(kx, sx, xh, xl, ex, ky, sy, _Z, my, ey, P)


@njit
def op_one(op, va, vb, vc, ins, u, P):
    kind, sign, w2, w1, w0, fe, st = op_frame(op, va, vb, vc, ins, P)
    if kind != W.FINITE:
        return W.special_code(kind, sign, P)
    return W.finish(sign, w2, w1, w0, fe, st, u, P)


@njit
def _body(op, a, b, c, ins, u, P, out, flags, i, sr):
    code, flag = op_one(op, a[i], b[i], c[i], ins, np.uint64(u[i]) if sr else _Z, P)
    flags[i] = flag
    if flag == 0:
        out[i] = W.value(code, P)
    else:
        out[i] = 0.0


@njit(cache=True, nogil=True)
def arith_serial(op, a, b, c, ins, u, P, out, flags):
    """out[i] = op(a[i], b[i], c[i]) rounded to P; flags[i] = 0 or a wide.BAD_*/NEED_EXACT flag.
    a, b, c: the operands' 64 bits (uint64), read as float64, int64 or uint64 by the tuple ``ins``
    (round.IN_*: one compiled signature for every mix of operand dtypes). One thread; emul.arith
    runs large arrays as slices on several (emul._threads.run_slices)."""
    sr = P[R.SR] != 0
    for i in range(out.size):
        _body(op, a, b, c, ins, u, P, out, flags, i, sr)


@njit(cache=True)
def fixed_from_qF(sign, q, F, st, u, P):
    """Code of a fixed-point value whose magnitude at the lsb is q + (F + ε)/2**64 (q already
    reduced modulo 2**(bits+1) for wrap rules): for results computed with Python integers."""
    w2, w1, w0 = W.shl192(_Z, q, F, 0)
    code, flag = W.finish(sign, w2, w1, w0, np.int64(-P[R.FRAC] - 64), st, u, P)
    return W.value(code, P)
