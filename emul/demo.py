"""`make demo`: a precision trade-off study on data generated from fixed seeds.

Three parts, each printed as a table:

1. Formats — range and precision of every preset, and the error of rounding Gaussian and
   heavy-tailed data to each (RMS relative error, share flushed to zero, share overflowed).
2. Stochastic rounding — exact expectation by enumerating all 2**r random words (Fractions), and
   the long-sum experiment where round-to-nearest stalls and SR stays unbiased.
3. Accumulators — error of low-precision accumulators against the exact dot product, by K,
   order and chunk size (:mod:`emul.study`).
"""

from __future__ import annotations

import sys
import time
from fractions import Fraction

import numpy as np

from . import random as erandom
from .formats import FloatFormat, format as as_format
from .quantize import decode, quantize

FORMATS = ["fp32", "tf32", "bf16", "fp16", "e5m2", "e4m3fn", "e4m3fnuz", "e3m4", "e3m2fn", "e2m3fn", "e2m1fn",
           "e4m3fn-nosub", "fx<8,4>", "int8"]


def data(n=1 << 16, seed=0):
    """The study's inputs: standard normal and Student-t(3) samples (heavy tails), float32."""
    rng = np.random.default_rng(seed)
    return {"normal": rng.standard_normal(n).astype(np.float32),
            "student-t3": rng.standard_t(3, n).astype(np.float32)}


def format_table(samples) -> list[str]:
    head = f"{'format':<14}{'bits':>5}{'max':>12}{'min>0':>12}{'eps':>10}"
    for name in samples:
        head += f"  {name + ' rel.err':>18}{'→0':>7}{'ovf':>7}"
    lines = [head, "-" * len(head)]
    for name in FORMATS:
        fmt = as_format(name)
        tiny = fmt.min_subnormal if isinstance(fmt, FloatFormat) else fmt.lsb
        eps = f"{fmt.eps:.3g}" if isinstance(fmt, FloatFormat) else f"{fmt.lsb:.3g}"
        row = f"{name:<14}{fmt.bits:>5}{fmt.max:>12.4g}{tiny:>12.3g}{eps:>10}"
        for x in samples.values():
            q = quantize(x, fmt, overflow="saturate").astype(np.float64)
            x64 = x.astype(np.float64)
            nonzero = x64 != 0
            rel = np.sqrt(np.mean(((q - x64)[nonzero] / x64[nonzero]) ** 2))
            flushed = np.mean((q == 0) & nonzero)
            over = np.mean(np.abs(x64) > fmt.max)
            row += f"  {rel:>18.3e}{flushed:>7.1%}{over:>7.1%}"
        lines.append(row)
    return lines


def sr_expectation_table() -> list[str]:
    """E[SR(x)] over all 2**r words, exactly, for x between two e4m3fn neighbours."""
    lines = [f"{'x':>22}{'r':>4}{'f·2^r':>8}{'E[SR(x)] - x (exact)':>26}{'bound 2^-r ulp':>16}"]
    lo, hi = 1.0, 1.125  # neighbours in e4m3fn: ulp 1/8
    for frac in (Fraction(1, 4), Fraction(3, 16), Fraction(1, 3)):
        x = float(lo + (hi - lo) * frac)
        for r in (2, 4, 8):
            words = np.arange(1 << r)
            vals = quantize(np.full(words.size, x), "e4m3fn", "stochastic", random_bits=words, sr_bits=r)
            bias = sum(map(Fraction, vals.tolist())) / words.size - Fraction(x)
            bound = Fraction(1, 8) / (1 << r)
            shown = "0 (exactly)" if bias == 0 else f"{float(bias):.6g}"
            ft = (Fraction(x) - lo) / (hi - lo) * (1 << r)
            lines.append(f"{x:>22.17g}{r:>4}{float(ft):>8.4g}{shown:>26}{float(bound):>16.6g}")
    return lines


def long_sum_table(steps=4096, trials=64) -> list[str]:
    """Add `steps` copies of a small bf16 value to 1.0, rounding the running sum to bf16 each time."""
    inc = float(quantize(0.001, "bf16"))
    exact = 1.0 + steps * inc
    lines = [f"{'rounding':<24}{'final sum (mean)':>18}{'exact':>12}{'rel. error':>12}"]
    for label, mode, r in (("nearest_even", "nearest_even", None), ("toward_zero", "toward_zero", None),
                           ("stochastic, 8 bits", "stochastic", 8), ("stochastic, 4 bits", "stochastic", 4)):
        s = np.ones(trials)
        key = erandom.key(2024)
        for step in range(steps):
            # s and inc are bf16 values within 2**30 of each other, so s + inc is exact in float64
            if mode == "stochastic":
                s = quantize(s + inc, "bf16", mode, key=erandom.fold_in(key, step), sr_bits=r)
            else:
                s = quantize(s + inc, "bf16", mode)
        mean = float(np.mean(s))
        lines.append(f"{label:<24}{mean:>18.6f}{exact:>12.6f}{(mean - exact) / exact:>12.2%}")
    return lines


def main() -> int:
    start = time.perf_counter()
    print("emul — precision trade-off study (NumPy core; inputs from fixed seeds)\n")
    print("1. Formats: range, precision, and rounding error (nearest_even, saturate) on 65,536 samples")
    print("\n".join(format_table(data())))
    print("\n2a. Stochastic rounding is unbiased: exact expectation over all 2**r random words (e4m3fn)")
    print("\n".join(sr_expectation_table()))
    print(f"\n2b. Long sums: 1.0 + 4096 × {float(quantize(0.001, 'bf16')):.9g} in bf16, 64 trials")
    print("\n".join(long_sum_table()))
    try:
        from . import study
    except ImportError:
        study = None
    if study is not None:
        print("\n3. Accumulators: error against the exact dot product by format, K, order and chunk")
        sys.stdout.flush()
        study.main([], png="results/demo/accumulators.png")  # the table, and its plot (path printed)
    print("\n4. Training with emulated arithmetic: `emul train` on the embedded digits, every recipe")
    sys.stdout.flush()
    try:
        from emul_jax import train
    except ImportError as e:
        print(f"   skipped ({e}): pip install 'emul[train]'")
    else:
        train.main(["--recipes", "all", "--dataset", "digits", "--out", "results/demo"])
    print(f"\n(done in {time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
