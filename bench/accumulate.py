"""Speed of emul.matmul with low-precision accumulators against APyTypes and numpy: same operands, one run.

Headline 256x256 @ 256x256 cases (M MAC/s, median of repeats) and the ratios issue 13 asks for:

- e4m3fn inputs into e4m7, sequential, nearest_even: against numpy's float64 matmul (>= 0.25x)
  and APyTypes' APyFloatAccumulatorContext (>= 50x);
- the same matmul with stochastic rounding (8 bits, words drawn from a seed, i.e. the counter-based
  Threefry words included) against the RNE one (>= 0.25x);
- int8 inputs into a 12-bit saturating accumulator against APyFixedAccumulatorContext (>= 300x),
  and a wrapping one against numpy's float64 matmul (>= 0.3x);
- cold start: the first ``emul.matmul`` into e4m7 (64x64 float32 operands holding e4m3fn values) in a
  new process with an empty Numba cache (``NUMBA_CACHE_DIR`` a fresh temporary folder), <= 5 s
  (ratio 5 s / measured); wall clock, so a loaded machine inflates it (the CPU time is recorded too).

Then the other orders and formats. Writes bench/results/accumulate.json (bench/_common.py).

    .venv/bin/python bench/accumulate.py [--n 256] [--repeats 5] [--no-cold]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import median_time, ratio, write  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

COLD = """
import time, numpy as np
import emul
rng = np.random.default_rng(0)
shape = (64, 64)  # e4m3fn values in [2**-6, 1.875] as float32, made without a quantize kernel; no sum overflows
# e4m7 (an overflow would send those elements to the general kernel, a ~27 s compile)
a = rng.choice([-1.0, 1.0], shape) * rng.integers(8, 16, shape) * 2.0 ** rng.integers(-9, -2, shape)
a = a.astype(np.float32)
t, c = time.perf_counter(), time.process_time()
emul.matmul(a, a, "e4m7")
print(time.process_time() - c, time.perf_counter() - t)
"""


def operands(m, k, n, kind, seed=0):
    import ml_dtypes

    rng = np.random.default_rng(seed)
    if kind == "e4m3fn":
        a = rng.standard_normal((m, k)).astype(ml_dtypes.float8_e4m3fn).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(ml_dtypes.float8_e4m3fn).astype(np.float32)
    else:
        a = rng.integers(-128, 128, (m, k)).astype(np.int8)
        b = rng.integers(-128, 128, (k, n)).astype(np.int8)
    return a, b


def cold_start() -> tuple:
    """(CPU seconds, wall seconds) of the first matmul into e4m7 (after ``import emul``), fresh Numba
    cache, new process."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        out = subprocess.run([sys.executable, "-c", COLD], env=env, cwd=ROOT, capture_output=True, text=True,
                             check=True)
    cpu, wall = out.stdout.split()[-2:]
    return float(cpu), float(wall)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-start measurement")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()

    import apytypes as apy

    from emul.accumulate import matmul

    n, reps = args.n, args.repeats
    macs = n**3
    rec = {"n": n, "headline": [], "orders": [], "ratios": []}

    def mmacs(t):
        return macs / t / 1e6

    # --- e4m3fn inputs, e4m7 accumulator: RNE, SR, numpy, APyTypes ------------------------------
    a, b = operands(n, n, n, "e4m3fn")
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    qa = apy.APyFloatArray.from_float(a64, exp_bits=4, man_bits=3, bias=7)
    qb = apy.APyFloatArray.from_float(b64, exp_bits=4, man_bits=3, bias=7)

    def apy_float():
        with apy.APyFloatAccumulatorContext(exp_bits=4, man_bits=7, quantization=apy.QuantizationMode.TIES_EVEN):
            return qa @ qb

    t_np = median_time(lambda: a64 @ b64, reps * 4)
    t_rne = median_time(lambda: matmul(a, b, "e4m7"), reps * 2)
    t_sr = median_time(lambda: matmul(a, b, "e4m7", rounding="stochastic", seed=0, sr_bits=8), reps)
    t_apy = median_time(apy_float, max(1, reps // 2))
    print(f"{n}x{n} @ {n}x{n}, e4m3fn inputs, e4m7 accumulator, sequential")
    for name, t in (("emul nearest_even", t_rne), ("emul stochastic (8 bits, seed)", t_sr),
                    ("APyTypes APyFloatAccumulatorContext", t_apy), ("numpy float64 matmul", t_np)):
        print(f"  {name:38s} {t * 1e3:9.2f} ms {mmacs(t):9.0f} M MAC/s")
        rec["headline"].append(dict(case=name, seconds=t, mmacs=mmacs(t)))
    rec["ratios"] += [ratio("matmul e4m3fn->e4m7 RNE / numpy f64", t_np / t_rne, 0.25),
                      ratio("matmul e4m3fn->e4m7 SR8 (threefry) / same RNE", t_rne / t_sr, 0.25),
                      ratio("matmul e4m3fn->e4m7 RNE / APyTypes", t_apy / t_rne, 50)]

    # --- int8 inputs, int12 accumulator ----------------------------------------------------------
    ai, bi = operands(n, n, n, "int8")
    ai64, bi64 = ai.astype(np.float64), bi.astype(np.float64)
    fa = apy.APyFixedArray.from_float(ai64, int_bits=8, frac_bits=0)
    fb = apy.APyFixedArray.from_float(bi64, int_bits=8, frac_bits=0)

    def apy_fixed(mode):
        with apy.APyFixedAccumulatorContext(int_bits=12, frac_bits=0, overflow=mode):
            return fa @ fb

    t_np = median_time(lambda: ai64 @ bi64, reps * 4)
    print(f"\n{n}x{n} @ {n}x{n}, int8 inputs, int12 accumulator, sequential")
    for rule, apy_mode in (("saturate", apy.OverflowMode.SAT), ("wrap", apy.OverflowMode.WRAP)):
        t_emul = median_time(lambda: matmul(ai, bi, "int12", overflow=rule), reps * 2)
        t_apy = median_time(lambda: apy_fixed(apy_mode), max(1, reps // 2))
        for name, t in ((f"emul {rule}", t_emul), (f"APyTypes {rule}", t_apy)):
            print(f"  {name:38s} {t * 1e3:9.2f} ms {mmacs(t):9.0f} M MAC/s")
            rec["headline"].append(dict(case=f"int12 {name}", seconds=t, mmacs=mmacs(t)))
        if rule == "saturate":
            rec["ratios"].append(ratio("matmul int8->int12 saturate / APyTypes", t_apy / t_emul, 300))
        else:
            rec["ratios"].append(ratio("matmul int8->int12 wrap / numpy f64", t_np / t_emul, 0.3))
    print(f"  {'numpy float64 matmul':38s} {t_np * 1e3:9.2f} ms {mmacs(t_np):9.0f} M MAC/s")

    # --- orders and formats ----------------------------------------------------------------------
    print(f"\nemul, {n}^3, e4m3fn inputs: orders and accumulator formats")
    cases = [("e4m7", dict(order="pairwise")), ("e4m7", dict(order="chunked", chunk=32)),
             ("e4m7", dict(order="chunked", chunk=32, outer="fp32")), ("e4m7", dict(rounding="toward_zero")),
             ("e4m7", dict(rounding="stochastic", seed=0, sr_bits=8, order="pairwise")), ("fp16", {}), ("bf16", {}),
             ("e4m7", dict(product="e5m2")), ("fp32", dict(rounding="stochastic", seed=0, sr_bits=8))]
    for acc, kw in cases:
        t = median_time(lambda: matmul(a, b, acc, **kw), reps)
        label = acc + "".join(f" {k}={v}" for k, v in kw.items() if k != "seed")
        print(f"  {label:48s} {t * 1e3:9.2f} ms {mmacs(t):9.0f} M MAC/s")
        rec["orders"].append(dict(case=label, seconds=t, mmacs=mmacs(t)))

    if not args.no_cold:
        cpu_cold, t_cold = cold_start()
        print(f"\ncold start (new process, empty NUMBA_CACHE_DIR): first matmul into e4m7: {t_cold:.1f} s "
              f"({cpu_cold:.1f} s CPU)")
        rec["cold_start_s"], rec["cold_start_cpu_s"] = t_cold, cpu_cold
        rec["ratios"].append(ratio("cold start first matmul e4m7: 5 s / measured", 5.0 / t_cold, 1.0))

    print()
    for r in rec["ratios"]:
        print(f"  {r['name']:52s} {r['ratio']:8.3f}x   target {r['target']}")
    path = write("accumulate", rec, load_before)
    print(f"wrote {path}")
    return rec


if __name__ == "__main__":
    main()
