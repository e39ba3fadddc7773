"""Speed of encode/quantize against ml_dtypes, APyTypes and gfloat: same inputs, one run.

Prints a table of throughputs (median of repeats) and emul/peer ratios, how emul's cost grows
with array size, import and warm-start times; writes bench/results/quantize.json.

    .venv/bin/python bench/quantize.py [--n 16777216] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def median_time(fn, repeats):
    fn()  # warm-up (compilation, page faults)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def start_times():
    code = "import time; t = time.perf_counter(); import emul; print(time.perf_counter() - t)"
    t_import = float(subprocess.check_output([sys.executable, "-c", code], text=True))
    warm = ("import time, numpy as np; t = time.perf_counter(); import emul; "
            "emul.encode(np.ones(10, np.float32), 'e4m3fn'); emul.quantize(np.ones(10), 'e5m2'); "
            "print(time.perf_counter() - t)")
    subprocess.check_output([sys.executable, "-c", warm], text=True)  # fills the Numba cache
    t_warm = float(subprocess.check_output([sys.executable, "-c", warm], text=True))
    return t_import, t_warm


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1 << 24)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)

    import ml_dtypes

    import emul

    n = args.n
    x = (np.random.default_rng(0).standard_normal(n) * 10).astype(np.float32)
    rows = []

    def row(work, emul_fn, peer_name, peer_fn, elements=n):
        te = median_time(emul_fn, args.repeats)
        tp = median_time(peer_fn, max(1, args.repeats // 2)) if peer_fn else None
        rows.append({"work": work, "elements": elements, "emul_M_per_s": elements / te / 1e6,
                     "peer": peer_name, "peer_M_per_s": elements / tp / 1e6 if tp else None,
                     "ratio": tp / te if tp else None})

    e4m3 = ml_dtypes.float8_e4m3fn
    row("encode f32->e4m3fn RNE", lambda: emul.encode(x, "e4m3fn"), "ml_dtypes astype", lambda: x.astype(e4m3))
    row("quantize f32->e4m3fn RNE (f32 out)", lambda: emul.quantize(x, "e4m3fn"),
        "ml_dtypes astype", lambda: x.astype(e4m3))
    row("quantize f32->e4m3fn RNE (f32 out)", lambda: emul.quantize(x, "e4m3fn"),
        "ml_dtypes round trip", lambda: x.astype(e4m3).astype(np.float32))
    row("encode f32->bf16 RNE", lambda: emul.encode(x, "bf16"), "ml_dtypes astype",
        lambda: x.astype(ml_dtypes.bfloat16))
    row("encode f32->e5m2 toward_zero", lambda: emul.encode(x, "e5m2", "toward_zero"), None, None)
    row("encode f64->e4m3fn RNE", lambda: emul.encode(x.astype(np.float64), "e4m3fn"), "ml_dtypes astype",
        lambda: x.astype(np.float64).astype(e4m3))
    row("encode f32->fx<12,4> saturate", lambda: emul.encode(x, "fx<12,4>"), None, None)
    row("copy f32->u8 (memory bound)", lambda: x.astype(np.uint8), "ml_dtypes astype", lambda: x.astype(e4m3))

    # stochastic rounding, 8 random bits, threefry bits included
    sr = lambda: emul.quantize(x, "e4m3fn", "stochastic", seed=1, sr_bits=8)  # noqa: E731
    try:
        import apytypes

        m = min(n, 1 << 22)
        ax = apytypes.APyFloatArray.from_float(x[:m], exp_bits=8, man_bits=23)
        apy = lambda: ax.cast(exp_bits=4, man_bits=3, quantization=apytypes.QuantizationMode.STOCH_WEIGHTED)  # noqa: E731
        te = median_time(sr, args.repeats)
        tp = median_time(apy, 3)
        rows.append({"work": "quantize f32->e4m3 stochastic, 8 bits", "elements": n,
                     "emul_M_per_s": n / te / 1e6, "peer": f"APyTypes cast STOCH_WEIGHTED ({m} elem)",
                     "peer_M_per_s": m / tp / 1e6, "ratio": (tp / m) / (te / n)})
    except ImportError:
        row("quantize f32->e4m3fn stochastic, 8 bits", sr, None, None)
    try:
        import gfloat
        from gfloat.formats import format_info_ocp_e4m3

        m = min(n, 1 << 20)
        xs = x[:m].astype(np.float64)
        gf = lambda: gfloat.round_ndarray(format_info_ocp_e4m3, xs)  # noqa: E731
        te = median_time(lambda: emul.quantize(xs, "e4m3fn"), args.repeats)
        tp = median_time(gf, 3)
        rows.append({"work": "quantize f64->e4m3fn RNE", "elements": m, "emul_M_per_s": m / te / 1e6,
                     "peer": "gfloat round_ndarray", "peer_M_per_s": m / tp / 1e6, "ratio": tp / te})
    except ImportError:
        pass

    scaling = []
    for size in (1 << 10, 1 << 13, 1 << 16, 1 << 20, 1 << 24, 1 << 26):
        xs = (np.random.default_rng(1).standard_normal(size) * 10).astype(np.float32)
        reps = max(3, min(200, (1 << 24) // size))
        te = median_time(lambda: emul.encode(xs, "e4m3fn"), reps)
        tp = median_time(lambda: xs.astype(e4m3), max(3, reps // 4))
        scaling.append({"elements": size, "emul_us": te * 1e6, "emul_M_per_s": size / te / 1e6,
                        "ml_dtypes_M_per_s": size / tp / 1e6, "ratio": tp / te})
        del xs

    t_import, t_warm = start_times()

    print(f"emul quantize/encode benchmark — {n:,} float32 (randn*10), median of {args.repeats}, "
          f"{os.cpu_count()} cores\n")
    print(f"{'work':<40}{'emul M/s':>10}  {'peer':<42}{'peer M/s':>10}{'ratio':>9}")
    for r in rows:
        peer = r["peer"] or "-"
        pm = f"{r['peer_M_per_s']:.0f}" if r["peer_M_per_s"] else "-"
        ratio = f"{r['ratio']:.1f}x" if r["ratio"] else "-"
        print(f"{r['work']:<40}{r['emul_M_per_s']:>10.0f}  {peer:<42}{pm:>10}{ratio:>9}")
    print(f"\n{'elements':>12}{'emul us':>12}{'emul M/s':>10}{'ml_dtypes M/s':>15}{'ratio':>8}   (encode f32->e4m3fn)")
    for s in scaling:
        print(f"{s['elements']:>12,}{s['emul_us']:>12.1f}{s['emul_M_per_s']:>10.0f}{s['ml_dtypes_M_per_s']:>15.0f}"
              f"{s['ratio']:>7.1f}x")
    print(f"\nimport emul: {t_import * 1e3:.0f} ms; fresh process, import + first encode/quantize "
          f"(Numba cache warm): {t_warm * 1e3:.0f} ms")

    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", "quantize.json")
    with open(path, "w") as fh:
        json.dump({"n": n, "repeats": args.repeats, "rows": rows, "scaling": scaling,
                   "import_s": t_import, "warm_start_s": t_warm}, fh, indent=2)
    print(f"wrote {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
