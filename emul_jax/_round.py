"""The rounding primitive of emul_jax: an exact value, given as integer parts, rounded once to a code.

This is :mod:`emul._kernels.round` in 32-bit JAX lanes (x64 off): the same four steps, the same
parameters, the same decisions, so that every code equals the core's bit for bit.

An exact finite value arrives as ``sign, (hi, lo), e, sticky`` meaning

    ``(-1)**sign * (M + ε) * 2**e``,  ``M = hi * 2**32 + lo``  (two uint32 words),

with ``e`` an int32 exponent and ``ε`` in (0, 1) where ``sticky`` is set (0 elsewhere). Rounding
then uses integers only:

1. choose the quantum exponent ``qe`` of the result (floats: from the format and ``M``'s leading
   bit; fixed point: ``-frac``), and the shift ``s = qe - e``;
2. split ``M`` at ``s`` into the kept integer ``q``, the next 32 fraction bits ``F = floor(f * 2**32)``
   (``f`` the discarded fraction) and a sticky bit for anything below ``F``;
3. :func:`increment` decides whether ``q`` goes up by one quantum — the one place where modes
   differ, shared by every path (:data:`emul.rounding.MODE_BITS`; stochastic rounding reads
   ``t = floor(f * 2**r)`` from ``F``, exact for every ``r <= 32``);
4. apply the overflow rule to the rounded value and build the code (``uint32``).

Interface (everything static is a :class:`RoundSpec`, built and validated by :func:`spec` with the
core's :func:`emul._params.resolve`, so errors read exactly like the core's):

- :func:`round_float` / :func:`round_fixed` / :func:`round_parts` — the general primitive above.
  ``hi`` may be ``None`` (``M`` is one word), ``sticky`` may be ``None`` (no ε), ``u`` is the SR
  word (``uint32`` in ``[0, 2**sr_bits)``; ignored, may be ``None``, unless stochastic).
  Preconditions: when ``sticky`` is set, the result's quantum ``2**qe`` must lie at least ``need``
  bits above ``M``'s last bit, ``qe - e >= need`` with ``need`` = ``sr_bits`` (SR), 1 (nearest
  modes) or 0 (directed modes), so that ε cannot reach the bits the decision reads — normalising
  ``M`` to ``hi >= 2**31``, as the core's kernels do, guarantees it for every float format of at
  most 23 fraction bits and every fixed-point value below ``2**31`` lsb (larger ones saturate
  whatever ε is; the wrap rules need ``qe - e >= need`` as stated). ``M == 0`` without sticky is
  ±0 (any ``e``); with sticky it is the value ``ε * 2**e``, under the same condition (floats take
  the subnormal quantum for it). ``|e| < 2**30``. Exact products of two float32 significands
  (48 bits), aligned sums with a sticky bit and quotients/roots with the remainder as sticky fit.
- :func:`increment` — the mode decision alone, for callers that split ``M`` themselves.
- :func:`round_f32` — the one-word fast path for float32 bit patterns into float formats whose
  min normal is a float32 normal (``emin >= -126``): codes, or directly the float32 pattern of the
  rounded value; same :func:`increment`, same constants. It rounds the pattern ``a = |bits|``
  itself for target-normal results (the quantum is bit ``S = 23 - man_bits`` of ``a``, and a carry
  into the exponent field is automatically right, as in :mod:`emul._kernels.fast_f32`), and the
  24-bit significand at a per-element shift for target-subnormal results.
- :func:`round_grid` — the on-grid integer entry: an exact ``uint32`` magnitude in units of a
  static ``2**g`` (at or below the format's finest quantum) rounded into a float format, returned
  as a magnitude on the same grid plus an overflow flag; same :func:`increment`. For exact integer
  sums (the accumulators' exact-product lane), about a third of :func:`round_f32`'s operations.
- :func:`special_code` — the code of ±inf / NaN inputs; :func:`code_to_f32_bits` — decode.
  :func:`bad_code` — what an invalid element (see ``docs/jax.md``) becomes.

Each element depends only on its own input and its own random word.
"""

from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp

from emul._kernels import slots as K
from emul._params import kernel_params, resolve
from emul.formats import FixedFormat, FloatFormat
from emul.rounding import MODE_BITS, Overflow, Rounding

from ._bits import (ABS, EXP, FRAC, HIDDEN, SIGN, U32, as_i32, as_u32, bit_length, clz, i32,
                    low_bits_nonzero, scaled_bits, shl, shr, u32, word)

__all__ = ["RoundSpec", "spec", "increment", "round_float", "round_fixed", "round_parts", "round_f32",
           "round_fixed_f32", "round_grid", "grid_max", "special_code", "code_to_f32_bits", "bad_code", "fast_f32",
           "fast_fixed_f32"]

HALF = 1 << 31
F32_NAN = 0x7FC00000  # the canonical quiet NaN of float32 (what the core's float32 outputs hold)


@dataclasses.dataclass(frozen=True)
class RoundSpec:
    """Resolved, validated (format, rounding, overflow, SR) — static, hashable, a jit cache key.

    The numbers the lanes need are the core's kernel parameters (:func:`emul._params.kernel_params`)
    as Python ints, exposed by name below; nothing is re-derived from the format.
    """

    fmt: FloatFormat | FixedFormat
    rounding: Rounding
    overflow: Overflow
    sr_bits: int = 0         # 1..32 when stochastic, else 0
    compare: bool = False    # sr_method == "compare"

    @functools.cached_property
    def P(self) -> tuple:
        """The core's kernel parameter tuple as Python ints (slots: emul/_kernels/slots.py)."""
        return tuple(int(v) for v in kernel_params(self.fmt, self.rounding, self.overflow,
                                                    self.sr_bits, self.compare))

    # -- what the lanes read ---------------------------------------------------------------------
    @property
    def is_float(self) -> bool:
        return isinstance(self.fmt, FloatFormat)

    @property
    def stochastic(self) -> bool:
        return self.rounding == Rounding.STOCHASTIC

    @property
    def bits(self) -> int:
        return self.P[K.BITS]

    @property
    def mask(self) -> int:
        """All ``bits`` ones."""
        return (1 << self.bits) - 1

    @property
    def signbit(self) -> int:
        return 1 << (self.bits - 1)

    @property
    def mode_bits(self) -> tuple:
        """(nearest, k0, ks, kl) of the deterministic modes (see :mod:`emul.rounding`)."""
        return MODE_BITS[self.rounding]

    @property
    def reads_lsb(self) -> bool:
        """Whether :func:`increment` reads the kept code's last bit (nearest_even, odd)."""
        return not self.stochastic and self.mode_bits[3] == 1

    @property
    def reads_sign(self) -> bool:
        """Whether :func:`increment` reads the sign (nearest_up/down, up, down)."""
        return not self.stochastic and self.mode_bits[2] == 1

    @property
    def qe_sub(self) -> int:
        """Floats: the quantum exponent below min_normal (``emin - man_bits``, or ``emin`` without
        subnormals: the grid {0, min_normal})."""
        m, emin = self.P[K.M], self.P[K.EMIN]
        return emin - m if self.P[K.SUB] else emin

    @property
    def nan_codes(self) -> tuple | None:
        """(+NaN, -NaN) codes, or None when the format has no NaN."""
        nanc = self.P[K.NANC]
        if nanc < 0:
            return None
        return (nanc, nanc) if self.P[K.FNUZ] else (nanc, nanc | self.signbit)

    def by_sign(self, slot_pos: int, slot_neg: int) -> tuple:
        """(positive, negative) codes of two slots of P, as ``bits``-bit patterns."""
        return self.P[slot_pos] & self.mask, self.P[slot_neg] & self.mask


def spec(fmt, rounding="nearest_even", overflow=None, sr_bits=None, sr_method="add") -> RoundSpec:
    """Validate the arguments as the core does (same errors) and return their :class:`RoundSpec`.

    Formats whose codes are wider than 32 bits (fp64, fixed point over 32 bits) raise ValueError:
    emul_jax computes in 32-bit lanes and does not support ``jax_enable_x64``.
    """
    fmt, mode, ovf, r, compare = resolve(fmt, rounding, overflow, sr_bits, sr_method)
    if fmt.bits > 32:
        raise ValueError(
            f"{fmt.name}: {fmt.bits}-bit codes need 64-bit lanes; emul_jax works in 32-bit lanes (x64 off) "
            "and does not support jax_enable_x64 — use emul (the NumPy core) for this format")
    return RoundSpec(fmt, mode, ovf, r, compare)


def fast_f32(sp: RoundSpec) -> bool:
    """Whether :func:`round_f32` covers float32 inputs for this spec (float formats with
    ``emin >= -126`` and ``man_bits <= 23``)."""
    return sp.is_float and sp.P[K.EMIN] >= -126 and sp.P[K.M] <= 23


# -- step 3: the decision -----------------------------------------------------------------------

def increment(sp: RoundSpec, lsb, F, sticky, sign, u):
    """Whether the kept magnitude rounds up by one quantum (a bool array).

    Args:
      lsb: uint32 0/1, the last bit of the kept code (floats with ``man_bits == 0``: the
        exponent's last bit, as the core); read only when ``sp.reads_lsb`` (else may be None).
      F: uint32, ``floor(f * 2**32)`` for the discarded fraction ``f`` in [0, 1).
      sticky: bool array, whether anything below ``F``'s last bit is nonzero; None means False.
      sign: uint32 0/1, the sign of the exact value; read only when ``sp.reads_sign``.
      u: uint32 SR word in [0, 2**sr_bits); read only when stochastic.

    Deterministic modes: ``rule = k0 ^ (ks & sign) ^ (kl & lsb)``; nearest modes increment when
    ``f > 1/2``, or ``f == 1/2`` and ``rule`` — computed as ``(F | sticky | rule) > 2**31``: bit 0 of
    ``F`` only decides at ``F == 2**31`` — and directed ones when ``f > 0`` and ``rule``.
    Stochastic: ``t = F >> (32 - r)``; ``"add"`` increments iff ``t + u >= 2**r`` (computed as
    ``u > t ^ (2**r - 1)``, no 33-bit sum), ``"compare"`` iff ``u < t``.
    """
    if sp.stochastic:
        r = sp.sr_bits
        t = shr(F, 32 - r)
        if sp.compare:
            return u < t
        return u > (t ^ u32((1 << r) - 1))
    nearest, k0, ks, kl = sp.mode_bits
    rule = k0  # a Python int 0/1, or a uint32 0/1 array once sign or lsb enter
    if ks:
        rule = sign ^ u32(rule)
    if kl:
        rule = lsb ^ (u32(rule) if isinstance(rule, int) else rule)
    if nearest:  # f > 1/2, or f == 1/2 and (sticky or rule): one compare on F with both in its last bit
        if isinstance(rule, int) and rule:
            return F >= u32(HALF)
        low = rule if not isinstance(rule, int) else None
        if sticky is not None:
            low = _bool_u32(sticky) if low is None else low | _bool_u32(sticky)
        return (F if low is None else F | low) > u32(HALF)
    inexact = F != u32(0) if sticky is None else (F | _bool_u32(sticky)) != u32(0)
    if isinstance(rule, int):
        return inexact if rule else jnp.zeros_like(inexact)
    return inexact & (rule != u32(0))


# -- the general primitive ----------------------------------------------------------------------

def split(hi, lo, s, sticky):
    """Split ``(M + ε) * 2**-s`` into ``(q, F, sticky')``: ``q`` the low word of the integer part,
    ``F`` the next 32 fraction bits, ``sticky'`` anything below them (``s`` int32, any value)."""
    q = word(hi, lo, s)
    F = word(hi, lo, s - 32)
    st = low_bits_nonzero(hi, lo, s - 32)
    return q, F, st if sticky is None else st | sticky


def _bool_u32(b):
    return as_u32(b)


def round_float(sp: RoundSpec, sign, hi, lo, e, sticky=None, u=None):
    """The code (uint32) of the finite value ``(-1)**sign * (M + ε) * 2**e`` in the float format
    of ``sp``. ``sign`` uint32 0/1; ``hi``, ``lo`` uint32 (``hi`` may be None); ``e`` int32;
    ``sticky`` bool or None; ``u`` the SR word. Overflow follows ``sp.overflow`` (OVF_POS/NEG)."""
    P = sp.P
    m, emin, emax, maxc = P[K.M], P[K.EMIN], P[K.EMAX], P[K.MAXC]
    nz = lo != u32(0) if hi is None else (hi | lo) != u32(0)
    x_exp = e + (bit_length(hi, lo) - 1)
    below = (x_exp < i32(emin)) | ~nz  # M == 0 takes the subnormal branch: q = F = 0, a signed zero
    qe = jnp.where(below, i32(sp.qe_sub), x_exp - i32(m))
    q, F, st = split(hi, lo, qe - e, sticky)
    base = jnp.where(below, u32(0), as_u32(x_exp - i32(emin)) << u32(m))
    lsb = (base + q) & u32(1) if sp.reads_lsb else None
    q = q + _bool_u32(increment(sp, lsb, F, st, sign, u))
    mag = jnp.where(below, shl(q, 0 if P[K.SUB] else m), base + q)
    over = nz & ((x_exp > i32(emax)) | (mag > u32(maxc)))
    if P[K.NEGZERO]:
        signed = mag | (sign << u32(sp.bits - 1))
    else:
        signed = mag | jnp.where(mag == u32(0), u32(0), sign << u32(sp.bits - 1))
    ovf_pos, ovf_neg = sp.by_sign(K.OVF_POS, K.OVF_NEG)
    return jnp.where(over, _by_sign(sign, ovf_pos, ovf_neg), signed)


def round_fixed(sp: RoundSpec, sign, hi, lo, e, sticky=None, u=None):
    """The two's complement code (uint32, ``bits`` wide) of the finite value
    ``(-1)**sign * (M + ε) * 2**e`` in the fixed-point format of ``sp``: rounded (SR on the
    signed value, as the core's ``fixed_code``), then the overflow rule."""
    P = sp.P
    bits, mask = sp.bits, sp.mask
    nz = lo != u32(0) if hi is None else (hi | lo) != u32(0)
    s = -(e + i32(P[K.FRAC]))  # bits of M below the lsb
    q, F, st = split(hi, lo, s, sticky)
    qb = word(hi, lo, s + 32) & u32(1)             # bit 32 of the integer part
    big = nz & (bit_length(hi, lo) > s + 33)       # the integer part is >= 2**33
    if sp.stochastic:  # SR acts on the signed value: for negatives f is measured from below
        neg = sign != u32(0)
        inexact = (F != u32(0)) | st
        G = (u32(0) - F) - _bool_u32(st)           # floor((1 - f) * 2**32) when inexact
        up = increment(sp, None, jnp.where(neg, G, F), None, sign, u)
        inc = jnp.where(neg, inexact & ~up, up)
    else:
        inc = increment(sp, q & u32(1), F, st, sign, u)
    inc = _bool_u32(inc)
    k = q + inc                                     # the rounded magnitude, mod 2**32 ...
    carry = inc & (k == u32(0))
    k32 = qb ^ carry                                # ... its bit 32 ...
    big = big | ((qb & carry) != u32(0))            # ... and whether it reaches 2**33
    limit = _by_sign(sign, P[K.MAXRAW] & 0xFFFFFFFF, P[K.NEGMAG] & 0xFFFFFFFF)
    in_range = ~big & (k32 == u32(0)) & (k <= limit)
    raw = jnp.where(sign != u32(0), u32(0) - k, k) & u32(mask)
    if P[K.RULE] == K.RULE_SAT_SYM and P[K.SIGNED]:  # never the most negative code
        raw = jnp.where((sign != u32(0)) & (k == u32(P[K.NEGMAG])), u32(-P[K.MAXRAW] & mask), raw)
    if P[K.RULE] in (K.RULE_WRAP, K.RULE_WRAP_SM):
        negk = sign != u32(0)
        lo_w = jnp.where(negk, u32(0) - k, k)       # the 33-bit two's complement of ±k
        hi_w = jnp.where(negk, k32 ^ _bool_u32(k != u32(0)), k32)
        out = lo_w & u32(mask)
        if P[K.RULE] == K.RULE_WRAP_SM:
            dropped = hi_w if bits == 32 else (lo_w >> u32(bits)) & u32(1)
            flip = ((out >> u32(bits - 1)) & u32(1)) != dropped
            out = jnp.where(flip, ~out & u32(mask), out)
    else:
        out = _by_sign(sign, *sp.by_sign(K.INF_POS, K.INF_NEG))  # the saturate-family value
    return jnp.where(in_range, raw, out)


def fast_fixed_f32(sp: RoundSpec) -> bool:
    """Whether :func:`round_fixed_f32` covers this spec: fixed point of at most 24 bits (so every
    in-range magnitude is below ``2**24`` lsb) under a rule other than the wrap rules."""
    return (not sp.is_float and sp.bits <= 24
            and sp.P[K.RULE] not in (K.RULE_WRAP, K.RULE_WRAP_SM))


def round_fixed_f32(sp: RoundSpec, sign, mant, e):
    """:func:`round_fixed` for a one-word value from a float32 (``mant`` < 2**24, ``e`` the int32
    exponent of its last bit) when :func:`fast_fixed_f32` holds, with the same decisions in fewer
    operations: the bits below the lsb are at most 149 + frac, the kept magnitude fits one word
    unless it is at least 2**31 lsb (then it saturates, as every in-range magnitude is below
    2**24 lsb), and no 64-bit split is needed. Returns a closure ``(u) -> code`` so that the SR word
    can be supplied by the caller (``u`` as for :func:`increment`)."""
    P = sp.P
    s = -(e + i32(P[K.FRAC]))                       # bits of mant below the lsb
    big = s < i32(-7)                               # mant << -s >= 2**31 lsb: out of range
    q = shr(mant, s) | shl(mant, -s)               # the kept magnitude (one term is 0)
    F = shl(mant, i32(32) - s) | shr(mant, s - i32(32))
    st = (shl(mant, i32(64) - s) | jnp.where(s >= i32(64), mant, u32(0))) != u32(0)
    st = st & (s > i32(32))                         # bits below F exist only for s > 32

    def finish(u):
        if sp.stochastic:  # SR acts on the signed value: for negatives f is measured from below
            neg = sign != u32(0)
            inexact = (F != u32(0)) | st
            G = (u32(0) - F) - _bool_u32(st)
            up = increment(sp, None, jnp.where(neg, G, F), None, sign, u)
            inc = jnp.where(neg, inexact & ~up, up)
        else:
            inc = increment(sp, q & u32(1), F, st, sign, u)
        k = q + _bool_u32(inc)
        limit = _by_sign(sign, P[K.MAXRAW] & 0xFFFFFFFF, P[K.NEGMAG] & 0xFFFFFFFF)
        in_range = ~big & (k <= limit)
        raw = jnp.where(sign != u32(0), u32(0) - k, k) & u32(sp.mask)
        if P[K.RULE] == K.RULE_SAT_SYM and P[K.SIGNED]:  # never the most negative code
            raw = jnp.where((sign != u32(0)) & (k == u32(P[K.NEGMAG])), u32(-P[K.MAXRAW] & sp.mask), raw)
        return jnp.where(in_range, raw, _by_sign(sign, *sp.by_sign(K.INF_POS, K.INF_NEG)))

    return finish


def round_parts(sp: RoundSpec, sign, hi, lo, e, sticky=None, u=None):
    """:func:`round_float` or :func:`round_fixed`, by the format of ``sp``."""
    f = round_float if sp.is_float else round_fixed
    return f(sp, sign, hi, lo, e, sticky, u)


def _by_sign(sign, pos: int, neg: int):
    """The constant ``pos`` or ``neg`` by sign (uint32 0/1); one constant when they are equal."""
    if pos == neg:
        return jnp.full(sign.shape, u32(pos))
    return jnp.where(sign != u32(0), u32(neg), u32(pos))


# -- special inputs and decode ------------------------------------------------------------------

def special_code(sp: RoundSpec, sign, is_nan):
    """The code of an infinite (``is_nan`` False) or NaN input of this sign. Inputs the format
    cannot take (NaN without NaN codes, ±inf under the wrap rules) get :func:`bad_code`."""
    P = sp.P
    inf = _by_sign(sign, *sp.by_sign(K.INF_POS, K.INF_NEG))
    if not sp.is_float and P[K.RULE] in (K.RULE_WRAP, K.RULE_WRAP_SM):
        inf = bad_code(sp, sign)
    nan = bad_code(sp, sign) if sp.nan_codes is None else _by_sign(sign, *sp.nan_codes)
    return jnp.where(is_nan, nan, inf)


def bad_code(sp: RoundSpec, sign):
    """The code an invalid element gets under jit (NaN into a format without NaN, ±inf under a
    wrap rule, an SR word out of range): the format's NaN with this sign where it has one, else 0."""
    if sp.nan_codes is None:
        return jnp.zeros(sign.shape, U32)
    return _by_sign(sign, *sp.nan_codes)


def code_valid(sp: RoundSpec, code):
    """Whether each uint32 code is a code of the format (not too wide; no subnormal pattern in a
    format without subnormals)."""
    ok = (code >> u32(sp.bits - 1)) >> u32(1) == u32(0)
    if sp.is_float and not sp.P[K.SUB]:
        mag = code & u32(sp.signbit - 1)
        ok = ok & ~(((mag >> u32(sp.P[K.M])) == u32(0)) & (mag != u32(0)))
    return ok


def code_to_f32_bits(sp: RoundSpec, code):
    """The float32 bit pattern of the value of each valid code (the format must fit float32;
    NaN codes give the canonical quiet NaN with the code's sign, as the core's float32 output)."""
    P = sp.P
    if not sp.is_float:
        bits = sp.bits
        if P[K.SIGNED]:
            neg = (code >> u32(bits - 1)) & u32(1)
            mag = jnp.where(neg != u32(0), (u32(0) - code) & u32(sp.mask), code)
        else:
            neg, mag = jnp.zeros_like(code), code
        return scaled_bits(mag, -P[K.FRAC]) | (neg << u32(31))
    m, bias, emin = P[K.M], P[K.BIAS], P[K.EMIN]
    sign = (code >> u32(sp.bits - 1)) & u32(1)
    mag = code & u32(sp.signbit - 1)
    ef = mag >> u32(m)
    if emin >= -126:  # every normal value is a float32 normal: shift the fields into place
        normal = (mag << u32(23 - m)) + u32((127 - bias) << 23)
    else:
        normal = scaled_bits((mag & u32((1 << m) - 1)) | u32(1 << m), as_i32(ef) - i32(bias + m))
    sub = scaled_bits(mag & u32((1 << m) - 1), emin - m)
    val = jnp.where(ef == u32(0), sub, normal) | (sign << u32(31))
    nan = u32(F32_NAN) | (sign << u32(31))
    if P[K.IEEE]:
        special = jnp.where(mag == u32(P[K.INFC]), u32(EXP) | (sign << u32(31)), nan)
        return jnp.where(mag > u32(P[K.MAXC]), special, val)
    if P[K.FNUZ]:
        return jnp.where(code == u32(sp.signbit), u32(F32_NAN), val)
    if P[K.NANC] >= 0:  # "fn": only S.1...1.1...1
        return jnp.where(mag > u32(P[K.MAXC]), nan, val)
    return val


# -- the float32 fast path ----------------------------------------------------------------------

@functools.lru_cache(maxsize=512)
def _f32_constants(sp: RoundSpec) -> dict:
    """Static ints of :func:`round_f32` (see emul/_kernels/fast_f32.py for the same formula)."""
    P = sp.P
    m, emin, bias = P[K.M], P[K.EMIN], P[K.BIAS]
    qe = sp.qe_sub
    c0 = (127 - bias) << m  # code = (a >> S) - C0 for target normals
    mask = sp.mask
    ovf = sp.by_sign(K.OVF_POS, K.OVF_NEG)
    inf = sp.by_sign(K.INF_POS, K.INF_NEG)
    nan = sp.nan_codes or (0, 0)
    return dict(S=23 - m, THR=(emin + 127) << 23, K2=qe + 150, C0=c0, QMAX=c0 + P[K.MAXC],
                SHC=0 if P[K.SUB] else m, QE=qe, LSB_FLIP=c0 & 1,
                codes=dict(ovf=ovf, inf=inf, nan=nan),
                values=dict(ovf=tuple(_value_bits(sp, c) for c in ovf),
                            inf=tuple(_value_bits(sp, c) for c in inf),
                            nan=tuple(_value_bits(sp, c) for c in nan) if sp.nan_codes else
                            (F32_NAN, F32_NAN | SIGN)),
                mask=mask)


def _value_bits(sp: RoundSpec, code: int) -> int:
    """The float32 pattern of one code's value, in plain Python (constants of the fast path;
    the same values as :func:`code_to_f32_bits`, which cannot run while a function is traced)."""
    import math

    import numpy as np

    P = sp.P
    m = P[K.M]
    sign = code >> (sp.bits - 1) & 1
    mag = code & (sp.signbit - 1)
    nan = F32_NAN | (sign << 31)
    if P[K.IEEE] and mag == P[K.INFC]:
        return EXP | (sign << 31)
    if mag > P[K.MAXC] or (P[K.FNUZ] and code == sp.signbit):
        return F32_NAN if P[K.FNUZ] else nan
    ef, f = mag >> m, mag & ((1 << m) - 1)
    v = math.ldexp(f, P[K.EMIN] - m) if ef == 0 else math.ldexp(f | (1 << m), ef - P[K.BIAS] - m)
    return int(np.float32(-v if sign else v).view(np.uint32))


def round_f32(sp: RoundSpec, b, u=None, *, values: bool):
    """Round float32 bit patterns ``b`` (uint32) into the float format of ``sp`` (:func:`fast_f32`
    must hold): codes (uint32), or with ``values=True`` the float32 patterns of the rounded values.

    Every input is handled: ±inf and NaN take the codes the core gives them (a NaN into a format
    without NaN takes :func:`bad_code`, or a NaN value with the input's sign)."""
    C = _f32_constants(sp)
    S = C["S"]
    a = b & u32(ABS)
    neg = b >> u32(31)
    below = a < u32(C["THR"])
    eff = jnp.maximum(a >> u32(23), u32(1))  # the exponent field, 1 for float32 subnormals
    mant = a - (eff << u32(23)) + u32(HIDDEN)  # the 24-bit significand (subnormals: a itself)
    x = jnp.where(below, mant, a)
    # bits of x below the quantum: S for target normals, K2 - eff >= 0 below min_normal
    s = jnp.where(below, u32(C["K2"]) - eff, u32(S))
    q = shr(x, s)
    F = shl(x, u32(32) - s)  # (s > 32 wraps to a huge amount: 0)
    sticky = None
    if sp.stochastic or not sp.mode_bits[0]:  # s > 32 leaves bits of x below F (x < 2**24)
        F = F | shr(x, s - u32(32))
        if not sp.stochastic:
            sticky = shl(x, 64 - jnp.minimum(as_i32(s), 64)) != u32(0)
    lsb = None
    if sp.reads_lsb:  # the code's last bit: for target normals bit S of a, flipped when C0 is odd
        lsb = q & u32(1) if not C["LSB_FLIP"] else (q ^ _bool_u32(~below)) & u32(1)
    q = q + _bool_u32(increment(sp, lsb, F, sticky, neg, u))
    over = q > u32(C["QMAX"])  # also every inf and NaN (a >= EXP)
    P = sp.P
    if values:
        mag = jnp.where(below, scaled_bits(q, C["QE"]), shl(q, S))
        sb, consts = 31, C["values"]
    else:
        mag = jnp.where(below, shl(q, C["SHC"]), q - u32(C["C0"]))
        sb, consts = sp.bits - 1, C["codes"]
    sign_bit = b & u32(SIGN) if sb == 31 else neg << u32(sb)
    if P[K.NEGZERO]:
        signed = mag | sign_bit
    else:
        signed = mag | jnp.where(mag == u32(0), u32(0), sign_bit)
    special = _special_select(neg, sign_bit, a, consts, sb)
    return jnp.where(over, special, signed)


def _special_select(neg, sign_bit, a, consts, sb):
    """Overflow / inf / NaN constants for float32 patterns with magnitude ``a`` beyond the range."""
    ovf, inf, nan = consts["ovf"], consts["inf"], consts["nan"]
    bit = 1 << sb
    signed_pairs = all(n == p | bit and not p & bit for p, n in (ovf, inf, nan))
    if signed_pairs:  # the negative constant is the positive one with the sign bit: pick once
        pick = _pick(a, ovf[0], inf[0], nan[0])
        return pick | sign_bit
    return _pick(a, _by_sign(neg, *ovf), _by_sign(neg, *inf), _by_sign(neg, *nan))


def _pick(a, ovf, inf, nan):
    """ovf for finite a, inf for a == EXP, nan above (constants or arrays; equal ones fold)."""
    def same(x, y):
        return isinstance(x, int) and isinstance(y, int) and x == y

    def c(x):
        return u32(x) if isinstance(x, int) else x

    if same(inf, nan):
        tail = c(inf)
    else:
        tail = jnp.where(a == u32(EXP), c(inf), c(nan))
    if same(ovf, inf) and same(inf, nan):
        return jnp.full(a.shape, c(ovf))
    return jnp.where(a < u32(EXP), c(ovf), tail)


# -- the on-grid integer entry --------------------------------------------------------------------

def grid_max(sp: RoundSpec, g: int) -> int:
    """The float format's largest finite magnitude in units of ``2**g`` (a Python int; ``g`` must
    not exceed the format's finest quantum exponent ``qe_sub``)."""
    import numpy as np

    v = float(np.uint32(_value_bits(sp, sp.P[K.MAXC])).view(np.float32))
    r = v * 2.0 ** -g
    assert r == int(r), (sp.fmt.name, g)
    return int(r)


def round_grid(sp: RoundSpec, mag, sign, g: int, u=None):
    """Round the exact finite value ``(-1)**sign * mag * 2**g`` into the float format of ``sp``,
    for a magnitude already on an integer grid: ``mag`` uint32 below ``2**31``, ``g`` a static
    Python int at or below the format's finest quantum exponent (``g <= emin - man_bits``, the
    quantum of the lowest binade, also for formats without subnormals; the largest finite
    magnitude below ``2**32`` grid units); the format must
    have ``man_bits >= 1``. The lean sibling of :func:`round_float` for callers that hold exact
    integer sums (emul_jax.accumulate's exact-product lane): the quantum's shift comes from one
    ``clz``, the discarded bits are exactly ``F`` (no sticky word), and the decision is the shared
    :func:`increment`.

    Returns ``(r, over)``: ``r`` the rounded magnitude in units of ``2**g`` (uint32, exact: a
    multiple of the result's quantum), ``over`` whether the rounded value exceeds the format's
    largest finite value (then the caller applies the overflow rule, ``OVF_POS``/``OVF_NEG``;
    ``r`` is then meaningless). ``sign`` (uint32 0/1) is read only by directed modes; ``u`` is the
    SR word."""
    P = sp.P
    m, emin = P[K.M], P[K.EMIN]
    if m < 1:
        raise ValueError(f"round_grid: {sp.fmt.name} has no fraction bits (the kept code's last bit is the "
                         "exponent's); use round_float")
    D = sp.qe_sub - g  # the shift of the finest quantum (subnormals, or min_normal without them)
    if g > emin - m:   # every quantum, the normal ones at min_normal included, lies on the grid
        raise ValueError(f"round_grid: grid 2**{g} is coarser than {sp.fmt.name}'s finest quantum")
    if grid_max(sp, g) >= 1 << 32:
        raise ValueError(f"round_grid: {sp.fmt.name}'s range does not fit uint32 on grid 2**{g}")
    top = i32(31 - m) - clz(mag)           # bit_length - 1 - m: the normal quantum's shift
    if P[K.SUB]:
        s = jnp.maximum(top, i32(D))
    else:  # below min_normal the grid is {0, min_normal}: shift emin - g (= D)
        s = jnp.where(top + i32(m) < i32(emin - g), i32(D), top)
    q = shr(mag, s)
    F = shl(mag, i32(32) - s)              # s == 0: shifted out entirely (F = 0)
    lsb = q & u32(1) if sp.reads_lsb else None
    q = q + _bool_u32(increment(sp, lsb, F, None, sign, u))
    r = shl(q, s)
    return r, r > u32(grid_max(sp, g))
