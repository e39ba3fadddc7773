"""Exact results of + − × ÷ √ and a·b + c as integer parts, in 32-bit JAX lanes.

The arithmetic of :mod:`emul_jax.arith` in two halves: this module computes the *exact* real result
of an operation on float32 (or float16/bfloat16/small integer) operands with integer operations
on ``uint32`` words only, and :func:`emul_jax._round.round_parts` rounds it once. No XLA float
operation ever touches a value (XLA CPU flushes float32 subnormals, fuses ``a*b + c``, turns
``x/c`` into ``x*(1/c)``; see ``docs/jax.md``).

A result is a :class:`Parts`: ``kind`` (FINITE, INF, NAN), ``sign`` and, when finite,

    ``(-1)**sign * (M + ε) * 2**e``,  ``M = hi * 2**32 + lo``,  ``ε`` in (0, 1) iff ``sticky``

— the interface of the rounding primitive. Every finite result below satisfies its precondition
(see ``_round.py``): ``M == 0`` only for an exact zero (no sticky; the one exception, documented
at :func:`add_parts`, is rounded correctly by ``round_fixed``), and whenever ``sticky`` is set
``M`` holds every bit the rounding reads: it is normalised (``hi >= 2**31``), which leaves at
least 40 bits of ``M`` below the quantum of any float format of at most 23 fraction bits and at
least 32 below the lsb of any fixed format for every value under ``2**31`` lsb (larger ones
saturate whatever the low bits are); or a quotient/root was asked for fewer bits (``nbits``),
at least :func:`result_bits` of the format, counted from the leading one; or,
for the fixed-point wrap rules, ``M`` is anchored at the lsb (:func:`add_parts`, :func:`div_parts`
and :func:`sqrt_parts` take ``wrap_frac``): its high word is the integer part modulo ``2**32``
(the wrap rules read bits ``0..bits`` only) and its low word the first 32 fraction bits.

How each operation stays exact in 32-bit lanes (operand significands have at most 32 bits; float
inputs 24):

- **mul**: the 64-bit product of two 32-bit significands from four 16×16-bit partial products.
- **add/sub/fma**: two 64-bit magnitudes (an fma product is one of them), the larger one placed at
  bits 94…31 of a 96-bit frame and the smaller one shifted right by the exponent difference ``d``;
  bits shifted below the frame become a sticky bit ε. That only happens for ``d >= 32``, when the
  smaller term is below ``2**-31`` of the larger, so the sum keeps its top bit within one place
  and the 64 bits kept below it, plus ε, are exact for rounding; a subtraction borrows one unit,
  ``x - (y + ε) = (x - y - 1) + (1 - ε)``, as the core does. Massive cancellation only happens for
  ``d <= 1``, where nothing was shifted out, so the difference is exact and is renormalised.
- **div**: both significands normalised to 24 bits (32 for integer operands wider than 24 bits);
  after the leading quotient bit, 64 more by long division, 8 bits per step with the exact uint32
  integer division (``(R << 8) // D``, ``R < D < 2**24``), or 1 bit per step for 32-bit
  divisors; the final remainder ≠ 0 is the sticky bit.
- **sqrt**: the digit-by-digit (restoring) integer square root of the significand scaled to
  ``2 * nbits`` bits, one root bit per step with a multi-word remainder; remainder ≠ 0 is sticky.

Fixed-point formats with a wrap rule need the result's low integer bits exactly however large it
is (``add(2**80, 3, "int12", overflow="wrap") == 3``): sums are then formed in a frame anchored at
the lsb (modulo ``2**32`` lsb), quotients by reducing the numerator modulo ``divisor * 2**64``
first (``floor(N / D) mod 2**64 == floor((N mod D·2**64) / D)``), roots with as many root bits as
the largest float32 needs.

The internal API (for :mod:`emul_jax.arith` and :mod:`emul_jax.accumulate`): :func:`operand_parts`,
:func:`code_parts`, :func:`mul_parts`, :func:`add_parts`, :func:`sub_parts`, :func:`fma_parts`,
:func:`div_parts`, :func:`sqrt_parts`, :func:`width_of`. Everything is elementwise, jit/vmap-safe,
and works with ``jax_enable_x64`` off.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._bits import (ABS, EXP, FRAC, HIDDEN, U32, as_i32, as_u32, bf16_to_f32_bits, clz, f16_to_f32_bits,
                    f32_bits, i32, low_bits_nonzero, shl, shr, u32, word)

__all__ = ["Parts", "FINITE", "INF", "NAN", "operand_parts", "code_parts", "width_of", "mul_parts",
           "add_parts", "sub_parts", "fma_parts", "div_parts", "sqrt_parts", "negate"]

FINITE, INF, NAN = 0, 1, 2

# The exponent given to zero magnitudes while aligning: far below any real exponent (|e| < 2**10 for
# float32 operands and their products), small enough that differences and shift amounts stay int32.
_ZERO_E = -(1 << 26)


class Parts(NamedTuple):
    """An exact result: ``kind`` (uint32 FINITE/INF/NAN), ``sign`` (uint32 0/1) and, for finite
    results, ``(-1)**sign * (hi * 2**32 + lo + ε) * 2**e`` with ``ε`` in (0, 1) iff ``sticky``
    (bool). ``hi``/``lo`` are uint32, ``e`` int32. A pytree (it travels through ``lax.scan``)."""

    kind: jax.Array
    sign: jax.Array
    hi: jax.Array
    lo: jax.Array
    e: jax.Array
    sticky: jax.Array


def _u(c):
    return u32(c)


def _zeros_u(shape):
    return jnp.zeros(shape, U32)


def _sel(c, a: Parts, b: Parts) -> Parts:
    """Elementwise ``a if c else b`` over every field."""
    return Parts(*(jnp.where(c, x, y) for x, y in zip(a, b)))


def _special(shape, kind, sign) -> Parts:
    """A Parts of one kind (an int) with the given sign (uint32 array or int) everywhere."""
    z = _zeros_u(shape)
    sign = jnp.broadcast_to(jnp.asarray(sign, U32) if isinstance(sign, int) else sign, shape)
    return Parts(jnp.full(shape, _u(kind)), sign, z, z, jnp.zeros(shape, jnp.int32), jnp.zeros(shape, bool))


# -- operands -----------------------------------------------------------------------------------

def width_of(dtype) -> int:
    """The most significand bits an operand of this dtype has (static): 24 for float32/float16/
    bfloat16, the magnitude width for integers (int8: 8, since |-128| = 2**7; int32: 32)."""
    dt = np.dtype(dtype)
    if dt.kind == "f" or dt == np.dtype(jnp.bfloat16):
        return 24
    if dt == np.bool_:
        return 1
    return 8 * dt.itemsize


def f32_parts(b) -> Parts:
    """Parts of float32 bit patterns (uint32): magnitude ``lo`` of at most 24 bits, ``hi = 0``."""
    a = b & _u(ABS)
    ef = a >> _u(23)
    mag = jnp.where(ef == _u(0), a, (a & _u(FRAC)) | _u(HIDDEN))
    e = as_i32(jnp.maximum(ef, _u(1))) - i32(150)
    kind = jnp.where(a > _u(EXP), _u(NAN), jnp.where(a == _u(EXP), _u(INF), _u(FINITE)))
    mag = jnp.where(a >= _u(EXP), _u(0), mag)
    return Parts(kind, b >> _u(31), jnp.zeros_like(b), mag, e, jnp.zeros(b.shape, bool))


def operand_parts(x) -> Parts:
    """Parts of an operand array: float32 (exact, subnormals included), float16/bfloat16 (widened
    exactly), or integers of at most 32 bits (bool as 0/1) at their exact values."""
    dt = np.dtype(x.dtype)
    if dt == np.float32:
        return f32_parts(f32_bits(x))
    if dt == np.float16:
        return f32_parts(f16_to_f32_bits(lax.bitcast_convert_type(x, jnp.uint16)))
    if dt == np.dtype(jnp.bfloat16):
        return f32_parts(bf16_to_f32_bits(lax.bitcast_convert_type(x, jnp.uint16)))
    z = jnp.zeros(x.shape, U32)
    if dt.kind == "i":
        v = lax.convert_element_type(x, jnp.int32)
        sign = as_u32(v < 0)
        mag = jnp.where(v < 0, _u(0) - as_u32(v), as_u32(v))
    elif dt.kind in "ub":
        sign, mag = z, lax.convert_element_type(x, U32)
    else:
        raise TypeError(f"operand dtype {dt} is not supported")
    return Parts(z, sign, z, mag, jnp.zeros(x.shape, jnp.int32), jnp.zeros(x.shape, bool))


def code_parts(sp, code) -> Parts:
    """Parts of codes (uint32) of the format of ``sp`` (a :class:`emul_jax._round.RoundSpec` whose
    format fits float32): the exact value of each code, for an accumulator that adds exact terms
    to a rounded running sum. Fixed point: the two's complement raw value times ``2**-frac``."""
    from ._round import code_to_f32_bits
    return f32_parts(code_to_f32_bits(sp, code))


def negate(x: Parts) -> Parts:
    """``-x`` (a NaN keeps its sign: ``a - NaN`` propagates the NaN as it is)."""
    return x._replace(sign=jnp.where(x.kind == _u(NAN), x.sign, x.sign ^ _u(1)))


# -- multi-word helpers -------------------------------------------------------------------------

def _clz64(hi, lo):
    """Leading zeros of hi·2**32 + lo (64 for 0), int32."""
    return jnp.where(hi != _u(0), clz(hi), i32(32) + clz(lo))


def _norm64(hi, lo, e):
    """(hi, lo, e) shifted so that bit 63 is set; a zero magnitude gets e = _ZERO_E."""
    n = _clz64(hi, lo)
    zero = n == i32(64)
    return word(hi, lo, i32(32) - n), word(hi, lo, -n), jnp.where(zero, i32(_ZERO_E), e - n)


def _word3(w2, w1, w0, k):
    """Bits [k, k + 32) of W = w2·2**64 + w1·2**32 + w0 (k int32; bits outside 0..95 read 0)."""
    return (shr(w0, k) | shl(w0, -k) | shl(w1, i32(32) - k) | shr(w1, k - i32(32))
            | shl(w2, i32(64) - k) | shr(w2, k - i32(64)))


def _add3(a, b, cin):
    """(a + b + cin) mod 2**96 for 3-word (w2, w1, w0) tuples, cin uint32 0/1."""
    a2, a1, a0 = a
    b2, b1, b0 = b
    s0 = a0 + b0
    c = as_u32(s0 < a0)
    t0 = s0 + cin
    c = c | as_u32(t0 < s0)
    s1 = a1 + b1
    c1 = as_u32(s1 < a1)
    t1 = s1 + c
    c1 = c1 | as_u32(t1 < s1)
    return a2 + b2 + c1, t1, t0


def _mul32(a, b):
    """(hi, lo): the exact 64-bit product of two uint32 arrays, from 16-bit halves."""
    m16 = _u(0xFFFF)
    a0, a1 = a & m16, a >> _u(16)
    b0, b1 = b & m16, b >> _u(16)
    p00, p01, p10, p11 = a0 * b0, a0 * b1, a1 * b0, a1 * b1
    mid = (p00 >> _u(16)) + (p01 & m16) + (p10 & m16)  # < 3 * 2**16
    lo = (mid << _u(16)) | (p00 & m16)
    hi = p11 + (p01 >> _u(16)) + (p10 >> _u(16)) + (mid >> _u(16))
    return hi, lo


# -- mul ----------------------------------------------------------------------------------------

def mul_parts(x: Parts, y: Parts) -> Parts:
    """The exact product of two operands with one-word magnitudes (``hi == 0``, ``sticky`` False,
    as :func:`operand_parts` gives): a NaN operand propagates (x's first), 0·inf is +NaN, the sign
    is the XOR. Finite results are exact (no sticky, M < 2**64)."""
    shape = x.sign.shape
    s = x.sign ^ y.sign
    hi, lo = _mul32(x.lo, y.lo)
    fin = Parts(jnp.full(shape, _u(FINITE)), s, hi, lo, x.e + y.e, jnp.zeros(shape, bool))
    xz = (x.kind == _u(FINITE)) & (x.lo == _u(0))
    yz = (y.kind == _u(FINITE)) & (y.lo == _u(0))
    inf_x, inf_y = x.kind == _u(INF), y.kind == _u(INF)
    out = _sel(inf_x | inf_y, _special(shape, INF, s), fin)
    out = _sel((inf_x & yz) | (inf_y & xz), _special(shape, NAN, 0), out)
    out = _sel(y.kind == _u(NAN), _special(shape, NAN, y.sign), out)
    return _sel(x.kind == _u(NAN), _special(shape, NAN, x.sign), out)


# -- add ----------------------------------------------------------------------------------------

def add_parts(x: Parts, y: Parts, *, down=False, wrap_frac=None) -> Parts:
    """The exact sum ``x + y`` of two exact terms, for rounding once.

    Contract:
      - ``x``, ``y``: Parts with any 64-bit magnitudes ``hi·2**32 + lo`` (normalised or not, zero
        allowed), ``sticky`` False (exact terms), ``|e| < 2**20``.
      - specials as IEEE 754 and the core: a NaN propagates with its sign (x's first), inf - inf is
        +NaN, inf + finite is that inf.
      - an exact zero sum (``x == -y``, or two zeros) is +0 when the signs differ, -0 if ``down``
        (the rounding mode is ``down``: a Python bool or a traced bool scalar), and keeps the
        common sign when they agree (``-0 + -0 = -0``; IEEE 754 §6.3).
      - otherwise the result is ``(-1)**s (M + ε) 2**e`` with ``M`` normalised (``hi >= 2**31``),
        ``ε`` in (0, 1) iff ``sticky``: exact for :func:`emul_jax._round.round_parts` in every float
        format of at most 23 fraction bits and every fixed format whose rule does not wrap.
      - ``wrap_frac`` (an int or a traced int32 scalar): for a fixed format with lsb
        ``2**-wrap_frac`` under a wrap rule,
        sums whose larger term is at least ``2**30`` lsb are instead given anchored at the lsb:
        ``e = -wrap_frac - 32``, ``hi`` the integer part modulo ``2**32`` lsb (the wrap rules read
        bits ``0..bits``), ``lo`` the first 32 fraction bits, ``sticky`` the rest. (There ``M`` may
        be 0 with ``sticky`` set — a value in (0, 2**-32) lsb modulo 2**32 — which ``round_fixed``
        rounds correctly: q = F = 0 and the sticky bit alone decides.)

    Why it is exact: the larger magnitude X (normalised, top bit 63) sits at bits 94…31 of a 96-bit
    frame; the smaller Y is shifted right by d = eX - eY. Bits of Y fall below the frame only when
    d >= 32, and then Y < 2**-31 X, so X ± Y >= X (1 - 2**-31): the sum's top bit is bit 93 or
    higher and the 64 bits kept below it reach at least 29 bits below X's last bit; everything
    lower is summarised by ε (a subtraction borrows one unit so that the frame holds
    ``X - Y_kept - 1`` and the fraction is ``1 - ε``, again in (0, 1)). For d <= 31 no bit is lost
    and the frame holds the exact sum or difference, renormalised however much cancels.
    """
    shape = jnp.broadcast_shapes(x.sign.shape, y.sign.shape)
    x = Parts(*(jnp.broadcast_to(v, shape) for v in x))
    y = Parts(*(jnp.broadcast_to(v, shape) for v in y))
    xh, xl, ex = _norm64(x.hi, x.lo, x.e)
    yh, yl, ey = _norm64(y.hi, y.lo, y.e)
    swap = (ey > ex) | ((ey == ex) & ((yh > xh) | ((yh == xh) & (yl > xl))))
    sX = jnp.where(swap, y.sign, x.sign)
    sY = jnp.where(swap, x.sign, y.sign)
    Xh, Xl, eX = (jnp.where(swap, b, a) for a, b in ((xh, yh), (xl, yl), (ex, ey)))
    Yh, Yl, eY = (jnp.where(swap, a, b) for a, b in ((xh, yh), (xl, yl), (ex, ey)))
    sub = sX != sY
    both_zero = eX == i32(_ZERO_E)
    exact_zero = both_zero | (sub & (eX == eY) & (Xh == Yh) & (Xl == Yl))

    def combine(X, Y, st):
        # X ± (Y + st·ε): a subtraction is X + ~Y + 1 - st (two's complement, borrowing for ε)
        Y = tuple(jnp.where(sub, ~w, w) for w in Y)
        cin = as_u32(sub & ~st)
        return _add3(X, Y, cin)

    # the frame of the normal path: X's bit 0 at frame bit 31, Y's at 31 - d
    d = eX - eY
    X = (Xh >> _u(1), (Xl >> _u(1)) | (Xh << _u(31)), Xl << _u(31))
    Y = (word(Yh, Yl, d + i32(33)), word(Yh, Yl, d + i32(1)), word(Yh, Yl, d - i32(31)))
    st = low_bits_nonzero(Yh, Yl, d - i32(31))
    w2, w1, w0 = combine(X, Y, st)
    n = jnp.where(w2 != _u(0), clz(w2), jnp.where(w1 != _u(0), i32(32) + clz(w1), i32(64) + clz(w0)))
    hi = _word3(w2, w1, w0, i32(64) - n)
    lo = _word3(w2, w1, w0, i32(32) - n)
    sticky = (_word3(w2, w1, w0, -n) != _u(0)) | st
    e = eX + i32(1) - n
    if wrap_frac is not None:
        # frame bit 0 at 2**(-frac - 64): X (>= 2**30 lsb, so its last bit is at 2**-33 lsb or
        # above) fits whole, modulo 2**96 units; only Y can leave bits below the frame.
        f = jnp.asarray(wrap_frac, jnp.int32)
        anchored = ~both_zero & (eX + f + i32(63) >= i32(30))
        px, py = eX + f + i32(64), eY + f + i32(64)
        XA = tuple(word(Xh, Xl, i32(32 * j) - px) for j in (2, 1, 0))
        YA = tuple(word(Yh, Yl, i32(32 * j) - py) for j in (2, 1, 0))
        stA = low_bits_nonzero(Yh, Yl, -py)
        a2, a1, a0 = combine(XA, YA, stA)
        hi = jnp.where(anchored, a2, hi)
        lo = jnp.where(anchored, a1, lo)
        sticky = jnp.where(anchored, (a0 != _u(0)) | stA, sticky)
        e = jnp.where(anchored, -f - i32(32), e)
    zsign = jnp.where(x.sign == y.sign, x.sign, _u(1 if down else 0) if isinstance(down, bool) else as_u32(down))
    z = _zeros_u(shape)
    fin = Parts(jnp.full(shape, _u(FINITE)), jnp.where(exact_zero, zsign, sX),
                jnp.where(exact_zero, z, hi), jnp.where(exact_zero, z, lo),
                jnp.where(exact_zero, i32(0), e), jnp.where(exact_zero, False, sticky))
    # specials, lowest priority first
    inf_x, inf_y = x.kind == _u(INF), y.kind == _u(INF)
    out = _sel(inf_y, _special(shape, INF, y.sign), fin)
    out = _sel(inf_x, _special(shape, INF, x.sign), out)
    out = _sel(inf_x & inf_y & (x.sign != y.sign), _special(shape, NAN, 0), out)
    out = _sel(y.kind == _u(NAN), _special(shape, NAN, y.sign), out)
    return _sel(x.kind == _u(NAN), _special(shape, NAN, x.sign), out)


def sub_parts(x: Parts, y: Parts, *, down=False, wrap_frac=None) -> Parts:
    """``x - y`` as ``x + (-y)`` (:func:`add_parts`; a NaN y keeps its own sign)."""
    return add_parts(x, negate(y), down=down, wrap_frac=wrap_frac)


def fma_parts(a: Parts, b: Parts, c: Parts, *, down=False, wrap_frac=None) -> Parts:
    """``a·b + c`` with the exact product (one rounding in all): NaN operands first in argument
    order (before 0·inf), then 0·inf and inf - inf are +NaN."""
    p = mul_parts(a, b)
    shape = jnp.broadcast_shapes(p.sign.shape, c.sign.shape)
    out = add_parts(p, c, down=down, wrap_frac=wrap_frac)
    out = _sel(c.kind == _u(NAN), _special(shape, NAN, c.sign), out)  # before 0·inf
    nan_ab = (a.kind == _u(NAN)) | (b.kind == _u(NAN))
    return _sel(nan_ab, p, out)


def result_bits(sp) -> int:
    """How many bits of a quotient or root, counted from its leading one, the rounding in ``sp``
    (a :class:`emul_jax._round.RoundSpec`, not a wrap rule) can read: the kept significand
    (``man_bits + 1``; fixed point: every in-range value is below ``2**(bits + 1)`` lsb, and larger
    ones saturate whatever their low bits), then ``sr_bits`` (stochastic) or a round bit, plus a
    guard. :func:`div_parts` and :func:`sqrt_parts` compute at least this many (32 or 64)."""
    from emul._kernels import slots as K
    P = sp.P
    need = sp.sr_bits if sp.stochastic else 1
    kept = P[K.M] + 1 if sp.is_float else sp.bits + 1
    return kept + need + 2


# -- div ----------------------------------------------------------------------------------------

def _norm_to(m, e, w):
    """A nonzero one-word magnitude shifted so that its top bit is bit w - 1 (m < 2**w)."""
    n = clz(m) - i32(32 - w)
    return shl(m, n), e - n


def _long_div(R, D, w, nwords=2):
    """(quotient words (high first), remainder) of floor(R·2**(32·nwords) / D), R < D < 2**w.

    w <= 24: 8 quotient bits per step with uint32 division ((R << 8) < 2**32, exact on every
    backend); w = 32: one bit per step, with the carry of R << 1 (R < D < 2**32)."""
    Q = [jnp.zeros_like(R) for _ in range(nwords)]

    def shift_in(Q, c, digit):
        out = [(q << _u(c)) | (nxt >> _u(32 - c)) for q, nxt in zip(Q[:-1], Q[1:])]
        return out + [(Q[-1] << _u(c)) | digit]

    if w <= 24:
        for _ in range(4 * nwords):
            N = R << _u(8)
            q = lax.div(N, D)
            R = N - q * D
            Q = shift_in(Q, 8, q)
        return Q, R

    def body(_, carry):
        R, *Q = carry
        R2 = R << _u(1)
        bit = ((R >> _u(31)) != _u(0)) | (R2 >= D)
        R = jnp.where(bit, R2 - D, R2)
        return (R, *shift_in(Q, 1, as_u32(bit)))

    R, *Q = lax.fori_loop(0, 32 * nwords, body, (R, *Q), unroll=8)
    return Q, R


def _mod_pow2(R, D, k, w, kmax):
    """(R · 2**k) mod D for R < D < 2**w, 0 <= k <= kmax (k int32 array, kmax static)."""
    c = 8 if w <= 24 else 1
    nfull = k // i32(c)
    steps = kmax // c + 1

    def body(i, R):
        if c == 8:
            R2 = lax.rem(R << _u(8), D)
        else:
            R2 = R << _u(1)
            R2 = jnp.where(((R >> _u(31)) != _u(0)) | (R2 >= D), R2 - D, R2)
        return jnp.where(i < nfull, R2, R)

    R = lax.fori_loop(0, steps, body, R, unroll=4)
    if c == 8:
        R = lax.rem(shl(R, k - nfull * i32(8)), D)
    return R


def div_parts(x: Parts, y: Parts, *, width: int = 24, nbits: int = 64, wrap_frac=None,
              wrap_frac_max: int | None = None) -> Parts:
    """The exact quotient ``x / y`` of two operands (one-word magnitudes, as :func:`operand_parts`
    gives; ``width`` (static) >= the significand bits of both, 24 for float inputs).

    Specials: a NaN propagates (x's first); inf/inf and 0/0 are +NaN; inf/y and x/0 are ±inf;
    x/inf and 0/y are ±0; the sign is the XOR. Finite nonzero results: 64 quotient bits from the
    leading one (``hi >= 2**31``) and the remainder as sticky; ``nbits=32`` (static) computes only
    the first 32 or 33 (``M < 2**33``, the remainder as sticky): enough whenever the rounding reads
    no more bits from the leading one (see :func:`result_bits`). ``wrap_frac``: as for
    :func:`add_parts`, quotients of ``2**31`` lsb or more are given anchored at the lsb, computed
    from ``(x.m · 2**k) mod y.m`` (see the module docstring); ``wrap_frac_max`` (static, >=
    ``wrap_frac``; default ``wrap_frac`` when that is an int) sizes the loop that forms it."""
    shape = jnp.broadcast_shapes(x.sign.shape, y.sign.shape)
    w = 24 if width <= 24 else 32
    xz = x.lo == _u(0)
    yz = y.lo == _u(0)
    one = _u(1 << (w - 1))
    ma, ea = _norm_to(jnp.where(xz, one, x.lo), x.e, w)
    mb, eb = _norm_to(jnp.where(yz, one, y.lo), y.e, w)
    q0 = ma >= mb
    R0 = jnp.where(q0, ma - mb, ma)
    if nbits == 64:
        (qh, ql), R = _long_div(R0, mb, w)
        # q0: the quotient is 1.q (65 bits): keep 64, the last one joins the sticky bit
        hi = jnp.where(q0, _u(1 << 31) | (qh >> _u(1)), qh)
        lo = jnp.where(q0, (ql >> _u(1)) | (qh << _u(31)), ql)
        sticky = (R != _u(0)) | (q0 & ((ql & _u(1)) != _u(0)))
        e = ea - eb - i32(64) + as_i32(as_u32(q0))
    elif nbits == 32:
        (lo,), R = _long_div(R0, mb, w, nwords=1)
        hi, e = as_u32(q0), ea - eb - i32(32)  # q0·2**32 + q: 32 or 33 bits, not normalised
        sticky = R != _u(0)
    else:
        raise ValueError(f"nbits={nbits}: must be 32 or 64")
    if wrap_frac is not None:
        # Q·2**32 (Q the quotient in lsb units) = ma·2**t / mb. For t >= 64 the normal 64 bits
        # would end above 2**-32 lsb; then floor(ma·2**t / mb) mod 2**64 = floor(R·2**64 / mb)
        # with R = (ma·2**(t-64)) mod mb.
        f = jnp.asarray(wrap_frac, jnp.int32)
        fmax = int(wrap_frac if wrap_frac_max is None else wrap_frac_max)
        t = ea - eb + f + i32(32)
        big = t >= i32(64)
        emax_a = 127 - (w - 1)          # float32 magnitudes below 2**128, integers below 2**32
        emin_b = -149 - (w - 1)         # the smallest subnormal, normalised to w bits
        kmax = emax_a - emin_b + fmax + 32 - 64
        if kmax >= 0:
            k = jnp.clip(t - i32(64), 0, kmax)
            Rw = _mod_pow2(R0, mb, k, w, kmax)
            (wh, wl), Rr = _long_div(Rw, mb, w)
            hi = jnp.where(big, wh, hi)
            lo = jnp.where(big, wl, lo)
            sticky = jnp.where(big, Rr != _u(0), sticky)
            e = jnp.where(big, -f - i32(32), e)
    s = x.sign ^ y.sign
    z = _zeros_u(shape)
    fin = Parts(jnp.full(shape, _u(FINITE)), s, jnp.where(xz, z, hi), jnp.where(xz, z, lo),
                jnp.where(xz, i32(0), e), sticky & ~xz)
    xk, yk = x.kind, y.kind
    fx, fy = xk == _u(FINITE), yk == _u(FINITE)
    out = _sel(yk == _u(INF), _special(shape, FINITE, s), fin)                     # x / inf = ±0
    out = _sel((xk == _u(INF)) | (fx & ~xz & fy & yz), _special(shape, INF, s), out)  # inf / y, x / 0
    out = _sel(((xk == _u(INF)) & (yk == _u(INF))) | (fx & xz & fy & yz), _special(shape, NAN, 0), out)
    out = _sel(yk == _u(NAN), _special(shape, NAN, y.sign), out)
    return _sel(xk == _u(NAN), _special(shape, NAN, x.sign), out)


# -- sqrt ---------------------------------------------------------------------------------------

def _isqrt(fh, fl, nbits):
    """The integer square root of the 2·nbits-bit radicand whose top 64 bits are fh·2**32 + fl
    (the rest zero): (root words, high first, ceil(nbits/32) of them; remainder != 0).

    Restoring digit-by-digit: per step, rem = 4·rem + next two radicand bits, trial = 4·root + 1,
    root = 2·root + (rem >= trial), rem -= trial when it fits. After j steps root < 2**j and
    rem <= 2·root, so the first 30 steps run in one word (rem < 2**32 - 4); the rest use
    W = ceil((nbits + 2) / 32) words (trial < 2**(nbits+2))."""
    n1 = min(nbits, 30)

    def body1(_, carry):
        fh, fl, rem, root = carry
        rem = (rem << _u(2)) | (fh >> _u(30))
        fh, fl = (fh << _u(2)) | (fl >> _u(30)), fl << _u(2)
        trial = (root << _u(2)) | _u(1)
        ge = rem >= trial
        return fh, fl, jnp.where(ge, rem - trial, rem), (root << _u(1)) | as_u32(ge)

    zero = jnp.zeros_like(fh)
    fh, fl, rem1, root1 = lax.fori_loop(0, n1, body1, (fh, fl, zero, zero), unroll=n1 // 3 or 1)
    if nbits <= 30:
        return [root1], rem1 != _u(0)
    W = -(-(nbits + 2) // 32)

    def shl2(ws, low):
        """(ws << 2) | low over a high-first word list."""
        out = [(a << _u(2)) | (b >> _u(30)) for a, b in zip(ws[:-1], ws[1:])]
        return out + [(ws[-1] << _u(2)) | low]

    def body(_, carry):
        fh, fl, rem, root = carry
        two = fh >> _u(30)
        fh, fl = (fh << _u(2)) | (fl >> _u(30)), fl << _u(2)
        rem = shl2(list(rem), two)
        trial = shl2(list(root), _u(1))
        root = [(a << _u(1)) | (b >> _u(31)) for a, b in zip(root[:-1], root[1:])] + [root[-1] << _u(1)]
        # rem >= trial, and rem - trial, word by word from the low end
        diff, borrow = [], jnp.zeros_like(fh)
        for a, b in zip(reversed(rem), reversed(trial)):
            d = a - b - borrow
            borrow = as_u32((a < b) | ((a == b) & (borrow != _u(0))))
            diff.append(d)
        ge = borrow == _u(0)
        rem = tuple(jnp.where(ge, d, a) for d, a in zip(reversed(diff), rem))
        root[-1] = root[-1] | as_u32(ge)
        return fh, fl, rem, tuple(root)

    widen = lambda v: tuple([zero] * (W - 1) + [v])
    init = (fh, fl, widen(rem1), widen(root1))
    _, _, rem, root = lax.fori_loop(n1, nbits, body, init, unroll=8)
    nz = rem[0] != _u(0)
    for r in rem[1:]:
        nz = nz | (r != _u(0))
    return list(root)[W - (-(-nbits // 32)):], nz


def _word_n(ws, k):
    """Bits [k, k + 32) of the number whose words are ws (high first); k int32, bits outside read 0."""
    n = len(ws)
    r = None
    for j, wj in enumerate(reversed(ws)):  # wj holds bits 32j … 32j + 31
        t = shr(wj, k - i32(32 * j)) | shl(wj, i32(32 * j) - k)
        r = t if r is None else r | t
    return r if n else None


def _low_nonzero_n(ws, k):
    """Whether the number whose words are ws (high first) has a set bit below bit k (k int32)."""
    r = None
    for j, wj in enumerate(reversed(ws)):
        kk = jnp.clip(k - i32(32 * j), 0, 32)  # bits of wj below k
        t = shl(wj, i32(32) - kk) != _u(0)
        t = t | ((kk == i32(32)) & (wj != _u(0)))
        r = t if r is None else r | t
    return r


def sqrt_parts(x: Parts, *, nbits: int = 64, wrap_frac=None, wrap_frac_max: int | None = None) -> Parts:
    """The exact square root of an operand (one-word magnitude). Specials: NaN propagates, ±0
    gives ±0, x < 0 (-inf included) gives +NaN, +inf gives +inf. Finite nonzero results: ``nbits``
    (static, at most 64; default 64) root bits from the leading one (``M`` in [2**(nbits-1),
    2**nbits)), the remainder as sticky (fewer bits when the rounding reads fewer,
    :func:`result_bits`); with ``wrap_frac``, ``max(64, 96 + frac)``
    root bits (enough for the root of the largest float32, 2**64, down to 2**-32 lsb) given
    anchored at the lsb (``wrap_frac_max``: as for :func:`div_parts`, it sizes the root)."""
    shape = x.sign.shape
    xz = x.lo == _u(0)
    m = jnp.where(xz, _u(1 << 31), x.lo)
    n = clz(m)
    m = shl(m, n)
    e = x.e - n
    odd = (e & i32(1)) != i32(0)
    fh = jnp.where(odd, m >> _u(1), m)
    fl = jnp.where(odd, m << _u(31), _u(0))
    if wrap_frac is not None:
        nbits = max(64, 96 + int(wrap_frac if wrap_frac_max is None else wrap_frac_max))
    elif not 1 <= nbits <= 64:
        raise ValueError(f"nbits={nbits}: must be between 1 and 64")
    root, rem_nz = _isqrt(fh, fl, nbits)
    # value = radicand·2**(e + 32 + odd - 2·nbits): the root's bit 0 weighs 2**er
    er = ((e + i32(32) + as_i32(as_u32(odd))) >> i32(1)) - i32(nbits)
    if wrap_frac is None:  # the root's top bit is bit nbits - 1
        hi, lo = (root[0], root[1]) if nbits > 32 else (jnp.zeros_like(root[0]), root[0])
        sticky, eo = rem_nz, er
    else:
        f = jnp.asarray(wrap_frac, jnp.int32)
        k = -f - i32(32) - er  # root bit holding 2**(-f-32)
        lo = _word_n(root, k)
        hi = _word_n(root, k + i32(32))
        sticky = rem_nz | _low_nonzero_n(root, k)
        eo = jnp.broadcast_to(-f - i32(32), shape)
    z = _zeros_u(shape)
    fin = Parts(jnp.full(shape, _u(FINITE)), jnp.zeros(shape, U32), hi, lo, eo, sticky)
    out = _sel(x.kind == _u(INF), _special(shape, INF, 0), fin)
    out = _sel(x.sign != _u(0), _special(shape, NAN, 0), out)
    out = _sel((x.kind == _u(FINITE)) & xz, Parts(jnp.full(shape, _u(FINITE)), x.sign, z, z,
                                                   jnp.zeros(shape, jnp.int32), jnp.zeros(shape, bool)), out)
    return _sel(x.kind == _u(NAN), _special(shape, NAN, x.sign), out)
