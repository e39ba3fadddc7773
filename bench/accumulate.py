"""Speed of emul.matmul with low-precision accumulators against APyTypes and numpy: same operands, one run.

Prints M MAC/s (median of repeats; ratios also from the best repeat of each, which is steadier
on a shared machine) for the headline 256x256 @ 256x256 cases and their ratios —
e4m3fn inputs into an e4m7 accumulator (emul vs APyTypes' APyFloatAccumulatorContext vs numpy's
float64 matmul), int8 inputs into a 12-bit saturating and a wrapping accumulator (vs
APyFixedAccumulatorContext and numpy) — then the other orders and formats, and how emul's cost
grows with K and with the matrix size. Writes bench/results/accumulate.json.

    .venv/bin/python bench/accumulate.py [--n 256] [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


BEST = {}  # fn label -> best time, for the second (best-of) ratio column


def median_time(fn, repeats, label=None):
    """Median wall time of repeats (after a warm-up); the best one is kept in BEST[label]."""
    fn()  # warm-up: compilation, page faults
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    if label:
        BEST[label] = float(np.min(times))
    return float(np.median(times))


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="skip the K and size sweeps")
    args = parser.parse_args(argv)

    import apytypes as apy

    from emul.accumulate import matmul

    n, reps = args.n, args.repeats
    macs = n**3
    results = {"n": n, "headline": [], "orders": [], "k_sweep": [], "size_sweep": []}

    def mmacs(t, work=macs):
        return work / t / 1e6

    # --- headline: e4m3fn inputs, e4m7 accumulator ------------------------------------------
    a, b = operands(n, n, n, "e4m3fn")
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    qa = apy.APyFloatArray.from_float(a64, exp_bits=4, man_bits=3, bias=7)
    qb = apy.APyFloatArray.from_float(b64, exp_bits=4, man_bits=3, bias=7)

    def apy_float():
        with apy.APyFloatAccumulatorContext(exp_bits=4, man_bits=7, quantization=apy.QuantizationMode.TIES_EVEN):
            return qa @ qb

    t_np = median_time(lambda: a64 @ b64, reps * 4, "np")
    t_emul = median_time(lambda: matmul(a, b, "e4m7"), reps * 2, "emul")
    t_apy = median_time(apy_float, max(1, reps // 2), "apy")
    ours = matmul(a, b, "e4m7").astype(np.float64)
    theirs = np.asarray(apy_float().to_numpy(), np.float64)
    agree = int(np.count_nonzero(ours == theirs))
    print(f"{n}x{n} @ {n}x{n}, e4m3fn inputs, e4m7 accumulator, sequential, nearest_even")
    print(f"  {'':34s} {'time ms':>9s} {'M MAC/s':>10s}")
    for name, t in (("emul.matmul(acc='e4m7')", t_emul), ("APyTypes APyFloatAccumulatorContext", t_apy),
                    ("numpy float64 matmul (BLAS)", t_np)):
        print(f"  {name:34s} {t * 1e3:9.2f} {mmacs(t):10.0f}")
    print(f"  emul / APyTypes speed: {t_apy / t_emul:7.1f}x (best of each: {BEST['apy'] / BEST['emul']:.1f}x)"
          "   target >= 50x")
    print(f"  emul / numpy f64 speed: {t_np / t_emul:6.3f}x (best of each: {BEST['np'] / BEST['emul']:.3f}x)"
          "   target >= 0.1x")
    print(f"  outputs equal to APyTypes': {agree} of {ours.size} (APyTypes mis-rounds subnormal products)")
    results["headline"].append(dict(case="e4m7", emul_s=t_emul, apytypes_s=t_apy, numpy_f64_s=t_np,
                                    vs_apytypes=t_apy / t_emul, vs_numpy=t_np / t_emul, agree_apytypes=agree))

    # --- headline: int8 inputs, 12-bit fixed accumulator --------------------------------------
    ai, bi = operands(n, n, n, "int8")
    ai64, bi64 = ai.astype(np.float64), bi.astype(np.float64)
    fa = apy.APyFixedArray.from_float(ai64, int_bits=8, frac_bits=0)
    fb = apy.APyFixedArray.from_float(bi64, int_bits=8, frac_bits=0)

    def apy_fixed(mode):
        with apy.APyFixedAccumulatorContext(int_bits=12, frac_bits=0, overflow=mode):
            return fa @ fb

    t_np = median_time(lambda: ai64 @ bi64, reps * 4, "np")
    print(f"\n{n}x{n} @ {n}x{n}, int8 inputs, 12-bit fixed-point accumulator (int12), sequential")
    print(f"  {'':34s} {'time ms':>9s} {'M MAC/s':>10s}")
    exact = ai64 @ bi64
    for rule, apy_mode, target, vs in (("saturate", apy.OverflowMode.SAT, 200, "APyTypes"),
                                       ("wrap", apy.OverflowMode.WRAP, 0.3, "numpy f64")):
        t_emul = median_time(lambda: matmul(ai, bi, "int12", overflow=rule), reps * 2, "emul")
        t_apy = median_time(lambda: apy_fixed(apy_mode), max(1, reps // 2), "apy")
        ours = matmul(ai, bi, "int12", overflow=rule).astype(np.float64)
        theirs = np.asarray(apy_fixed(apy_mode).to_numpy(), np.float64)
        agree = int(np.count_nonzero(ours == theirs))
        print(f"  {'emul.matmul(acc=int12, ' + rule + ')':34s} {t_emul * 1e3:9.2f} {mmacs(t_emul):10.0f}")
        print(f"  {'APyTypes fixed context, ' + rule:34s} {t_apy * 1e3:9.2f} {mmacs(t_apy):10.0f}")
        ratio = t_apy / t_emul if vs == "APyTypes" else t_np / t_emul
        best = (BEST["apy"] if vs == "APyTypes" else BEST["np"]) / BEST["emul"]
        print(f"    emul / {vs} speed: {ratio:7.2f}x (best of each: {best:.2f}x), target >= {target}x;"
              f" emul / APyTypes {t_apy / t_emul:.0f}x; equal outputs {agree} of {ours.size}")
        results["headline"].append(dict(case=f"int12-{rule}", emul_s=t_emul, apytypes_s=t_apy, numpy_f64_s=t_np,
                                        vs_apytypes=t_apy / t_emul, vs_numpy=t_np / t_emul, agree_apytypes=agree))
    clamped_end = np.clip(exact, -2048, 2047)
    ours = matmul(ai, bi, "int12").astype(np.float64)
    print(f"  {'numpy float64 matmul (BLAS)':34s} {t_np * 1e3:9.2f} {mmacs(t_np):10.0f}")
    print(f"  (saturating every step differs from clamping the exact sum once in "
          f"{int(np.count_nonzero(ours != clamped_end))} of {ours.size} outputs)")

    # --- orders and formats -------------------------------------------------------------------
    print(f"\nemul, {n}^3, e4m3fn inputs: orders and accumulator formats")
    cases = [("e4m7", {}), ("e4m7", dict(order="pairwise")), ("e4m7", dict(order="chunked", chunk=32)),
             ("e4m7", dict(order="chunked", chunk=32, outer="fp32")), ("e4m7", dict(rounding="toward_zero")),
             ("e4m7", dict(rounding="stochastic", seed=0, sr_bits=8)), ("e5m6", {}), ("fp16", {}), ("bf16", {}),
             ("e4m7-nosub", {}), ("e4m7", dict(product="e5m2")), ("fp32", dict(rounding="stochastic", seed=0))]
    for acc, kw in cases:
        t = median_time(lambda: matmul(a, b, acc, **kw), reps)
        label = acc + "".join(f" {k}={v}" for k, v in kw.items() if k != "seed")
        print(f"  {label:48s} {t * 1e3:9.2f} ms {mmacs(t):9.0f} M MAC/s")
        results["orders"].append(dict(case=label, seconds=t, mmacs=mmacs(t)))

    if not args.quick:
        print(f"\nemul: cost against K ({n}x K @ K x{n}); M MAC/s")
        print(f"  {'K':>6s} {'e4m7':>9s} {'e4m7 pw':>9s} {'int12 sat':>10s} {'int12 wrap':>11s} {'numpy f64':>10s}")
        for k in (64, 256, 1024, 4096):
            a_k, b_k = operands(n, k, n, "e4m3fn", seed=k)
            ai_k, bi_k = operands(n, k, n, "int8", seed=k)
            work = n * n * k
            row = [median_time(lambda: matmul(a_k, b_k, "e4m7"), reps),
                   median_time(lambda: matmul(a_k, b_k, "e4m7", order="pairwise"), reps),
                   median_time(lambda: matmul(ai_k, bi_k, "int12"), reps),
                   median_time(lambda: matmul(ai_k, bi_k, "int12", overflow="wrap"), reps)]
            f64 = (a_k.astype(np.float64), b_k.astype(np.float64))
            row.append(median_time(lambda: f64[0] @ f64[1], reps * 2))
            print(f"  {k:6d} " + " ".join(f"{mmacs(t, work):9.0f} " for t in row))
            results["k_sweep"].append(dict(k=k, seconds=row))
        print("\nemul: cost against size (s x s @ s x s); M MAC/s")
        print(f"  {'size':>6s} {'e4m7':>9s} {'int12 sat':>10s} {'int12 wrap':>11s} {'numpy f64':>10s}")
        for s in (64, 128, 256, 512, 1024):
            a_s, b_s = operands(s, s, s, "e4m3fn", seed=s)
            ai_s, bi_s = operands(s, s, s, "int8", seed=s)
            row = [median_time(lambda: matmul(a_s, b_s, "e4m7"), reps),
                   median_time(lambda: matmul(ai_s, bi_s, "int12"), reps),
                   median_time(lambda: matmul(ai_s, bi_s, "int12", overflow="wrap"), reps)]
            f64 = (a_s.astype(np.float64), b_s.astype(np.float64))
            row.append(median_time(lambda: f64[0] @ f64[1], reps * 2))
            print(f"  {s:6d} " + " ".join(f"{mmacs(t, s**3):9.0f} " for t in row))
            results["size_sweep"].append(dict(size=s, seconds=row))

    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "accumulate.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
