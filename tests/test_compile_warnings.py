"""The first compile of a kernel must not print Numba's internal warnings at the user.

Issue 14, item 8: ``emul._kernels.round.parts`` was an ``@overload(..., inline="always")``; inlined
two or three times into one function (the arithmetic kernel reads a, b and c; ``wide.mul_exact``
reads a and b), it tripped Numba's SSA pass, which printed ``NumbaIRAssumptionWarning`` blocks asking
the user to report a Numba bug on the first (uncached) compile of add/sub/mul/div/fma/sqrt and of
the exact dot/matmul kernel. ``parts`` is now a plain call (LLVM still inlines it).

The default test compiles small, never-cached functions that read several operands with ``parts``
(the pattern that warned) with that warning turned into an error: a few seconds. The slow test
compiles the real kernels from an empty Numba cache in a fresh process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from numba import njit
from numba.core.errors import NumbaIRAssumptionWarning, NumbaPedanticWarning

from emul._kernels import round as R
from emul._kernels import wide as W

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fresh_readers():
    """New dispatchers (never compiled in this process, never cached) that read 1, 2 and 3
    operands with ``parts``, as the arithmetic and accumulation kernels do."""

    @njit
    def one(a):
        s, m, e, k = R.parts(a)
        return m + np.uint64(s + e + k)

    @njit
    def two(a, b):
        sa, ma, ea, ka = R.parts(a)
        sb, mb, eb, kb = R.parts(b)
        return ma + mb + np.uint64(sa + sb + ea + eb + ka + kb)

    @njit
    def three(a, b, c):
        sa, ma, ea, ka = R.parts(a)
        sb, mb, eb, kb = R.parts(b)
        sc, mc, ec, kc = R.parts(c)
        return ma + mb + mc + np.uint64(sa + sb + sc + ea + eb + ec + ka + kb + kc)

    @njit
    def product(a, b):  # the exact product of the accumulation kernels
        kind, sign, hi, lo, e = W.mul_exact(a, b)
        return hi + lo + np.uint64(kind + sign + e)

    return one, two, three, product


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.uint16, np.int64])
def test_reading_several_operands_compiles_without_numba_warnings(dtype):
    one, two, three, product = _fresh_readers()
    x = dtype(3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = (one(x), two(x, dtype(5)), three(x, dtype(5), dtype(7)), product(x, dtype(5)))
    numba_warnings = [w for w in caught if issubclass(w.category, NumbaPedanticWarning)]
    assert not numba_warnings, "\n".join(str(w.message) for w in numba_warnings)
    # and the calls did read their operands (float16 arrives as its uint16 bits)
    assert all(int(v) > 0 for v in got)


CHILD = textwrap.dedent("""
    import warnings
    from numba.core.errors import NumbaIRAssumptionWarning  # (no kernel compiled by this import)
    warnings.simplefilter("always")
    warnings.simplefilter("error", NumbaIRAssumptionWarning)
    import numpy as np
    import emul
    h, f, d = np.float16, np.float32, np.float64
    for x, y, z in ((h(1.5), h(2), h(-3)), (f(1.5), f(2), f(-3)), (1.5, 2.0, -3.0), (3, 2, -1)):
        emul.add(x, y, "fp16"); emul.sub(x, y, "bf16", "up"); emul.mul(x, y, "e4m3fn")
        emul.div(x, y, "fx<8,2>", overflow="wrap"); emul.sqrt(y, "fp16"); emul.fma(x, y, z, "e5m2")
    a, b = np.arange(12.0).reshape(3, 4) / 8, np.arange(8.0).reshape(4, 2) / 4
    for acc in ("fp16", "bf16", "e4m3", "fx<12,4>", "int8"):
        emul.matmul(a, b, acc)
        emul.matmul(a, b, acc, rounding="toward_zero", order="pairwise")
        emul.matmul(a, b, acc, product="e4m3fn", order="chunked", chunk=2)
        emul.dot(a[0], b[:, 0], acc, rounding="stochastic", seed=1)
    a[0, 0] = np.inf  # a non-finite operand: the exact general kernel (b without zeros: no inf * 0)
    for acc in ("fp16", "fx<12,4>"):
        emul.matmul(a, b + 0.25, acc)
        emul.matmul(a, b + 0.25, acc, order="pairwise", rounding="stochastic", seed=2)
    emul.matmul(np.array([[2**60, 1]]), np.array([[1], [3]]), "int8")  # int64 beyond 2**53: general too
    emul.quantize(np.array([0.1, 1e-40]), "e4m3fn"); emul.encode(f([0.1, 1e-40]), "bf16")
    emul.decode(np.array([1, 2], np.uint8), "e4m3fn")
""")


@pytest.mark.slow
def test_first_compile_of_every_kernel_prints_no_numba_warning(tmp_path):
    """Empty Numba cache, fresh process, the warning category an error (set in the child after
    importing numba.core.errors: a ``-W`` option naming it would be dropped at startup, before numba
    is importable): every arithmetic op, quantize/encode/decode and the accumulation kernels
    (several accumulators, orders, products, SR, the general kernel) compile silently."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    proc = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "NumbaIRAssumptionWarning" not in proc.stderr, proc.stderr[-4000:]
    assert "Please report" not in proc.stderr and "please report" not in proc.stderr, proc.stderr[-4000:]
