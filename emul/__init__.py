"""emul: bit-exact emulation of low-precision number formats and arithmetic.

>>> import emul
>>> emul.encode(1.0, "e4m3fn")
np.uint8(56)
"""

from . import random, sparsity
from .formats import FixedFormat, FloatFormat, format
from .quantize import decode, encode, quantize
from .rounding import Overflow, Rounding

__all__ = [
    "FloatFormat", "FixedFormat", "format",
    "Rounding", "Overflow",
    "quantize", "encode", "decode",
    "random", "sparsity",
]
__version__ = "0.1.0"
