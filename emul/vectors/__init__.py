"""Test vectors for hardware verification: operands and emul's expected results, as bit codes.

:func:`generate` builds a :class:`Vectors` table for one operation — ``quantize`` (a cast, any
rounding mode, stochastic rounding with the random bits as an operand), ``add``, ``sub``, ``mul``,
``fma``, ``mac`` (a multiply-accumulate sequence into a given accumulator, checked after every
step), ``nm`` (an N:M sparsity mask with the compressed values and their index metadata),
``block_encode`` or ``block_dot`` (block-scaled formats, below). Every
vector is one row of codes; every code is a bit pattern of its field's format.

Vectors come from up to three sets, in this order: ``"exhaustive"`` (every operand code, for small
formats), ``"corners"`` (zeros of both signs, subnormals, max, ties, overflow by one ulp and by half
an ulp, NaN/inf…) and ``"random"`` (``count`` seeded vectors). The settings that produced a table
are one JSON object, written into every file's header, so :func:`regenerate` re-creates a file
byte for byte from its header alone.

Files (:meth:`Vectors.to_hex`, :meth:`Vectors.to_csv`) hold one vector per line, fields in the
order of :attr:`Vectors.fields`. A hex line is the fields' codes, each as a whole number of hex
digits, separated by ``_`` (which ``$readmemh`` ignores inside a number): the line is one memory
word ``{field0, field1, …}`` in which every field is zero-extended to whole hex digits. The header
comment gives each field's bit range. :func:`read` parses both kinds back.

Expected results come from emul itself: ``encode`` for casts, ``emul.arith`` for add/sub/mul/fma,
``emul.accumulate.dot`` (sequential order) for MAC sequences, ``emul.sparsity.nm_mask`` for N:M.

Block-scaled formats (``emul.blocks``): ``block_encode`` (one block per line: the input codes, for
NVFP4 the float32 tensor scale ``t``, then the scale code ``s`` and the element codes) and
``block_dot`` (one dot product of encoded operands per line: a's scales and elements, b's, the
result code), from ``emul.blocks.encode`` and ``emul.blocks.dot`` (docs/rtl.md, section 12).
"""

# private names tests and tools use: _values, _value_text, expected_*
from ._compare import CLASSES, NAN_POLICIES, Comparison, Mismatch, compare, result_fields
from ._codes import MAX_LINES, _values, all_codes, corner_codes  # noqa: F401
from ._generate import expected_arith, expected_mac, expected_quantize, generate
from ._io import _value_text, read, regenerate  # noqa: F401
from ._settings import LFSR_DEFAULT, OPS, SETS, canonical, describe
from ._table import Field, Vectors

__all__ = ["Field", "Vectors", "generate", "read", "regenerate", "canonical", "describe", "corner_codes",
           "all_codes", "OPS", "SETS", "MAX_LINES", "LFSR_DEFAULT", "expected_arith", "expected_mac",
           "expected_quantize", "compare", "Comparison", "Mismatch", "result_fields", "NAN_POLICIES", "CLASSES"]
