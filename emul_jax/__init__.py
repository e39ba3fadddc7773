"""emul_jax: the core's numerics in pure JAX, bit for bit equal to emul.

Formats and the rounding/overflow enums are the core's own objects (``emul_jax.FloatFormat is
emul.FloatFormat``). Every computation runs on uint32 bit patterns in 32-bit lanes, never on XLA's
float arithmetic, so results equal ``emul`` on every backend; see ``docs/jax.md``.

>>> import jax.numpy as jnp, emul_jax
>>> emul_jax.encode(jnp.float32(1.0), "e4m3fn")
Array(56, dtype=uint8)
"""

from emul.formats import FixedFormat, FloatFormat, format
from emul.rounding import Overflow, Rounding

from . import ops, sparsity
from .accumulate import conv2d, dot, matmul
from .arith import add, div, fma, mul, sqrt, sub
from .ops import conv_general_dilated, dot_general
from .quantize import decode, encode, quantize

__all__ = [
    "FloatFormat", "FixedFormat", "format",
    "Rounding", "Overflow",
    "quantize", "encode", "decode",
    "add", "sub", "mul", "div", "fma", "sqrt",
    "dot", "matmul", "conv2d",
    "sparsity",
    "ops", "dot_general", "conv_general_dilated",
]
