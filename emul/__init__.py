"""emul: bit-exact emulation of low-precision number formats and arithmetic.

>>> import emul
>>> emul.encode(1.0, "e4m3fn")
np.uint8(56)
"""

from . import blocks, random, sparsity, study, vectors
from .accumulate import conv2d, dot, matmul
from .arith import add, div, fma, mul, sqrt, sub
from .formats import ExpFormat, FixedFormat, FloatFormat, format
from .quantize import decode, encode, quantize
from .rounding import Overflow, Rounding

__all__ = [
    "FloatFormat", "FixedFormat", "ExpFormat", "format",
    "Rounding", "Overflow",
    "quantize", "encode", "decode",
    "add", "sub", "mul", "div", "fma", "sqrt",
    "dot", "matmul", "conv2d",
    "blocks", "random", "sparsity", "study", "vectors",
]
__version__ = "0.1.0"
