"""Golden model of emul: slow, obviously-correct scalar Python over int and Fraction.

Reads like the semantics pages of docs/ (formats, rounding, arith, accumulators, sparsity); imports nothing from emul. Values are Fraction (finite
nonzero), or float (signed zeros, infinities, NaN).
"""

from . import sparsity
from .arith import add, div, dot, fma, matmul, mul, sqrt, sr_steps, sub
from .formats import Fixed, Float
from .quantize import decode, encode, quantize
from .rounding import MODES

__all__ = ["Float", "Fixed", "encode", "decode", "quantize", "MODES",
           "add", "sub", "mul", "div", "fma", "sqrt", "dot", "matmul", "sr_steps", "sparsity"]
