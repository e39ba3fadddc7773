"""Numba helpers: exact results of + − × ÷ √ as wide integers, rounded once by emul/_kernels/round.py.

An exact finite result is a *frame*: ``(-1)**sign * (W + ε) * 2**fe`` with ``W = w2·2**128 +
w1·2**64 + w0`` a 192-bit integer and ``ε`` in (0, 1) when ``st`` (sticky) is set. Frames come from

- :func:`mul_frame`: the 128-bit product of two 64-bit magnitudes (exact, no sticky);
- :func:`add_frame`: the sum of two 128-bit magnitudes, aligned in 192 bits; only an operand
  shifted below the frame's bottom (then the other one is at least 2**125 times larger) leaves a
  sticky bit, and a subtraction then borrows one unit: ``x − (y + ε) = (x − y − 1) + (1 − ε)``;
- :func:`div_frame`: a 128-bit quotient by long division, the remainder ≠ 0 as sticky;
- :func:`sqrt_frame`: an integer square root of up to 96 bits (as many as the rounding reads),
  the remainder ≠ 0 as sticky.

:func:`finish` rounds a frame once. It picks the quantum exponent ``qe`` exactly as
``float_code`` / ``fixed_code`` would for the exact value, reads the integer ``q`` above the quantum
and the next 64 fraction bits ``F`` (plus sticky) from the frame, takes the rounding decision with
the core's ``increment`` (the one definition of every mode, given the kept code's last bit as
float_code computes it), and hands the rounded value
``(q + inc)·2**qe`` — now exactly on the format's grid — to ``float_code`` / ``fixed_code``, which
build the code and apply the overflow rule without rounding again. This way the decision sees all
the fraction bits stochastic rounding needs (``sr_bits`` up to 32, whatever the precision), which a
64-bit ``mag`` could not carry for wide formats.

Fixed-point formats with a wrap rule only need the rounded integer modulo ``2**(bits+1)``
(rounding never looks above the last kept bit, and wrap / wrap_sign_magnitude only look at the
low ``bits + 1`` bits), so a sum whose larger operand is more than 2**126 lsb is formed in a frame
anchored at the lsb instead, modulo ``2**96`` lsb, with the sign taken from the exact comparison of
the magnitudes. Results that still lack bits (a quotient or root far above a wrapping format's
range) are reported to the caller (``NEED_EXACT``), which redoes them with Python integers.
"""

import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import leading_zeros

from . import round as R

_Z = np.uint64(0)
_1 = np.uint64(1)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
_M32 = np.uint64(0xFFFFFFFF)
_B32 = np.uint64(1 << 32)

# Result kinds and error flags shared by the kernels.
FINITE, INF, NAN = 0, 1, 2
BAD_NAN, BAD_INF, NEED_EXACT = 1, 2, 3


@njit
def clz(x):
    """Leading zeros of a nonzero uint64."""
    return np.int64(leading_zeros(x))


@njit
def mul128(a, b):
    """(hi, lo): the exact 128-bit product of two uint64."""
    a0 = a & _M32
    a1 = a >> np.uint64(32)
    b0 = b & _M32
    b1 = b >> np.uint64(32)
    p00 = a0 * b0
    p01 = a0 * b1
    p10 = a1 * b0
    p11 = a1 * b1
    mid = (p00 >> np.uint64(32)) + (p01 & _M32) + (p10 & _M32)
    lo = (mid << np.uint64(32)) | (p00 & _M32)
    hi = p11 + (p01 >> np.uint64(32)) + (p10 >> np.uint64(32)) + (mid >> np.uint64(32))
    return hi, lo


@njit
def norm128(h, l, e):
    """Shift a nonzero (h·2**64 + l)·2**e so that bit 127 is set."""
    if h == _Z:
        h = l
        l = _Z
        e -= 64
    n = clz(h)
    if n:
        h = (h << np.uint64(n)) | (l >> np.uint64(64 - n))
        l = l << np.uint64(n)
        e -= n
    return h, l, e


@njit
def limb(w2, w1, w0, i):
    if i == 0:
        return w0
    if i == 1:
        return w1
    if i == 2:
        return w2
    return _Z


@njit
def window(w2, w1, w0, pos):
    """Bits pos … pos+63 of the 192-bit W (bits outside 0…191 read as 0; pos may be negative)."""
    if pos >= 192 or pos <= -64:
        return _Z
    i = pos >> 6
    sh = pos - 64 * i
    lo = limb(w2, w1, w0, i)
    if sh == 0:
        return lo
    hi = limb(w2, w1, w0, i + 1)
    return (lo >> np.uint64(sh)) | (hi << np.uint64(64 - sh))


@njit
def any_below(w2, w1, w0, pos):
    """Whether W has a set bit below position pos."""
    if pos <= 0:
        return False
    if pos >= 192:
        return (w2 | w1 | w0) != _Z
    i = pos >> 6
    sh = pos - 64 * i
    found = False
    for j in range(i):
        found = found or limb(w2, w1, w0, j) != _Z
    if sh:
        found = found or (limb(w2, w1, w0, i) & ((_1 << np.uint64(sh)) - _1)) != _Z
    return found


@njit
def top_bit(w2, w1, w0):
    """Index of the highest set bit of W (-1 when W == 0)."""
    if w2 != _Z:
        return 191 - clz(w2)
    if w1 != _Z:
        return 127 - clz(w1)
    if w0 != _Z:
        return 63 - clz(w0)
    return -1


@njit
def shr192(w2, w1, w0, n):
    """(W >> n, whether set bits were shifted out), n >= 0."""
    if n == 0:
        return w2, w1, w0, False
    if n >= 192:
        return _Z, _Z, _Z, (w2 | w1 | w0) != _Z
    st = False
    while n >= 64:
        st = st or w0 != _Z
        w0 = w1
        w1 = w2
        w2 = _Z
        n -= 64
    if n:
        k = np.uint64(n)
        c = np.uint64(64 - n)
        st = st or (w0 << c) != _Z
        w0 = (w0 >> k) | (w1 << c)
        w1 = (w1 >> k) | (w2 << c)
        w2 = w2 >> k
    return w2, w1, w0, st


@njit
def shl192(w2, w1, w0, n):
    """W << n modulo 2**192, n >= 0."""
    if n >= 192:
        return _Z, _Z, _Z
    while n >= 64:
        w2 = w1
        w1 = w0
        w0 = _Z
        n -= 64
    if n:
        k = np.uint64(n)
        c = np.uint64(64 - n)
        w2 = (w2 << k) | (w1 >> c)
        w1 = (w1 << k) | (w0 >> c)
        w0 = w0 << k
    return w2, w1, w0


@njit
def place(h, l, sh):
    """The 128-bit (h, l) shifted by sh (left if positive) into 192 bits: (w2, w1, w0, sticky)."""
    if sh >= 0:
        w2, w1, w0 = shl192(_Z, h, l, sh)
        return w2, w1, w0, False
    return shr192(_Z, h, l, -sh)


@njit
def add192(a2, a1, a0, b2, b1, b0):
    s0 = a0 + b0
    c0 = np.uint64(s0 < a0)
    s1 = a1 + b1
    c1 = np.uint64(s1 < a1)
    s1b = s1 + c0
    c1 = c1 + np.uint64(s1b < s1)
    s2 = a2 + b2 + c1
    return s2, s1b, s0


@njit
def sub192(a2, a1, a0, b2, b1, b0):
    d0 = a0 - b0
    br0 = np.uint64(a0 < b0)
    d1 = a1 - b1
    br1 = np.uint64(a1 < b1)
    d1b = d1 - br0
    br1 = br1 + np.uint64(d1 < br0)
    d2 = a2 - b2 - br1
    return d2, d1b, d0


@njit
def add_frame(sx, xh, xl, ex, sy, yh, yl, ey, anchored, lsb_e):
    """Exact x + y of two nonzero signed 128-bit magnitudes; (sign, w2, w1, w0, fe, st, zero).

    ``zero`` is set for an exact zero (x == -y); its sign is left to the caller.
    ``anchored``: the result is only needed modulo 2**96 · 2**lsb_e (a wrapping fixed format),
    which keeps the bits around the lsb exact however large the operands are.
    """
    xh, xl, ex = norm128(xh, xl, ex)
    yh, yl, ey = norm128(yh, yl, ey)
    if ey > ex or (ey == ex and (yh > xh or (yh == xh and yl > xl))):
        sx, xh, xl, ex, sy, yh, yl, ey = sy, yh, yl, ey, sx, xh, xl, ex
    sub = sx != sy
    if sub and ex == ey and xh == yh and xl == yl:
        return sx, _Z, _Z, _Z, np.int64(0), False, True
    if anchored and ex + 127 - lsb_e > 126:
        # |x| >= 2**126 lsb has no bits below lsb - 1: it fits the lsb-anchored frame exactly.
        fe = lsb_e - 96
        x2, x1, x0, _ = place(xh, xl, ex - fe)
        y2, y1, y0, st = place(yh, yl, ey - fe)
    else:
        fe = ex - 63  # |x| occupies bits 190…63; bit 191 takes the carry
        x2 = xh >> _1
        x1 = (xh << np.uint64(63)) | (xl >> _1)
        x0 = xl << np.uint64(63)
        y2, y1, y0, st = shr192(yh >> _1, (yh << np.uint64(63)) | (yl >> _1), yl << np.uint64(63), ex - ey)
    if sub:
        w2, w1, w0 = sub192(x2, x1, x0, y2, y1, y0)
        if st:  # x - (y + ε) = (x - y - 1) + (1 - ε)
            w2, w1, w0 = sub192(w2, w1, w0, _Z, _Z, _1)
    else:
        w2, w1, w0 = add192(x2, x1, x0, y2, y1, y0)
    return sx, w2, w1, w0, fe, st, False


@njit
def divlu(u1, u0, v):
    """(floor((u1·2**64 + u0) / v), remainder) for u1 < v and v >= 2**63 (Knuth D, base 2**32)."""
    vn1 = v >> np.uint64(32)
    vn0 = v & _M32
    un1 = u0 >> np.uint64(32)
    un0 = u0 & _M32
    q1 = u1 // vn1
    rhat = u1 - q1 * vn1
    while q1 >= _B32 or q1 * vn0 > ((rhat << np.uint64(32)) | un1):
        q1 -= _1
        rhat += vn1
        if rhat >= _B32:
            break
    un21 = (u1 << np.uint64(32)) + un1 - q1 * v
    q0 = un21 // vn1
    rhat = un21 - q0 * vn1
    while q0 >= _B32 or q0 * vn0 > ((rhat << np.uint64(32)) | un0):
        q0 -= _1
        rhat += vn1
        if rhat >= _B32:
            break
    r = (un21 << np.uint64(32)) + un0 - q0 * v
    return (q1 << np.uint64(32)) + q0, r


@njit
def div_frame(ma, ea, mb, eb):
    """Frame of (ma·2**ea) / (mb·2**eb) for nonzero magnitudes: a 128-bit quotient and sticky."""
    na = clz(ma)
    nb = clz(mb)
    ma = ma << np.uint64(na)
    mb = mb << np.uint64(nb)
    ea -= na
    eb -= nb
    if ma >= mb:  # numerator ma·2**127: its high limb ma >> 1 < mb
        q1, r = divlu(ma >> _1, ma << np.uint64(63), mb)
        fe = ea - eb - 127
    else:
        q1, r = divlu(ma, _Z, mb)
        fe = ea - eb - 128
    q0, r = divlu(r, _Z, mb)
    return _Z, q1, q0, fe, r != _Z


@njit
def sqrt_frame(m, e, nbits):
    """Frame of sqrt(m·2**e), m > 0: the top ``nbits`` (<= 96) bits of the root of a 192-bit
    radicand, the remainder (and any radicand bits not yet consumed) as sticky."""
    n = clz(m)
    m = m << np.uint64(n)
    e -= n
    # radicand m·2**k in 192 bits with e - k even: k = 128 (top bit 191) or 127 (top bit 190)
    k = 128 if (e - 128) % 2 == 0 else 127
    r2 = m >> np.uint64(128 - k)
    r1 = _Z if k == 128 else m << np.uint64(63)
    root_h = _Z
    root_l = _Z
    rem_h = _Z
    rem_l = _Z
    for i in range(nbits):
        two = window(r2, r1, _Z, 190 - 2 * i) & np.uint64(3)
        # rem = rem·4 + two; trial = root·4 + 1; both stay below 2**99
        rem_h = (rem_h << np.uint64(2)) | (rem_l >> np.uint64(62))
        rem_l = (rem_l << np.uint64(2)) | two
        t_h = (root_h << np.uint64(2)) | (root_l >> np.uint64(62))
        t_l = (root_l << np.uint64(2)) | _1
        root_h = (root_h << _1) | (root_l >> np.uint64(63))
        root_l = root_l << _1
        if rem_h > t_h or (rem_h == t_h and rem_l >= t_l):
            borrow = np.uint64(rem_l < t_l)
            rem_l = rem_l - t_l
            rem_h = rem_h - t_h - borrow
            root_l = root_l | _1
    st = (rem_h | rem_l) != _Z or any_below(r2, r1, _Z, 192 - 2 * nbits)
    return _Z, root_h, root_l, (e - k) // 2 + (96 - nbits), st


@njit
def is_wrap(P):
    return P[R.KIND] == 1 and (P[R.RULE] == R.RULE_WRAP or P[R.RULE] == R.RULE_WRAP_SM)


@njit
def is_down(P):
    """Rounding toward -inf: an exact zero sum of opposite signs is -0 (IEEE 754 §6.3)."""
    return P[R.SR] == 0 and P[R.NEAREST] == 0 and P[R.K0] == 0 and P[R.KS] == 1 and P[R.KL] == 0


@njit
def zero_sum_sign(sx, sy, P):
    """Sign of an exact zero sum of two operands with signs sx, sy (equal signs are kept)."""
    if sx == sy:
        return sx
    return np.int64(1) if is_down(P) else np.int64(0)


@njit
def finish(sign, w2, w1, w0, fe, st, u, P):
    """(code, flag): the frame rounded once to the format of P. flag is NEED_EXACT when the frame
    lacks the bits the rounding needs (only for wrapping fixed-point formats), else 0."""
    if w2 == _Z and w1 == _Z and not st:
        # exact and within 64 bits: the core's rounding sees every bit (zero included)
        if P[R.KIND] == 0:
            return R.float_code(sign, w0, fe, False, u, P), 0
        return R.fixed_code(sign, w0, fe, False, u, P), 0
    top = top_bit(w2, w1, w0)
    x_exp = fe + top
    if P[R.KIND] == 0:
        if x_exp > P[R.EMAX]:
            return R.float_code(sign, R._HALF, x_exp - 63, False, u, P), 0  # overflow, by the core
        if x_exp >= P[R.EMIN]:
            qe = x_exp - P[R.M]
        elif P[R.SUB]:
            qe = P[R.EMIN] - P[R.M]
        else:
            qe = P[R.EMIN]
    else:
        qe = -P[R.FRAC]
        if x_exp - qe >= 62 and not is_wrap(P):  # far out of range: saturates whatever the bits
            return R.fixed_code(sign, _ALL, qe + 8, False, u, P), 0
    n = qe - fe  # bit index of the quantum in W
    need = P[R.SR_BITS] if P[R.SR] else 1
    if st and n < need:
        return _Z, NEED_EXACT
    q = window(w2, w1, w0, n)
    F = window(w2, w1, w0, n - 64)
    st2 = st or any_below(w2, w1, w0, n - 64)
    if P[R.KIND] == 0:
        # the last bit of the kept code, as float_code computes it (with man_bits == 0 the
        # exponent's last bit decides ties and round-to-odd)
        base = _Z if x_exp < P[R.EMIN] else np.uint64(x_exp - P[R.EMIN]) << np.uint64(P[R.M])
        inc = R.increment(np.int64((base + q) & _1), F, st2, sign, u, P)
        return R.float_code(sign, q + np.uint64(inc), qe, False, u, P), 0
    if is_wrap(P):  # window() reads zeros below bit 0, so q is right modulo 2**(bits+1) for any n
        q = q & ((_1 << np.uint64(P[R.BITS] + 1)) - _1)
    if P[R.SR] and sign:  # fixed point: SR acts on the signed value (as fixed_code does)
        inexact = F != _Z or st2
        G = _Z - F - np.uint64(st2) if inexact else _Z
        r = P[R.SR_BITS]
        t = G >> np.uint64(64 - r)
        toward_pos = (u < t) if P[R.SR_CMP] else (t + u >= (_1 << np.uint64(r)))
        inc = inexact and not toward_pos
    else:
        inc = R.increment(np.int64(q & _1), F, st2, sign, u, P)
    q = q + np.uint64(inc)
    if is_wrap(P):
        q = q & ((_1 << np.uint64(P[R.BITS] + 1)) - _1)
    return R.fixed_code(sign, q, qe, False, u, P), 0


@njit
def special_code(kind, sign, P):
    """(code, flag) of an infinite or NaN result in the format of P (as quantize treats them)."""
    if kind == NAN:
        if P[R.NANC] < 0:
            return _Z, BAD_NAN
        if P[R.FNUZ]:
            return np.uint64(P[R.NANC]), 0
        return np.uint64(P[R.NANC]) | (np.uint64(sign) << np.uint64(P[R.BITS] - 1)), 0
    if P[R.KIND] == 1 and (P[R.RULE] == R.RULE_WRAP or P[R.RULE] == R.RULE_WRAP_SM):
        return _Z, BAD_INF
    return np.uint64(P[R.INF_NEG] if sign else P[R.INF_POS]), 0


@njit
def code_parts(code, P):
    """(kind, sign, mag, e) of a valid code of the format in P: value (-1)**sign · mag · 2**e."""
    bits = P[R.BITS]
    if P[R.KIND] == 1:
        raw = np.int64(code << np.uint64(64 - bits))
        raw = raw >> np.int64(64 - bits) if P[R.SIGNED] else np.int64(code)
        if raw < 0:
            return FINITE, np.int64(1), _Z - np.uint64(raw), -P[R.FRAC]
        return FINITE, np.int64(0), np.uint64(raw), -P[R.FRAC]
    m = P[R.M]
    sign = np.int64((code >> np.uint64(bits - 1)) & _1)
    mag = code & ((_1 << np.uint64(bits - 1)) - _1)
    if mag > np.uint64(P[R.MAXC]):
        if P[R.IEEE] and mag == np.uint64(P[R.INFC]):
            return INF, sign, _Z, np.int64(0)
        return NAN, sign, _Z, np.int64(0)
    if P[R.FNUZ] and sign == 1 and mag == _Z:
        return NAN, np.int64(0), _Z, np.int64(0)
    ef = np.int64(mag >> np.uint64(m))
    f = mag & ((_1 << np.uint64(m)) - _1)
    if ef == 0:
        return FINITE, sign, f, P[R.EMIN] - m
    return FINITE, sign, f | (_1 << np.uint64(m)), ef - P[R.BIAS] - m




@njit
def value(code, P):
    """The float64 value of a valid code, like ``round.code_value`` (built from bits) but keeping
    the sign of a NaN (numba's ``-np.nan`` is a positive NaN). ``v != v`` holds only for NaN, also
    under denormals-are-zero (which reads a subnormal v as 0 on both sides)."""
    v = R.code_value(code, P)
    if v != v and P[R.KIND] == 0 and not P[R.FNUZ] and (code >> np.uint64(P[R.BITS] - 1)) & _1:
        return np.uint64(0xFFF8000000000000).view(np.float64)
    return v


@njit
def sum_exact(kx, sx, xh, xl, ex, ky, sy, yh, yl, ey, P):
    """(kind, sign, w2, w1, w0, fe, st) of x + y for two signed 128-bit magnitudes with kinds
    (FINITE/INF/NAN); a NaN x wins over a NaN y; inf - inf is +NaN; zero signs per §6.3."""
    z = np.int64(0)
    if kx == NAN:
        return NAN, sx, _Z, _Z, _Z, z, False
    if ky == NAN:
        return NAN, sy, _Z, _Z, _Z, z, False
    if kx == INF and ky == INF:
        if sx != sy:
            return NAN, z, _Z, _Z, _Z, z, False
        return INF, sx, _Z, _Z, _Z, z, False
    if kx == INF:
        return INF, sx, _Z, _Z, _Z, z, False
    if ky == INF:
        return INF, sy, _Z, _Z, _Z, z, False
    x_zero = xh == _Z and xl == _Z
    y_zero = yh == _Z and yl == _Z
    if x_zero and y_zero:
        return FINITE, zero_sum_sign(sx, sy, P), _Z, _Z, _Z, z, False
    if x_zero:
        return FINITE, sy, _Z, yh, yl, ey, False
    if y_zero:
        return FINITE, sx, _Z, xh, xl, ex, False
    if xh == _Z and yh == _Z:  # both within 64 bits: exact in 64 bits when they align within 62
        e = min(ex, ey)
        bx = 64 - clz(xl) + (ex - e)
        by = 64 - clz(yl) + (ey - e)
        if bx <= 62 and by <= 62:
            ax = xl << np.uint64(ex - e)
            ay = yl << np.uint64(ey - e)
            if sx == sy:
                return FINITE, sx, _Z, _Z, ax + ay, e, False
            if ax == ay:
                return FINITE, zero_sum_sign(sx, sy, P), _Z, _Z, _Z, z, False
            if ax > ay:
                return FINITE, sx, _Z, _Z, ax - ay, e, False
            return FINITE, sy, _Z, _Z, ay - ax, e, False
    sign, w2, w1, w0, fe, st, zero = add_frame(sx, xh, xl, ex, sy, yh, yl, ey, is_wrap(P), -P[R.FRAC])
    if zero:
        return FINITE, zero_sum_sign(sx, sy, P), _Z, _Z, _Z, z, False
    return FINITE, sign, w2, w1, w0, fe, st


@njit
def mul_exact(va, vb):
    """(kind, sign, hi, lo, e) of the exact product of two input elements (NaN of a wins; 0 * inf
    is +NaN)."""
    sa, ma, ea, ka = R.parts(va)
    sb, mb, eb, kb = R.parts(vb)
    z = np.int64(0)
    if ka == NAN:
        return NAN, sa, _Z, _Z, z
    if kb == NAN:
        return NAN, sb, _Z, _Z, z
    s = sa ^ sb
    if (ka == INF and kb == FINITE and mb == _Z) or (kb == INF and ka == FINITE and ma == _Z):
        return NAN, z, _Z, _Z, z
    if ka == INF or kb == INF:
        return INF, s, _Z, _Z, z
    hi, lo = mul128(ma, mb)
    return FINITE, s, hi, lo, ea + eb
