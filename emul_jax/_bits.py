"""Lane arithmetic on 32-bit integer patterns: the building blocks of emul_jax's rounding.

XLA's float arithmetic is not IEEE arithmetic on every backend (CPU flushes float32 subnormals to
zero, ``a*b+c`` is fused into an FMA, ``x/c`` becomes ``x*(1/c)``; see ``docs/jax.md``), so every
decision in emul_jax is made on ``uint32`` bit patterns and ``int32`` exponents, never on a float
compare or a float product. Everything here works with ``jax_enable_x64`` off (JAX's default).

Conventions:

- arrays are ``uint32`` unless a docstring says ``int32``; constants are Python ints, turned into
  ``uint32`` scalars by :func:`u32` (so no Python int is ever promoted to a wider type);
- a 64-bit magnitude ``M = hi * 2**32 + lo`` travels as two ``uint32`` words; ``hi=None`` means
  ``hi == 0`` and lets the one-word case skip its half of the work;
- shift amounts may be any ``int32``/``uint32`` array: XLA defines a logical shift by an amount
  ``>= 32`` as 0 (the elemental emitter saturates it on CPU and GPU; HLO semantics on TPU), and an
  ``int32`` amount is reinterpreted as ``uint32``, so a negative amount shifts everything out too.
  :func:`shl`, :func:`shr` and :func:`word` rely on that and are tested on it.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

U32 = jnp.uint32
I32 = jnp.int32
ABS = 0x7FFFFFFF    # float32: everything but the sign
EXP = 0x7F800000    # float32: the exponent field (the pattern of +inf)
FRAC = 0x007FFFFF   # float32: the mantissa field
HIDDEN = 0x00800000  # float32: the hidden bit
SIGN = 0x80000000   # float32: the sign bit


def u32(c: int):
    """The Python int ``c`` (taken mod 2**32) as a ``uint32`` scalar constant."""
    return np.uint32(c & 0xFFFFFFFF)


def i32(c: int):
    """The Python int ``c`` as an ``int32`` scalar constant (it must fit)."""
    return np.int32(c)


def as_u32(n):
    """An int32/uint32/bool array as ``uint32`` (int32 bit patterns are kept: -1 -> 2**32 - 1)."""
    return n if n.dtype == U32 else lax.convert_element_type(n, U32)


def as_i32(n):
    """A uint32/bool array as ``int32`` (bit patterns kept)."""
    return n if n.dtype == I32 else lax.convert_element_type(n, I32)


def shl(x, n):
    """``x << n`` modulo 2**32; 0 when ``n >= 32`` or ``n < 0`` (``n``: a Python int or an array)."""
    if isinstance(n, (int, np.integer)):
        return x << u32(int(n)) if 0 <= n < 32 else jnp.zeros_like(x)
    return lax.shift_left(x, as_u32(n))


def shr(x, n):
    """``x >> n`` (logical); 0 when ``n >= 32`` or ``n < 0`` (``n``: a Python int or an array)."""
    if isinstance(n, (int, np.integer)):
        return lax.shift_right_logical(x, u32(int(n))) if 0 <= n < 32 else jnp.zeros_like(x)
    return lax.shift_right_logical(x, as_u32(n))


def word(hi, lo, k):
    """Bits ``[k, k + 32)`` of ``M = hi * 2**32 + lo`` as one word (``k`` an int32 array; bits
    below 0 and above 63 read as 0). ``word(hi, lo, s)`` is the low word of ``M >> s`` for
    ``s >= 0`` and of ``M << -s`` for ``-32 < s < 0``."""
    r = shr(lo, k) | shl(lo, -k)
    if hi is not None:
        r = r | shl(hi, 32 - k) | shr(hi, k - 32)
    return r


def low_bits_nonzero(hi, lo, n):
    """Whether bits ``[0, n)`` of ``M`` hold a 1 (``n`` an int32 array; False for ``n <= 0``)."""
    n = jnp.clip(n, 0, 64)
    r = shl(lo, 32 - n)
    if hi is not None:
        r = r | shl(hi, 64 - n) | jnp.where(n > 32, lo, u32(0))
    else:
        r = r | jnp.where(n > 32, lo, u32(0))
    return r != u32(0)


def clz(x):
    """Leading zeros of each uint32 word as int32 (32 for 0)."""
    return as_i32(lax.clz(x))


def bit_length(hi, lo):
    """The bit length of ``M`` (0 for ``M == 0``) as int32."""
    if hi is None:
        return 32 - clz(lo)
    return jnp.where(hi != u32(0), 64 - clz(hi), 32 - clz(lo))


def f32_bits(x):
    """The bit patterns of a float32 array."""
    return lax.bitcast_convert_type(x, U32)


def f32_from_bits(b):
    """The float32 array with bit patterns ``b`` (subnormals are kept: no float operation runs)."""
    return lax.bitcast_convert_type(b, jnp.float32)


def f16_to_f32_bits(h):
    """Exact widening of float16 bit patterns (uint16) to float32 bit patterns (NaNs stay NaN,
    subnormals become normal float32 values), in integer operations only."""
    h = lax.convert_element_type(h, U32)
    sign = (h >> u32(15)) << u32(31)
    e = (h >> u32(10)) & u32(0x1F)
    f = h & u32(0x3FF)
    normal = ((e + u32(112)) << u32(23)) | (f << u32(13))
    special = u32(EXP) | (f << u32(13))
    sub = scaled_bits(f, -24)
    return sign | jnp.where(e == u32(0), sub, jnp.where(e == u32(0x1F), special, normal))


def bf16_to_f32_bits(h):
    """Exact widening of bfloat16 bit patterns (uint16) to float32 bit patterns."""
    return lax.convert_element_type(h, U32) << u32(16)


def scaled_bits(q, k):
    """The float32 bit pattern of ``q * 2**k`` (``q`` a uint32 array below 2**24, ``k`` a Python
    int or an int32 array), which the caller guarantees is a float32 (normal or subnormal) or 0.

    ``q`` converts to float32 exactly (an integer below 2**24, no rounding, no subnormal), then
    ``k`` is added to the exponent field; results below 2**-126 are built as subnormal patterns
    ``q << (k + 149)`` instead. No float arithmetic runs, so XLA's subnormal flushing cannot touch it.
    """
    # q < 2**24: as int32 it converts exactly (and, unlike uint32, in vector instructions)
    fb = f32_bits(lax.convert_element_type(as_i32(q), jnp.float32))
    if isinstance(k, (int, np.integer)):
        k = int(k)
        normal = fb + u32(k << 23)
        if k >= -126:  # every nonzero q * 2**k is a normal float32
            return jnp.where(q == u32(0), u32(0), normal)
        sub = shl(q, k + 149) if k + 149 >= 0 else shr(q, -(k + 149))
        # q == 0 gives fb == 0, so the exponent test fails and sub (0) is taken
        return jnp.where(as_i32(fb >> u32(23)) + i32(k) >= 1, normal, sub)
    normal = fb + (as_u32(k) << u32(23))
    sub = shl(q, k + 149) | shr(q, -(k + 149))
    res = jnp.where(as_i32(fb >> u32(23)) + k >= 1, normal, sub)
    return jnp.where(q == u32(0), u32(0), res)
