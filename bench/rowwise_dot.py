"""Row-wise dot products: ``emul.dot(a, b, acc, axis=-1)`` against the batched matmul it replaces
(``matmul(a[:, None, :], b[:, :, None])``, one 1 x K by K x 1 product per row) and against a square
matmul's MAC rate, on the same e4m3fn-quantised N(0, 1) (or int8) inputs: 256 rows of K = 4096.

Prints M MAC/s (best of 7 after a warm-up call) and writes bench/results/rowwise_dot.json.

    python bench/rowwise_dot.py
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

import emul

R, K = 256, 4096


def rate(f, macs, repeats=7):
    f()
    best = min(_timed(f) for _ in range(repeats))
    return macs / best / 1e6


def _timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def main():
    rng = np.random.default_rng(0)
    a = emul.quantize(rng.standard_normal((R, K)), "e4m3fn")
    b = emul.quantize(rng.standard_normal((R, K)), "e4m3fn")
    ai, bi = rng.integers(-128, 128, (R, K)), rng.integers(-128, 128, (R, K))
    cases = [("bf16", a, b, {}), ("e4m7", a, b, {}), ("fp32", a, b, {}),
             ("bf16 SR8", a, b, {"rounding": "stochastic", "sr_bits": 8, "seed": 1}),
             ("fp16 pairwise", a, b, {"order": "pairwise"}),
             ("fx<20,8> sat (int8)", ai, bi, {"overflow": "saturate"}), ("int12 wrap (int8)", ai, bi, {"overflow": "wrap"})]
    rows = []
    print(f"row-wise dot products, {R} rows x K={K}, M MAC/s (best of 7; {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f})")
    print(f"{'accumulator':22s} {'batched matmul':>15s} {'dot(axis=-1)':>13s} {'ratio':>6s} {'matmul 64xKx64':>15s}")
    for label, x, y, kw in cases:
        acc = label.split()[0]
        batched = rate(lambda: emul.matmul(x[:, None, :], y[:, :, None], acc, **kw), R * K)
        rowwise = rate(lambda: emul.dot(x, y, acc, axis=-1, **kw), R * K)
        square = rate(lambda: emul.matmul(x[:64], y[:64].T, acc, **kw), 64 * 64 * K)
        rows.append({"acc": label, "batched": batched, "rowwise": rowwise, "matmul": square})
        print(f"{label:22s} {batched:15.1f} {rowwise:13.1f} {rowwise / batched:5.1f}x {square:15.1f}")
    out = Path(__file__).resolve().parent / "results" / "rowwise_dot.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"rows": R, "k": K, "load": os.getloadavg()[0], "results": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
