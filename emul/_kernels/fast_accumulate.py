"""Vectorised fast paths of dot/matmul, each equal to the exact general path where it is used.

Both kernels work on one output row at a time (slices of the rows run on threads:
emul._threads.run_rows) with the output column j innermost, so that LLVM vectorises the per-step
rounding across j. emul/accumulate.py decides
when a path applies (the conditions are repeated below) and tests/test_accumulate.py checks every
path against the general kernel.

Float accumulators (``float_rows``)
-----------------------------------
Conditions: operands finite and products a·b exact in float64; every format that rounds (acc,
outer, product) has 1 <= man_bits <= 51 (so that the kept code's last bit is the significand's), emin >= -1021,
emax <= 1021, and its half-quantum at least
2**-1074; stochastic rounding only when man_bits + sr_bits <= 52.

No subnormal, whatever the thread's MXCSR: flush-to-zero and denormals-are-zero (set on XLA's CPU
threads, or by fast-math libraries) make every floating-point instruction read a subnormal operand
and write a subnormal result as 0. emul/accumulate.py therefore also requires every operand, every
product a·b and every format's quantum to be multiples of 2**-1022. Then every number this kernel
forms — products, sums, TwoSum's ``bp``, ``hi - bp``, ``lo``, the rounded ``q * 2**qbelow`` — is an
exact or rounded sum or product of such multiples, hence 0 or at least 2**-1022 in magnitude:
normal, so FTZ/DAZ never act. The rounding decisions themselves are integer operations on bits.

One step s' = Q(s + p) is computed as follows. TwoSum gives hi = fl(s + p) (round to nearest) and
lo with hi + lo = s + p exactly (Knuth; exact for finite binary64 operands without overflow, which
|s|, |p| < 2**1022 rules out). Q's decision depends on x = s + p only through comparisons of x
with numbers of the format's grid, its midpoints and, for SR, the points q + t/2**r between grid
points: all of them are binary64 numbers under the conditions above (at most 52 significant bits,
none below 2**-1074). For such a binary64 number c:

* if hi != c then sign(x - c) = sign(hi - c): rounding to nearest is monotone, so x < c implies
  hi <= c, and hi = c is excluded; likewise for x > c;
* if hi == c then sign(x - c) = sign(lo).

So every comparison, hence Q(x), is the same for x as for any x' strictly between hi and its
binary64 neighbour on the side of lo. We take x' = (|hi| + ε) with the sticky bit ε when lo has
hi's sign, and x' = (pred(|hi|) + ε) when it has the opposite sign (pred: the binary64 just
below in magnitude, i.e. the bit pattern minus one): no binary64 number, hence no grid point,
midpoint or SR threshold, lies strictly between pred(|hi|) and |hi|. The single rounding of
x' — one increment decision on the bits of |hi| (or its predecessor) plus the sticky bit — is
therefore exactly Q(x): one rounding, never two. For SR the discarded fraction's top sr_bits are
read from the binary64 bits, which hold them exactly because the shift is >= 52 - man_bits >=
sr_bits; the sticky ε never reaches them. When the exact sum already fits binary64 (checked from
the operands' exponent ranges), lo == 0 and the same code runs without the sticky bit.

Zero results: binary64 addition gives +0 for an exact zero sum of opposite signs and keeps the
sign of equal-signed zeros, as §6.3 asks for every mode but ``down``, where the kernel sets -0.
A step whose result is not finite (IEEE overflow to inf, or NaN in an "fn" format) is passed on
unchanged and the row is reported; the caller recomputes such rows with the general kernel, so
NaN signs and the like are defined in one place.

Fixed-point accumulators (``fixed_rows``)
-----------------------------------------
Conditions: operands finite and not subnormal, frac <= 1022 (so that the scalings by powers of two
below meet no float64 subnormal; see above); every product is a multiple of the accumulator's lsb (chunked: the
accumulator's lsb is a multiple of the outer one's), so every step's exact sum lies on the grid
and rounding — any mode, SR included — leaves it unchanged; and every value the loop can hold
(a clamped or wrapped running sum plus a product, or two tree nodes) is an integer below 2**24
(float32 lanes) or 2**53 (float64 lanes) in units of the finest lsb. Then s + p is exact in the
lanes and the overflow rule is applied to it exactly: saturate / saturate_symmetric clamp,
saturate_zero zeroes, wrap reduces modulo 2**bits, wrap_sign_magnitude as the ap_fixed table of docs/rounding.md.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.cpython.unsafe.numbers import leading_zeros, trailing_zeros
from numba.extending import intrinsic

_SIGN = np.uint64(1 << 63)
_ABS = np.uint64((1 << 63) - 1)
_FRAC = np.uint64((1 << 52) - 1)
_HID = np.uint64(1 << 52)
_EXPM = np.uint64(0x7FF << 52)
_U1 = np.uint64(1)
_U0 = np.uint64(0)

# float-format parameter slots (accumulate.py fills them)
(F_M, F_EMIN, F_SUB, F_QBELOW, F_MAXBITS, F_OVP, F_OVN, F_NEAREST, F_K0, F_KS, F_KL, F_NEGZERO, F_SR,
 F_SRBITS, F_SRCMP, F_DOWN, F_POWQ) = range(17)
NF = 17
# fixed-format parameter slots: range and rule in units of the finest lsb
(X_RULE, X_SIGNED) = range(2)
NX = 2
RULE_SAT, RULE_SAT_ZERO, RULE_WRAP, RULE_WRAP_SM = 0, 1, 2, 3


@njit(inline="always")
def _f2u(x):
    return np.float64(x).view(np.uint64)


@njit(inline="always")
def _u2f(b):
    return np.uint64(b).view(np.float64)


@njit
def rnd(ab, sgn, st, uw, m, emin, qbelow, pow_qbelow, maxbits, ovp, ovn, nearest, k0, ks, kl, negzero,
        sr, r, cmp):
    """Round the magnitude bits ``ab`` (+ ε when st) with sign ``sgn`` to the float format; the
    result as float64 bits. All selects, so the loop around it vectorises."""
    E = np.int64(ab >> np.uint64(52))
    Ee = max(E, np.int64(1))
    mant = (ab & _FRAC) | (_HID if E != 0 else _U0)
    below = Ee - 1023 < emin
    s_true = qbelow + 1075 - Ee if below else 52 - m
    s = min(s_true, np.int64(63))
    us = np.uint64(s)
    q = mant >> us
    rem = mant & ((_U1 << us) - _U1)
    half = (_U1 << us) >> _U1
    rule = (k0 ^ (ks & np.int64(sgn)) ^ (kl & np.int64(q & _U1))) == 1
    above = (rem > half) | ((rem == half) & st)
    tie = (rem == half) & (not st)
    inexact = (rem != _U0) | st
    inc = (above | (tie & rule)) if nearest else (inexact & rule)
    if sr:
        sh = s_true - r
        t = rem >> np.uint64(min(sh, np.int64(63))) if sh < 64 else _U0
        inc = (np.uint64(uw) < t) if cmp else (t + np.uint64(uw) >= (_U1 << np.uint64(r)))
    qi = q + np.uint64(inc)
    rab_normal = ((ab >> us) + np.uint64(inc)) << us
    rab_below = _f2u(np.float64(qi) * pow_qbelow)
    rab = rab_below if below else rab_normal
    res = (ovn if sgn else ovp) if rab > maxbits else (rab | (np.uint64(sgn) << np.uint64(63)))
    if rab == _U0 and not negzero:
        res = _U0
    return res


@njit
def fstep(s, p, uw, twosum, down, m, emin, qbelow, pow_qbelow, maxbits, ovp, ovn, nearest, k0, ks, kl,
          negzero, sr, r, cmp):
    """Q(s + p) for finite or non-finite float64 s, p (non-finite results pass through)."""
    hi = s + p
    hb = _f2u(hi)
    st = False
    if twosum:
        bp = hi - s
        lo = (s - (hi - bp)) + (p - bp)
        st = lo != 0.0
        opp = st and ((hb ^ _f2u(lo)) >> np.uint64(63)) != _U0
        hb = hb - np.uint64(opp)  # the binary64 just below |hi| in magnitude
    if down and hi == 0.0:
        hb = (_f2u(s) | _f2u(p)) & _SIGN
    sgn = hb >> np.uint64(63)
    res = rnd(hb & _ABS, sgn, st, uw, m, emin, qbelow, pow_qbelow, maxbits, ovp, ovn, nearest, k0, ks, kl,
              negzero, sr, r, cmp)
    if (_f2u(hi) & _EXPM) == _EXPM:
        res = _f2u(hi)
    return _u2f(res)


@njit
def fround(p, m, emin, qbelow, pow_qbelow, maxbits, ovp, ovn, nearest, k0, ks, kl, negzero):
    """Round a finite float64 (a product) once to the product format (deterministic mode)."""
    b = _f2u(p)
    res = rnd(b & _ABS, b >> np.uint64(63), False, 0, m, emin, qbelow, pow_qbelow, maxbits, ovp, ovn,
              nearest, k0, ks, kl, negzero, False, 1, False)
    return _u2f(res)


# round-to-nearest-even parameter slots (accumulate.py fills them; see rne_step)
R_SUB, R_CLOW, R_CADD, R_CNOSUB, R_EMINBITS, R_MAXF, R_OVMAG, R_ZADD = range(8)
NR = 8


@njit(inline="always")
def rne_step(s, p, twosum, sub, c_low, c_add, c_nosub, emin_bits, maxf, ov_mag, zadd):
    """Q(s + p) for round-to-nearest-even, by the magic-constant method (the hot path).

    For x = |s + p| with quantum Q (2**(e - m) in the binade 2**e <= x < 2**(e+1), the fixed
    subnormal quantum below the normal range, or 2**emin there without subnormals) take
    C = 1.5 * 2**52 * Q: x + C lies in [2**52 Q, 2**53 Q), where binary64's spacing is Q, so
    fl(x + C) is x rounded to a multiple of Q, ties to even (C/Q = 1.5 * 2**52 is even), and
    fl(x + C) - C is exact. That is RNE on the format's grid with unbounded exponent (x < 2**(m+1) Q
    keeps x + C in that binade as m <= 50). C's bits come straight from x's exponent field:
    max(E, E_min) + (52 - m, 2**51) (or a select without subnormals). The overflow check follows on
    the rounded magnitude (a NaN or inf input stays non-finite: the caller recomputes such rows),
    then the sign is put back; adding zadd (-0.0, or +0.0 for formats without -0) turns -0 into +0
    only where the format has no -0 and changes nothing else.

    With TwoSum's lo != 0 the exact sum is x' = x ± ε (see the module docstring): RNE of x equals
    RNE of x' unless x is a midpoint (x - r = ±Q/2), where the side of lo decides: past the
    midpoint (lo pushes away from r) rounds to r ± Q, else to r.
    """
    hi = s + p
    b = _f2u(hi)
    x = _u2f(b & _ABS)
    eb = b & _EXPM
    if sub:
        cb = max(eb, c_low) + c_add
    else:
        cb = eb + c_add if eb >= emin_bits else c_nosub
    C = _u2f(cb)
    r = (x + C) - C
    if twosum:
        bp = hi - s
        lo = (s - (hi - bp)) + (p - bp)
        half = _u2f((cb & _EXPM) - np.uint64(53 << 52))  # Q/2
        d = x - r
        same = ((_f2u(lo) ^ b) >> np.uint64(63)) == _U0
        nz_lo = lo != 0.0
        r = r + (half + half) if (d == half) & nz_lo & same else r
        r = r - (half + half) if (d == -half) & nz_lo & (not same) else r
    mb = ov_mag if r > maxf else _f2u(r)
    return _u2f(mb | (b & _SIGN)) + zadd


@njit(inline="always")
def _step(s, p, uw, rne, twosum, down, sr, r, cmp, F, Rp):
    """One accumulation step in the format whose unpacked parameters are F (and Rp for RNE)."""
    if rne:
        sub, c_low, c_add, c_nosub, emin_bits, maxf, ov_mag, zadd = Rp
        return rne_step(s, p, twosum, sub, c_low, c_add, c_nosub, emin_bits, maxf, ov_mag, zadd)
    m, emin, qb, pq, mx, ovp, ovn, near, k0, ks, kl, nz, sub = F
    return fstep(s, p, uw, twosum, down, m, emin, qb, pq, mx, ovp, ovn, near, k0, ks, kl, nz, sr, r, cmp)


@njit(inline="always")
def _unpack_rne(R):
    return (R[R_SUB] != 0, np.uint64(R[R_CLOW]), np.uint64(R[R_CADD]), np.uint64(R[R_CNOSUB]),
            np.uint64(R[R_EMINBITS]), _u2f(np.uint64(R[R_MAXF])), np.uint64(R[R_OVMAG]), _u2f(np.uint64(R[R_ZADD])))


@njit(inline="always")
def _unpack(F):
    return (F[F_M], F[F_EMIN], F[F_QBELOW], _u2f(np.uint64(F[F_POWQ])), np.uint64(F[F_MAXBITS]),
            np.uint64(F[F_OVP]), np.uint64(F[F_OVN]), F[F_NEAREST] != 0, np.int64(F[F_K0]), np.int64(F[F_KS]),
            np.int64(F[F_KL]), F[F_NEGZERO] != 0, F[F_SUB] != 0)


@njit(cache=True, nogil=True)
def float_rows(A3, B3, ia, ib, M, N, K, order, chunk, init, Fa, Fo, Fp, Ra, Ro, has_prod, twosum, rne, u, T,
               rows_ids, out, bad):
    """Rows ``rows_ids`` (indices into the nbatch*M output rows) of the product with a float
    accumulator: out[n] is row rows_ids[n] (float64); bad[n] = 1 when a value in it is not finite
    (the caller recomputes that row with the general kernel). ``rne``: the mode is nearest_even
    and the formats qualify for rne_step."""
    Pa = _unpack(Fa)
    Po = _unpack(Fo)
    Qa = _unpack_rne(Ra)
    Qo = _unpack_rne(Ro)
    p_m, p_emin, p_qb, p_pq, p_max, p_ovp, p_ovn, p_near, p_k0, p_ks, p_kl, p_nz, p_sub = _unpack(Fp)
    sr = Fa[F_SR] != 0
    r = Fa[F_SRBITS]
    cmp = Fa[F_SRCMP] != 0
    down = Fa[F_DOWN] != 0
    for n_row in range(rows_ids.size):
        row = rows_ids[n_row]
        b = row // M
        i = row - b * M
        A = A3[ia[b]]
        B = B3[ib[b]]
        s = np.empty(N, np.float64)
        for j in range(N):
            s[j] = init[(row * N + j) % init.size]
        base = row * N * T
        t = 0
        if order == 1:  # pairwise: leaves are the (product-rounded) products
            nodes = np.empty((K, N), np.float64)
            sc = np.empty(N, np.float64)
            for k in range(K):
                a = A[i, k]
                Bk = B[k]
                leaf = nodes[k]
                if has_prod:
                    for j in range(N):
                        leaf[j] = fround(a * Bk[j], p_m, p_emin, p_qb, p_pq, p_max, p_ovp, p_ovn, p_near, p_k0,
                                         p_ks, p_kl, p_nz)
                else:
                    for j in range(N):
                        leaf[j] = a * Bk[j]
            n = K
            while n > 1:
                half = n // 2
                for q in range(half):
                    x = nodes[2 * q]
                    y = nodes[2 * q + 1]
                    dst = sc if q == 0 else nodes[q]  # row 0 is still read: write it after the loop
                    if sr:
                        for j in range(N):
                            dst[j] = _step(x[j], y[j], u[base + j * T + t], False, twosum, down, True, r, cmp, Pa, Qa)
                    elif rne:
                        for j in range(N):
                            dst[j] = _step(x[j], y[j], 0, True, twosum, down, False, r, cmp, Pa, Qa)
                    else:
                        for j in range(N):
                            dst[j] = _step(x[j], y[j], 0, False, twosum, down, False, r, cmp, Pa, Qa)
                    if q == 0:
                        nodes[0, :] = sc
                    t += 1
                if n % 2:
                    for j in range(N):
                        nodes[half, j] = nodes[n - 1, j]
                n = half + n % 2
            for j in range(N):
                uw = u[base + j * T + t] if sr else 0
                s[j] = _step(s[j], nodes[0, j], uw, rne, twosum, down, sr, r, cmp, Pa, Qa)
        else:  # sequential (one chunk of length K, from init) or chunked
            step_len = chunk if order == 2 else K
            sc = np.empty(N, np.float64)
            for c0 in range(0, K, step_len):
                for j in range(N):
                    sc[j] = 0.0 if order == 2 else s[j]
                for k in range(c0, min(c0 + step_len, K)):
                    a = A[i, k]
                    if has_prod or sr:
                        for j in range(N):
                            p = a * B[k, j]
                            if has_prod:
                                p = fround(p, p_m, p_emin, p_qb, p_pq, p_max, p_ovp, p_ovn, p_near, p_k0, p_ks,
                                           p_kl, p_nz)
                            uw = u[base + j * T + t] if sr else 0
                            sc[j] = _step(sc[j], p, uw, rne, twosum, down, sr, r, cmp, Pa, Qa)
                    elif rne:
                        for j in range(N):
                            sc[j] = _step(sc[j], a * B[k, j], 0, True, twosum, down, False, r, cmp, Pa, Qa)
                    else:
                        for j in range(N):
                            sc[j] = _step(sc[j], a * B[k, j], 0, False, twosum, down, False, r, cmp, Pa, Qa)
                    t += 1
                if order == 2:  # words: the K chunk steps first, then the outer steps
                    t_outer = K + c0 // step_len
                    for j in range(N):
                        uw = u[base + j * T + t_outer] if sr else 0
                        s[j] = _step(s[j], sc[j], uw, rne, twosum, down, sr, r, cmp, Po, Qo)
                else:
                    for j in range(N):
                        s[j] = sc[j]
        flag = 0
        for j in range(N):
            out[n_row, j] = s[j]
            if not np.isfinite(s[j]):
                flag = 1
        bad[n_row] = flag


@njit(inline="always")
def _rne_row(A3, B3, ia, ib, M, N, K, init, Ra, twosum, row, out, n_row):
    """One output row of float_rows_rne into out[n_row]; 1 when a value in it is not finite."""
    sub, c_low, c_add, c_nosub, emin_bits, maxf, ov_mag, zadd = _unpack_rne(Ra)
    b = row // M
    i = row - b * M
    A = A3[ia[b]]
    B = B3[ib[b]]
    s = np.empty(N, np.float64)
    for j in range(N):
        s[j] = init[(row * N + j) % init.size]
    for k in range(K):
        a = A[i, k]
        for j in range(N):
            s[j] = rne_step(s[j], a * B[k, j], twosum, sub, c_low, c_add, c_nosub, emin_bits, maxf, ov_mag, zadd)
    flag = 0
    for j in range(N):
        out[n_row, j] = s[j]
        if not np.isfinite(s[j]):
            flag = 1
    return flag


@njit(cache=True, nogil=True)
def float_rows_rne(A3, B3, ia, ib, M, N, K, init, Ra, twosum, rows_ids, out, bad):
    """float_rows for the hot case (sequential order, nearest_even, exact products), as a small
    kernel that LLVM vectorises best."""
    for n_row in range(rows_ids.size):
        bad[n_row] = _rne_row(A3, B3, ia, ib, M, N, K, init, Ra, twosum, rows_ids[n_row], out, n_row)


@njit(inline="always")
def xstep(s, p, lo, hi, rule, signed, mw, unit):
    """The overflow rule applied to the exact s + p (values in units of the finest lsb)."""
    x = s + p
    if rule == RULE_SAT:
        return min(max(x, lo), hi)
    if rule == RULE_SAT_ZERO:
        return x if (x >= lo) & (x <= hi) else lo - lo
    t = np.floor(x / mw)  # the integer above the low `bits` bits (two's complement)
    w = x - t * mw if not signed else x - np.floor((x - lo) / mw) * mw
    if rule == RULE_WRAP:
        return w
    dropped = (t - 2 * np.floor(t / 2)) != 0  # bit `bits` of the rounded integer
    return -w - unit if (w < 0) != dropped else w


@njit(cache=True, nogil=True)
def fixed_rows(A3, B3, ia, ib, M, N, K, order, chunk, init, Xa, Xo, rows_ids, out):
    """Rows of the product with a fixed-point accumulator, exact in float32 or float64 lanes (the
    dtype of A3, B3 and init). Xa/Xo: (lo, hi, rule, signed, modulus, unit) in lanes' dtype.
    out[n] (float64) is output row rows_ids[n]."""
    a_lo, a_hi, a_rule, a_signed, a_mw, a_unit = Xa[0], Xa[1], np.int64(Xa[2]), Xa[3] != 0, Xa[4], Xa[5]
    o_lo, o_hi, o_rule, o_signed, o_mw, o_unit = Xo[0], Xo[1], np.int64(Xo[2]), Xo[3] != 0, Xo[4], Xo[5]
    zero = init.dtype.type(0)
    for n_row in range(rows_ids.size):
        row = rows_ids[n_row]
        b = row // M
        i = row - b * M
        A = A3[ia[b]]
        B = B3[ib[b]]
        s = np.empty(N, init.dtype)
        for j in range(N):
            s[j] = init[(row * N + j) % init.size]
        if order == 1:
            nodes = np.empty((K, N), init.dtype)
            for k in range(K):
                a = A[i, k]
                for j in range(N):
                    nodes[k, j] = a * B[k, j]
            n = K
            while n > 1:
                half = n // 2
                for q in range(half):
                    for j in range(N):
                        nodes[q, j] = xstep(nodes[2 * q, j], nodes[2 * q + 1, j], a_lo, a_hi, a_rule, a_signed,
                                            a_mw, a_unit)
                if n % 2:
                    for j in range(N):
                        nodes[half, j] = nodes[n - 1, j]
                n = half + n % 2
            for j in range(N):
                s[j] = xstep(s[j], nodes[0, j], a_lo, a_hi, a_rule, a_signed, a_mw, a_unit)
        elif order == 2:
            sc = np.empty(N, init.dtype)
            for c0 in range(0, K, chunk):
                for j in range(N):
                    sc[j] = zero
                for k in range(c0, min(c0 + chunk, K)):
                    a = A[i, k]
                    for j in range(N):
                        sc[j] = xstep(sc[j], a * B[k, j], a_lo, a_hi, a_rule, a_signed, a_mw, a_unit)
                for j in range(N):
                    s[j] = xstep(s[j], sc[j], o_lo, o_hi, o_rule, o_signed, o_mw, o_unit)
        else:
            for k in range(K):
                a = A[i, k]
                if a_rule == RULE_SAT:  # the common case, spelled out so that it vectorises tightly
                    for j in range(N):
                        s[j] = min(max(s[j] + a * B[k, j], a_lo), a_hi)
                else:
                    for j in range(N):
                        s[j] = xstep(s[j], a * B[k, j], a_lo, a_hi, a_rule, a_signed, a_mw, a_unit)
        for j in range(N):
            out[n_row, j] = s[j]


@njit(cache=True)
def scan(v):
    """(all finite, any nonzero, max |v|, top, low, width) of a flat float64 array: 2**top <=
    max|v| < 2**(top+1), 2**low is the lowest set bit of any nonzero element, and width the most
    significant bits any one element has (exact, from the bits). Branch-free reductions, so that
    the loop vectorises: zeros and inf/NaN are counted out by selects."""
    n_special = 0
    n_nonzero = 0
    mx = _U0  # max |v| as bits (a float max would read subnormals as 0 under MXCSR.DAZ)
    top = np.int64(-2000)
    low = np.int64(2000)
    width = np.int64(0)
    for j in range(v.size):
        b = _f2u(v[np.uintp(j)]) & _ABS
        E = np.int64(b >> np.uint64(52))
        special = E == 2047
        use = (b != _U0) & ~special  # a finite nonzero element
        mant = (b & _FRAC) | (_HID if E != 0 else _U0)
        mant = mant if use else _HID  # (never 0: the bit counts below stay defined)
        e0 = max(E, np.int64(1)) - 1075  # exponent of mant's bit 0
        tz = np.int64(trailing_zeros(mant))
        hb = 63 - np.int64(leading_zeros(mant))
        low = min(low, e0 + tz if use else np.int64(2000))
        top = max(top, e0 + hb if use else np.int64(-2000))
        width = max(width, hb - tz + 1 if use else np.int64(0))
        mx = max(mx, _U0 if special else b)
        n_special += special
        n_nonzero += use
    return n_special == 0, n_nonzero != 0, _u2f(mx), top, low, width


@njit(cache=True)
def wrap_inplace(x, lo, mw):
    """x (exact integers in float64) reduced modulo mw into [lo, lo + mw), in place."""
    for i in range(x.size):
        v = x.flat[i]
        x.flat[i] = v - np.floor((v - lo) / mw) * mw


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c rounded once (LLVM's llvm.fma.f64: the hardware instruction, or a correct emulation)."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        d = ir.DoubleType()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(d, [d, d, d]), "llvm.fma.f64")
        return builder.call(fn, args)

    return sig, codegen


# operands of emul/_kernels/rowwise.py: 0, or 2**-400 <= |x| < 2**500 (exponent fields), so that every
# product is normal, cannot overflow, and its rounding error x*y - fl(x*y), a multiple of 2**-904, is 0 or normal
_ROW_ELO = np.uint64(1023 - 400)
_ROW_EHI = np.uint64(1023 + 500)


_I16 = np.int16


@njit(cache=True, nogil=True)
def sat_rows_i16(A3, B3, ia, ib, M, N, K, init, lo, hi, rows_ids, out):
    """fixed_rows for a saturating accumulator in sequential order on int16 lanes (twice as many
    per vector as float32): out[n] (float64) is output row rows_ids[n], s = min(max(s + a*b, lo),
    hi) per step. Exact when (the caller checks) every operand, product and clamped sum plus
    product lies in (-2**15, 2**15): then the int16 wrap-around of ``s + a*b`` never happens."""
    lo16 = _I16(lo)
    hi16 = _I16(hi)
    for n_row in range(rows_ids.size):
        row = rows_ids[n_row]
        b = row // M
        i = row - b * M
        A = A3[ia[b]]
        B = B3[ib[b]]
        s = np.empty(N, np.int16)
        for j in range(N):
            s[j] = init[(row * N + j) % init.size]
        K4 = K - K % 4
        for k in range(0, K4, 4):  # four steps per pass over s: s stays in registers between them
            a0, a1, a2, a3 = A[i, k], A[i, k + 1], A[i, k + 2], A[i, k + 3]
            b0, b1, b2, b3 = B[k], B[k + 1], B[k + 2], B[k + 3]
            for j in range(N):
                x = min(max(_I16(s[j] + _I16(a0 * b0[j])), lo16), hi16)
                x = min(max(_I16(x + _I16(a1 * b1[j])), lo16), hi16)
                x = min(max(_I16(x + _I16(a2 * b2[j])), lo16), hi16)
                s[j] = min(max(_I16(x + _I16(a3 * b3[j])), lo16), hi16)
        for k in range(K4, K):
            a = A[i, k]
            Bk = B[k]
            for j in range(N):
                x = _I16(s[j] + _I16(a * Bk[j]))
                s[j] = min(max(x, lo16), hi16)
        for j in range(N):
            out[n_row, j] = s[j]
