"""Speed of encode/quantize against ml_dtypes and APyTypes: same inputs, one run.

Rows (emul speed / peer speed, higher is better; targets from issue 13):

- float64 -> e4m3fn / bf16 / fp16 encode (nearest_even) against ml_dtypes' ``astype`` (>= 10);
- float64 -> e4m3fn stochastic rounding (8 bits, threefry words included, ``seed=``) against
  APyTypes' ``APyFloatArray.cast(..., STOCH_WEIGHTED)`` of the same float64 values (>= 5);
- float32 -> fx<8,4>, int8, fx<16,8> encode in nearest_even and down, saturate and wrap, against
  APyTypes' ``APyFixedArray.cast`` with the same quantization and overflow modes, from an
  ``APyFixedArray`` that holds the input (>= 10);
- fixed-point paths beyond float32 in deterministic modes, against the same APyTypes cast (the
  issue gives no figure of their own: the targets are carried over from the nearest row, 10 for
  deterministic casts, 5 for stochastic rounding): float32 -> fx<8,4> stochastic rounding (8 bits,
  ``seed=``, threefry words included) against ``cast(..., STOCH_WEIGHTED)``; float64 -> fx<8,4> /
  fx<16,8> (nearest_even, down; saturate, wrap) and float64 SR, on float64 arrays holding the
  float32 inputs (so that the same ``APyFixedArray`` holds them exactly); int16 -> fx<8,4> and
  int32 / int64 -> fx<16,8> against ``cast`` from an ``APyFixedArray`` of the integers; int16 ->
  e4m3fn and int32 / int64 -> bf16 against ml_dtypes' ``astype`` (no target: informational);
  ``quantize`` (values) float32 / float64 -> fx<8,4> against the same fixed cast (informational);
- a 1 K-element encode float32 -> e4m3fn against ml_dtypes' ``astype`` (>= 1: per-call cost);
- thread scaling: 16 M-element encodes with Numba's default thread count over one thread (>= 1.6),
  the parallel kernels forced (emul itself uses them only when a core is free).

APyTypes runs on ``min(n, 4 M)`` elements (its time per element is what is compared). Writes
bench/results/quantize.json (rows, ratios, machine record).

    .venv/bin/python bench/quantize.py [--n 16777216] [--repeats 7] [--rows SUBSTRING ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import median_time, ratio, write  # noqa: E402


def per_call_time(fn, calls: int, repeats: int) -> float:
    """Median over ``repeats`` samples of the mean time of ``calls`` back-to-back calls."""
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls)
    return float(np.median(samples))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1 << 24)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rows", nargs="*", default=None,
                        help="run only the rows whose name contains one of these substrings")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()

    import ml_dtypes
    import numba

    import emul

    n, reps = args.n, args.repeats
    rng = np.random.default_rng(0)
    x32 = (rng.standard_normal(n) * 10).astype(np.float32)
    x64 = rng.standard_normal(n) * 10
    rows, ratios = [], []

    def wanted(work):
        return args.rows is None or any(r in work for r in args.rows)

    def record(work, te, peer, tp, target, elements=n, peer_elements=None):
        peer_elements = peer_elements or elements
        r = (tp / peer_elements) / (te / elements)
        rows.append({"work": work, "elements": elements, "emul_M_per_s": elements / te / 1e6, "peer": peer,
                     "peer_elements": peer_elements, "peer_M_per_s": peer_elements / tp / 1e6, "ratio": r})
        ratios.append(ratio(f"{work} vs {peer}", r, target))
        print(f"{work:<44}{elements / te / 1e6:>9.0f} M/s  {peer:<34}{peer_elements / tp / 1e6:>9.0f} M/s"
              f"{r:>8.2f}x  (target {target})", flush=True)

    print(f"emul encode/quantize benchmark: n = {n:,}, median of {reps}, {os.cpu_count()} cores, "
          f"{numba.get_num_threads()} Numba threads, load {load_before[0]:.2f}\n")

    # float64 -> float formats against ml_dtypes
    for fmt, dt in (("e4m3fn", ml_dtypes.float8_e4m3fn), ("bf16", ml_dtypes.bfloat16), ("fp16", np.float16)):
        if not wanted(f"encode f64->{fmt} nearest_even"):
            continue
        te = median_time(lambda: emul.encode(x64, fmt), reps)
        tp = median_time(lambda: x64.astype(dt), reps)
        record(f"encode f64->{fmt} nearest_even", te, "ml_dtypes astype", tp, 10)

    import apytypes as apy

    m = min(n, 1 << 22)
    # stochastic rounding from float64: 8 bits, threefry words included
    if wanted("encode f64->e4m3fn stochastic 8 bits"):
        te = median_time(lambda: emul.encode(x64, "e4m3fn", "stochastic", seed=1, sr_bits=8), reps)
        af = apy.APyFloatArray.from_float(x64[:m], exp_bits=11, man_bits=52)
        tp = median_time(lambda: af.cast(exp_bits=4, man_bits=3, quantization=apy.QuantizationMode.STOCH_WEIGHTED), 3)
        record("encode f64->e4m3fn stochastic 8 bits", te, "APyTypes cast STOCH_WEIGHTED", tp, 5, peer_elements=m)

    # float32 -> fixed point
    wide = apy.APyFixedArray.from_float(x32[:m], int_bits=12, frac_bits=24)  # holds x32[:m] exactly (|x| < 2048)
    quant = {"nearest_even": apy.QuantizationMode.TIES_EVEN, "down": apy.QuantizationMode.TRN}
    over = {"saturate": apy.OverflowMode.SAT, "wrap": apy.OverflowMode.WRAP}
    for fmt, ib, fb in (("fx<8,4>", 4, 4), ("int8", 8, 0), ("fx<16,8>", 8, 8)):
        for mode in quant:
            for rule in over:
                if not wanted(f"encode f32->{fmt} {mode} {rule}"):
                    continue
                te = median_time(lambda: emul.encode(x32, fmt, mode, rule), reps)
                tp = median_time(lambda: wide.cast(int_bits=ib, frac_bits=fb, quantization=quant[mode],
                                                   overflow=over[rule]), 3)
                record(f"encode f32->{fmt} {mode} {rule}", te, "APyTypes fixed cast", tp, 10, peer_elements=m)

    # fixed point: stochastic rounding, float64 inputs (holding the float32 values), integer inputs
    x64f = x32.astype(np.float64)
    stoch = apy.QuantizationMode.STOCH_WEIGHTED
    for src, xs in (("f32", x32), ("f64", x64f)):
        work = f"encode {src}->fx<8,4> stochastic 8 bits saturate"
        if wanted(work):
            te = median_time(lambda: emul.encode(xs, "fx<8,4>", "stochastic", seed=1, sr_bits=8), reps)
            tp = median_time(lambda: wide.cast(int_bits=4, frac_bits=4, quantization=stoch,
                                               overflow=apy.OverflowMode.SAT), 3)
            record(work, te, "APyTypes fixed cast STOCH_WEIGHTED", tp, 5, peer_elements=m)
    for fmt, ib, fb, mode, rule in (("fx<8,4>", 4, 4, "nearest_even", "saturate"), ("fx<8,4>", 4, 4, "down", "wrap"),
                                    ("fx<16,8>", 8, 8, "nearest_even", "saturate")):
        work = f"encode f64->{fmt} {mode} {rule}"
        if wanted(work):
            te = median_time(lambda: emul.encode(x64f, fmt, mode, rule), reps)
            tp = median_time(lambda: wide.cast(int_bits=ib, frac_bits=fb, quantization=quant[mode],
                                               overflow=over[rule]), 3)
            record(work, te, "APyTypes fixed cast", tp, 10, peer_elements=m)
    xint = {"int16": np.clip(x32 * 16, -30000, 30000).astype(np.int16),
            "int32": (x64 * 2**12).astype(np.int32), "int64": (x64 * 2**12).astype(np.int64)}
    for src, fmt, ib, fb in (("int16", "fx<8,4>", 4, 4), ("int32", "fx<16,8>", 8, 8), ("int64", "fx<16,8>", 8, 8)):
        work = f"encode {src}->{fmt} nearest_even saturate"
        if wanted(work):
            xi = xint[src]
            held = apy.APyFixedArray.from_float(xi[:m].astype(np.float64), int_bits=32, frac_bits=0)
            te = median_time(lambda: emul.encode(xi, fmt), reps)
            tp = median_time(lambda: held.cast(int_bits=ib, frac_bits=fb, quantization=quant["nearest_even"],
                                               overflow=over["saturate"]), 3)
            record(work, te, "APyTypes fixed cast", tp, 10, peer_elements=m)
    for src, fmt, dt in (("int16", "e4m3fn", ml_dtypes.float8_e4m3fn), ("int32", "bf16", ml_dtypes.bfloat16),
                         ("int64", "bf16", ml_dtypes.bfloat16)):
        work = f"encode {src}->{fmt} nearest_even"
        if wanted(work):
            xi = xint[src]
            te = median_time(lambda: emul.encode(xi, fmt), reps)
            tp = median_time(lambda: xi.astype(dt), reps)
            record(work, te, "ml_dtypes astype (double-rounds > 2**24)" if src != "int16" else "ml_dtypes astype", tp, None)
    # quantize (values, not codes) to fixed point: the encode kernels, then the codes' values
    for src, xs in (("f32", x32), ("f64", x64f)):
        work = f"quantize {src}->fx<8,4> nearest_even saturate (values)"
        if wanted(work):
            te = median_time(lambda: emul.quantize(xs, "fx<8,4>"), reps)
            tp = median_time(lambda: wide.cast(int_bits=4, frac_bits=4, quantization=quant["nearest_even"],
                                               overflow=over["saturate"]), 3)
            record(work, te, "APyTypes fixed cast", tp, None, peer_elements=m)

    # per-call cost: 1 K elements
    if wanted("encode f32->e4m3fn, 1 K elements"):
        small = x32[:1024].copy()
        te = per_call_time(lambda: emul.encode(small, "e4m3fn"), 200, 15)
        tp = per_call_time(lambda: small.astype(ml_dtypes.float8_e4m3fn), 200, 15)
        record("encode f32->e4m3fn, 1 K elements", te, "ml_dtypes astype", tp, 1, elements=1024)

    # thread scaling of the parallel kernels: default thread count over one thread, same call.
    # emul uses threads only when a core is free (load average <= cores - 1); here they are forced,
    # so the row measures the kernels' scaling whatever the load (recorded in the machine record).
    Q = sys.modules["emul.quantize"]
    threads_pay, Q._threads_pay = Q._threads_pay, lambda: True
    threads = numba.get_num_threads()
    for work, fn in (("encode f32->e4m3fn", lambda: emul.encode(x32, "e4m3fn")),
                     ("encode f64->e4m3fn", lambda: emul.encode(x64, "e4m3fn")),
                     ("encode f32->fx<8,4>", lambda: emul.encode(x32, "fx<8,4>"))):
        if not wanted(f"{work} {threads} threads"):
            continue
        numba.set_num_threads(1)
        try:
            t1 = median_time(fn, reps)
        finally:
            numba.set_num_threads(threads)
        tn = median_time(fn, reps)
        record(f"{work} {threads} threads", tn, "same, 1 thread", t1, 1.6)
    Q._threads_pay = threads_pay

    if args.rows is not None:  # a partial run does not replace the record
        print(f"\n--rows given: bench/results/quantize.json not written (load now {os.getloadavg()[0]:.2f})")
        return
    path = write("quantize", {"n": n, "repeats": reps, "apytypes_elements": m, "rows": rows, "ratios": ratios},
                 load_before)
    print(f"\nwrote {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
