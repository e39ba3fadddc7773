"""Benchmark emul.vectors: the hex writer against np.savetxt and Python string formatting, the
reader, and generating the exhaustive e4m3fn x e4m3fn -> fp16 vectors.

Same table for every writer: 16 M lines of three fields (8, 8 and 16 bits: a $readmemh line
``aa_bb_yyyy``), written to a file in a temporary directory. Goal: >= 20 M lines/s (np.savetxt:
~1.4 M lines/s on a quiet machine). Prints a table and writes bench/results/vectors.json.

    python bench/vectors.py [--lines 16777216] [--repeats 3] [--peer-lines 1048576]
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

import emul.vectors as V

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median_time, ratio, write  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1 << 24)
    ap.add_argument("--peer-lines", type=int, default=1 << 20, help="lines for the slow peers (scaled)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    load_before = os.getloadavg()

    rng = np.random.default_rng(0)
    n = args.lines
    codes = np.stack([rng.integers(0, 256, n), rng.integers(0, 256, n), rng.integers(0, 1 << 16, n)],
                     axis=1).astype(np.uint64)
    fields = (V.Field("a", 8, "e4m3fn"), V.Field("b", 8, "e4m3fn"), V.Field("y", 16, "fp16"))
    vec = V.Vectors({}, fields, codes)
    small = V.Vectors({}, fields, codes[: args.peer_lines])
    rows = []

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.hex"

        def add(task, lines, seconds, note=""):
            rows.append({"task": task, "lines": lines, "seconds": seconds, "mlines_s": lines / seconds / 1e6,
                         "note": note})

        add("emul Vectors.to_hex (Numba, file)", n, median_time(lambda: vec.to_hex(path), args.repeats),
            "goal >= 20 M lines/s")
        size = path.stat().st_size
        add("emul Vectors.to_bytes (Numba, memory)", n, median_time(lambda: vec.to_bytes(), args.repeats))
        add("emul Vectors.to_csv (Numba, file)", n,
            median_time(lambda: vec.to_csv(Path(tmp) / "v.csv"), args.repeats))
        add("emul read (NumPy, fixed-width lines)", n, median_time(lambda: V.read(path), args.repeats))
        sub = codes[: args.peer_lines]
        add("np.savetxt fmt='%02x_%02x_%04x'", len(sub),
            median_time(lambda: np.savetxt(Path(tmp) / "s.txt", sub, fmt="%02x_%02x_%04x"), 1), "peer")
        add("Python f-strings + writelines", len(sub), median_time(
            lambda: (Path(tmp) / "p.txt").write_text(
                "".join(f"{a:02x}_{b:02x}_{y:04x}\n" for a, b, y in sub.tolist())), 1), "peer")
        add("emul to_csv(values=True) (Python repr)", len(sub),
            median_time(lambda: small.to_csv(Path(tmp) / "vv.csv", values=True), 1))
        t0 = time.perf_counter()
        gen = V.generate("mul", fmt="e4m3fn", out_fmt="fp16", sets="exhaustive")
        add("generate mul e4m3fn x e4m3fn -> fp16, exhaustive (first call)", len(gen), time.perf_counter() - t0)
        add("generate mul e4m3fn x e4m3fn -> fp16, exhaustive", len(gen), median_time(
            lambda: V.generate("mul", fmt="e4m3fn", out_fmt="fp16", sets="exhaustive"), args.repeats))
        add("generate mac int8 x int8 -> int12 sat, 1000 x 16 steps", 17648, median_time(
            lambda: V.generate("mac", overflow="saturate", k=16, count=1000, seed=1), args.repeats))

    ref = next(r for r in rows if r["task"].startswith("np.savetxt"))["mlines_s"]
    print(f"emul.vectors, {n} lines of 'aa_bb_yyyy' ({size / n:.0f} bytes/line), numba threads = "
          f"{numba.get_num_threads()}, cpus = {os.cpu_count()}, load = {os.getloadavg()[0]:.1f}")
    print(f"{'task':62s} {'lines':>9s} {'seconds':>8s} {'M lines/s':>10s} {'x savetxt':>9s}  note")
    for r in rows:
        print(f"{r['task']:62s} {r['lines']:9d} {r['seconds']:8.3f} {r['mlines_s']:10.2f} "
              f"{r['mlines_s'] / ref:9.1f}  {r['note']}")
    hexw = rows[0]["mlines_s"]
    ratios = [ratio("to_hex, M lines/s (goal 20)", hexw, 20), ratio("to_hex vs np.savetxt", hexw / ref)]
    print(f"wrote {write('vectors', {'lines': n, 'rows': rows, 'ratios': ratios}, load_before)}")


if __name__ == "__main__":
    main()
