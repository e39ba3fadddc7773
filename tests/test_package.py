"""The package as a user meets it: a light import, a curated namespace, the command line."""

import subprocess
import sys

import emul


def test_import_is_light():
    code = ("import sys, time\n"
            "t = time.perf_counter(); import emul; t = time.perf_counter() - t\n"
            "heavy = sorted({k.split('.')[0] for k in sys.modules} & {'jax', 'numba', 'scipy', 'llvmlite'})\n"
            "assert not heavy, heavy\n"
            "print(t)\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert float(out.stdout) < 2.0  # generous: the budget (0.3 s) is checked by bench/quantize.py


def test_public_namespace():
    for name in ["FloatFormat", "FixedFormat", "format", "Rounding", "Overflow", "quantize", "encode", "decode",
                 "random", "sparsity"]:
        assert name in emul.__all__ and hasattr(emul, name)
    assert emul.Rounding("odd") is emul.Rounding.ODD


def test_cli_info():
    out = subprocess.run([sys.executable, "-m", "emul.cli", "info", "e2m1fn"], check=True, capture_output=True,
                         text=True).stdout
    assert "max           6.0" in out and "0x7  0111  6.0" in out and "0xf  1111  -6.0" in out
    bad = subprocess.run([sys.executable, "-m", "emul.cli", "info", "e4m3x"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown name" in bad.stderr
    nosub = subprocess.run([sys.executable, "-m", "emul.cli", "info", "e2m1fin-nosub"], check=True,
                           capture_output=True, text=True).stdout
    assert "0x1  0001  (invalid" in nosub
