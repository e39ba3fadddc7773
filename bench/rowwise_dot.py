"""Row-wise dot products: ``emul.dot(a, b, acc, axis=-1)`` against a square matmul's MAC rate with
the same accumulator (``matmul`` of 64 x K by K x 64 taken from the same operands), against the
memory-speed floor of the same operands and against the batched matmul it replaces
(``matmul(a[:, None, :], b[:, :, None])``), on e4m3fn-quantised N(0, 1) (or int8, or bf16)
inputs: 256 rows of K = 4096.

Issue 15 asks the row-wise path to run at the matmul kernel's MAC rate: ratio row-wise / matmul
(M MAC/s each, median of repeats), target 1. A row-wise MAC reads its own two operands (16 bytes
as float64, 8 as float32), so its rate is also given against the memory floor: numpy's
``einsum('ij,ij->i', a, b)`` on the same arrays in the same run (one streaming pass over both),
and as GB/s of operand bytes. Writes bench/results/rowwise_dot.json.

    .venv/bin/python bench/rowwise_dot.py [--rows 256] [--k 4096] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import median_time, ratio, write  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--k", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()

    import ml_dtypes

    import emul

    R, K, reps = args.rows, args.k, args.repeats
    rng = np.random.default_rng(0)
    a = emul.quantize(rng.standard_normal((R, K)), "e4m3fn")
    b = emul.quantize(rng.standard_normal((R, K)), "e4m3fn")
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    h = rng.standard_normal((R, K)).astype(ml_dtypes.bfloat16).astype(np.float64)
    g = rng.standard_normal((R, K)).astype(ml_dtypes.bfloat16).astype(np.float64)
    ai, bi = rng.integers(-128, 128, (R, K)), rng.integers(-128, 128, (R, K))
    cases = [("bf16", a, b, {}), ("e4m7", a, b, {}), ("fp32", a, b, {}),
             ("bf16 SR8", a, b, {"rounding": "stochastic", "sr_bits": 8, "seed": 1}),
             ("fp16 pairwise", a, b, {"order": "pairwise"}),
             ("bf16 chunked 64", a, b, {"order": "chunked", "chunk": 64}),
             ("bf16 (float32 operands)", a32, b32, {}),
             ("e4m7 (float32 operands)", a32, b32, {}),
             ("fx<20,8> sat (int8)", ai, bi, {"overflow": "saturate"}),
             ("int12 wrap (int8)", ai, bi, {"overflow": "wrap"}),
             ("fx<20,8> sat (e4m3fn values)", a, b, {"overflow": "saturate"}),
             ("fx<20,8> wrap (e4m3fn values)", a, b, {"overflow": "wrap"}),
             ("fx<20,8> sat (bf16 values)", h, g, {"overflow": "saturate"})]
    floors = {}
    for x, y in ((a, b), (a32, b32)):  # one streaming pass over both operands
        floors[x.dtype] = R * K / median_time(lambda: np.einsum("ij,ij->i", x, y), reps) / 1e6
    sq = 64
    rec = {"rows": R, "k": K, "results": [], "ratios": [],
           "memory_floor_mmac_s": {str(k): v for k, v in floors.items()}}
    print(f"row-wise dot products, {R} rows x K={K}, M MAC/s (median of {reps})")
    print("memory floor (einsum 'ij,ij->i' on the same operands): "
          + ", ".join(f"{dt}: {v:.0f} M MAC/s = {v * 2 * np.dtype(dt).itemsize / 1e3:.1f} GB/s"
                      for dt, v in floors.items()))
    print(f"{'accumulator':30s} {'dot(axis=-1)':>13s} {'GB/s':>6s} {'matmul 64xKx64':>15s} {'/matmul':>8s} "
          f"{'/floor':>7s} {'batched':>9s}")
    for label, x, y, kw in cases:
        acc = label.split()[0]
        yt = np.ascontiguousarray(y[:sq].T)
        general = "values" in label  # float operands into fixed point: the matmul runs the general kernel
        rowwise = R * K / median_time(lambda: emul.dot(x, y, acc, axis=-1, **kw), reps) / 1e6
        square = sq * sq * K / median_time(lambda: emul.matmul(x[:sq], yt, acc, **kw), 1 if general else reps) / 1e6
        batched = R * K / median_time(lambda: emul.matmul(x[:, None, :], y[:, :, None], acc, **kw), 1) / 1e6
        floor = floors.get(x.dtype, floors[np.dtype(np.float64)])
        nbytes = 2 * x.dtype.itemsize
        rec["results"].append({"acc": label, "rowwise": rowwise, "matmul": square, "batched": batched,
                               "floor": floor, "operand_gb_s": rowwise * nbytes / 1e3})
        rec["ratios"].append(ratio(f"dot(axis=-1) {label} / matmul MAC rate", rowwise / square, 1.0))
        rec["ratios"].append(ratio(f"dot(axis=-1) {label} / memory floor", rowwise / floor))
        print(f"{label:30s} {rowwise:13.1f} {rowwise * nbytes / 1e3:6.1f} {square:15.1f} {rowwise / square:7.2f}x "
              f"{rowwise / floor:6.2f}x {batched:9.1f}")
    path = write("rowwise_dot", rec, load_before)
    print(f"wrote {path}")
    return rec


if __name__ == "__main__":
    main()
