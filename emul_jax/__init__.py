"""emul_jax: the core's numerics in pure JAX, bit for bit equal to emul.

Formats and the rounding/overflow enums are the core's own objects (``emul_jax.FloatFormat is
emul.FloatFormat``). Every computation runs on uint32 bit patterns in 32-bit lanes, never on XLA's
float arithmetic, so results equal ``emul`` on every backend.
"""

from emul.formats import FixedFormat, FloatFormat, format
from emul.rounding import Overflow, Rounding

__all__ = [
    "FloatFormat", "FixedFormat", "format",
    "Rounding", "Overflow",
]
