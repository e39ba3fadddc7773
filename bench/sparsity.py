"""Benchmark emul.sparsity: transposable masks on a 4096 x 4096 weight, MVUE on 16 M elements.

Prints a table and writes bench/results/sparsity.json.  Peer: the transposable-masks paper's
method, networkx min-cost flow per 8x8 tile (the min-cost-flow construction of paper [B], docs/references.md), timed on a sample of tiles and
scaled to the whole weight; its kept |w| is checked against emul's on the sample.

    python bench/sparsity.py [--repeats 3] [--nx-tiles 300]
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numba
import numpy as np

import emul.sparsity as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median_time, ratio, write  # noqa: E402


def nx_tile_mask(tile, n):
    """The paper's construction  with integer weights and demand m*n."""
    import networkx as nx

    m = tile.shape[0]
    cost = np.rint(np.abs(tile).astype(np.float64) * 2.0**40).astype(np.int64)
    g = nx.DiGraph()
    g.add_node("s", demand=-m * n)
    g.add_node("t", demand=m * n)
    for i in range(m):
        g.add_edge("s", ("r", i), capacity=n, weight=0)
        g.add_edge(("c", i), "t", capacity=n, weight=0)
        for j in range(m):
            g.add_edge(("r", i), ("c", j), capacity=1, weight=-int(cost[i, j]))
    flow = nx.min_cost_flow(g)
    return np.array([[flow[("r", i)][("c", j)] for j in range(m)] for i in range(m)], dtype=bool)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--nx-tiles", type=int, default=300)
    args = ap.parse_args()
    load_before = os.getloadavg()

    rng = np.random.default_rng(0)
    w = rng.standard_normal((4096, 4096)).astype(np.float32)
    g = rng.standard_normal(16 * 2**20).astype(np.float32).reshape(4096, 4096)
    rows = []

    def add(task, seconds, elements=None, goal=None, note=""):
        rate = elements / seconds if elements else None
        rows.append({"task": task, "seconds": seconds, "elements_per_s": rate, "goal": goal, "note": note})

    for method, n, m, goal in [("optimal", 2, 4, "< 0.5 s"), ("optimal", 4, 8, "< 5 s"),
                               ("greedy", 4, 8, "< 0.3 s"), ("greedy", 2, 4, None)]:
        t = median_time(lambda: sp.transposable_mask(w, n, m, method=method), args.repeats)
        add(f"transposable {method} {n}:{m}, 4096x4096 f32", t, w.size, goal)

    # networkx per tile (4:8), timed on a sample and scaled to the 262,144 tiles
    nx_note = "networkx not installed"
    try:
        import networkx

        tiles = w.reshape(512, 8, 512, 8).transpose(0, 2, 1, 3).reshape(-1, 8, 8)
        pick = rng.choice(len(tiles), size=args.nx_tiles, replace=False)
        sample = tiles[pick]
        t0 = time.perf_counter()
        nx_masks = [nx_tile_mask(tile, 4) for tile in sample]
        per_tile = (time.perf_counter() - t0) / len(sample)
        ours = sp.transposable_mask(np.concatenate(list(sample), axis=1), 4, 8)
        ours = ours.reshape(8, -1, 8).transpose(1, 0, 2)
        a64 = np.abs(sample.astype(np.float64))
        same_value = all(abs((a * o).sum() - (a * q).sum()) <= 1e-6 * (a * o).sum()
                         for a, o, q in zip(a64, ours, nx_masks))
        scaled = per_tile * len(tiles)
        t_opt = next(r["seconds"] for r in rows if r["task"].startswith("transposable optimal 4:8"))
        nx_note = (f"networkx {networkx.__version__}: {per_tile * 1e3:.2f} ms/tile on {len(sample)} tiles, "
                   f"kept |w| equal to emul's: {same_value}; emul optimal 4:8 is {scaled / t_opt:.0f}x faster")
        add("networkx min-cost flow 4:8 per tile (scaled)", scaled, w.size, None, nx_note)
    except ImportError:
        pass

    for method, n, m, goal in [("exact", 2, 4, ">= 200 M/s"), ("approx", 2, 4, ">= 200 M/s"),
                               ("exact", 1, 2, None), ("exact", 4, 8, None)]:
        t = median_time(lambda: sp.mvue(g, n, m, seed=1, method=method), args.repeats)
        add(f"mvue {method} {n}:{m}, 16M f32 (bits included)", t, g.size, goal)
    t = median_time(lambda: sp.nm_mask(g, 2, 4), args.repeats)
    add("nm_mask 2:4, 16M f32", t, g.size)
    threads = numba.get_num_threads()
    if threads > 1:  # the kernels run on slices from a thread pool: how they scale
        numba.set_num_threads(1)
        try:
            t = median_time(lambda: sp.mvue(g, 2, 4, seed=1, method="approx"), args.repeats)
            add("mvue approx 2:4, 16M f32, 1 thread", t, g.size)
            t = median_time(lambda: sp.transposable_mask(w, 2, 4), args.repeats)
            add("transposable optimal 2:4, 4096x4096 f32, 1 thread", t, w.size)
        finally:
            numba.set_num_threads(threads)

    print(f"emul.sparsity, numba threads = {numba.get_num_threads()}, cpus = {os.cpu_count()}, "
          f"median of {args.repeats}")
    print(f"{'task':52s} {'seconds':>9s} {'M elem/s':>10s}  goal")
    for r in rows:
        rate = f"{r['elements_per_s'] / 1e6:10.1f}" if r["elements_per_s"] else " " * 10
        print(f"{r['task']:52s} {r['seconds']:9.3f} {rate}  {r['goal'] or ''}")
    if nx_note:
        print(nx_note)
    ratios = []  # absolute goals: the value is the measured figure, the target the goal's
    for r in rows:
        if r["goal"] and r["goal"].startswith(">="):
            ratios.append(ratio(f"{r['task']}, M elem/s", r["elements_per_s"] / 1e6, float(r["goal"].split()[1])))
        elif r["goal"] and r["goal"].startswith("<"):
            ratios.append(ratio(f"{r['task']}, goal seconds / seconds", float(r["goal"].split()[1]) / r["seconds"], 1))
    print(f"wrote {write('sparsity', {'repeats': args.repeats, 'rows': rows, 'ratios': ratios}, load_before)}")


if __name__ == "__main__":
    main()
