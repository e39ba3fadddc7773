"""Speed of emul_jax.matmul (jitted, CPU) against the core's emul.matmul on the same operands: one run.

The headline is the issue's target: 256 x 256 @ 256 x 256 with e4m3fn-valued float32 operands into
an e4m7 accumulator, sequential, round to nearest even (emul_jax's exact-product lane: every
product an exact multiple of 2**-20, summed in int32 and rounded by _round.round_grid), then the
other paths for context: int8 into a saturating and a wrapping int12 accumulator (the exact-product
lane: an int32 add and a clamp or wrap), the round-to-odd fast path (chunked), fp16 and bf16
accumulators (the general path: emul_jax._exact sums of multi-word magnitudes), pairwise and chunked orders, stochastic rounding. Every emul_jax result is first
checked equal to the core's, bit for bit.

Timings: best of ``--repeats`` after a warm-up call, interleaved (every function once per round) so
that a changing load weighs on both alike; wall time (the ratio the issue sets a target for) and
process CPU time (all threads), which is what a busy machine does not inflate. Writes
bench/results/jax_accumulate.json with the machine (cores, load average before and after).

    .venv/bin/python bench/jax_accumulate.py [--n 256] [--repeats 7] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
# bench/ holds a jax.py: drop this folder from the path so that ``import jax`` finds JAX.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
sys.path.insert(0, os.path.dirname(HERE))
sys.path.append(HERE)  # last: bench/_common.py, without shadowing installed packages
from _common import cpu_model  # noqa: E402


def best_times(fns, repeats):
    """{name: (best wall, best process CPU)} over interleaved rounds, after one warm-up call each."""
    for fn in fns.values():
        fn()
    best = {name: [float("inf"), float("inf")] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            w, c = time.perf_counter(), time.process_time()
            fn()
            w, c = time.perf_counter() - w, time.process_time() - c
            best[name][0] = min(best[name][0], w)
            best[name][1] = min(best[name][1], c)
    return {k: tuple(v) for k, v in best.items()}


def lane_of(cfg, a, b):
    """The lane emul_jax.matmul's run-time check picks for these operands (a, b: (1, M, K), (1, K, N)):
    "exact" (exact-product lane), "odd" (round-to-odd fast path) or False (the general path)."""
    from emul_jax import accumulate as A

    ab, bb = A._f32_bits_exact(a), A._f32_bits_exact(b)
    if cfg.xgrid is not None and bool(A._exact_ok(cfg, ab, bb)):
        return "exact"
    if cfg.grids is not None and bool(A._fast_ok(cfg, ab, bb)):
        return "odd"
    return False


LANES = {"exact": "exact-product lane: int32 grid sums, round_grid / clamp",
         "odd": "fast path: int32 grid, products rounded to odd, round_f32 / round_parts",
         False: "general path: _exact.add_parts, round_parts"}


def loop_ops(cfg, a, b, u, fast):
    """Lane operations per multiply-accumulate: the operations in the largest fusion (the scan's
    body) of the lane this configuration takes on these operands, compiled alone (constants,
    broadcasts, parameters not counted)."""
    import jax

    from emul_jax import accumulate as A

    lowered = jax.jit(A._compute, static_argnums=(0, 6)).lower(cfg, a[None], b[None], None, u, None, fast)
    text = lowered.compile().as_text()
    best = 0
    for comp in re.split(r"\n(?=%\S+ \()", text):
        n = 0
        for line in comp.splitlines()[1:]:
            m = re.search(r"= \S+ ([a-z\-]+)\(", line)
            if m and m.group(1) not in ("parameter", "constant", "broadcast", "bitcast", "get-tuple-element",
                                        "tuple", "fusion", "dynamic-slice"):
                n += 1
        best = max(best, n)
    return best


def operands(n, kind, seed=0):
    import ml_dtypes

    rng = np.random.default_rng(seed)
    if kind == "e4m3fn":
        return tuple(rng.standard_normal((n, n)).astype(ml_dtypes.float8_e4m3fn).astype(np.float32)
                     for _ in range(2))
    return tuple(rng.integers(-128, 128, (n, n)).astype(np.float32) for _ in range(2))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="the headline only")
    args = parser.parse_args(argv)

    import jax
    import jax.numpy as jnp

    import emul
    from emul_jax import accumulate as A

    load_before = os.getloadavg()
    n, reps = args.n, args.repeats
    macs = n ** 3
    cases = [("e4m3fn", "e4m7", {})]
    if not args.quick:
        cases += [("int8", "int12", {}), ("int8", "int12", dict(overflow="wrap")),
                  ("e4m3fn", "e4m7", dict(order="chunked", chunk=64)),
                  ("e4m3fn", "e4m7", dict(rounding="stochastic", sr_bits=4)),
                  ("e4m3fn", "e4m7", dict(rounding="stochastic", sr_bits=8)),
                  ("e4m3fn", "fp16", {}), ("e4m3fn", "bf16", {}), ("e4m3fn", "e4m7", dict(order="pairwise"))]
    rows = []
    print(f"emul_jax.matmul vs emul.matmul, {n}x{n} @ {n}x{n} ({macs / 1e6:.1f} M MAC), best of {reps}, "
          f"{os.cpu_count()} cores, load {load_before[0]:.1f}")
    print(f"{'operands':8} {'acc':6} {'options':38} {'jax ms':>8} {'core ms':>8} {'ratio':>6} "
          f"{'jax cpu':>8} {'core cpu':>8} {'cpu ratio':>9} {'G MAC/s':>8}  path")
    for kind, acc, kw in cases:
        cfg = A._config(acc, None, "nearest_even", kw.get("rounding", "nearest_even"), kw.get("overflow"),
                        kw.get("order", "sequential"), kw.get("chunk"), None, kw.get("sr_bits"), "add")
        a, b = operands(n, kind)
        ja, jb = jnp.asarray(a), jnp.asarray(b)
        lane = lane_of(cfg, ja[None], jb[None])
        path = LANES[lane]
        sr = kw.get("rounding") == "stochastic"
        f = jax.jit(lambda x, y, key, acc=acc, kw=kw: A.matmul(x, y, acc, key=key if sr else None, **kw))
        key = jax.random.key(7)
        want = emul.matmul(a, b, acc, seed=7 if sr else None, **kw)
        got = np.asarray(f(ja, jb, key))
        assert np.array_equal(got.view(np.uint32), np.asarray(want, np.float32).view(np.uint32)), (acc, kw)
        t = best_times({"jax": lambda: f(ja, jb, key).block_until_ready(),
                        "core": lambda: emul.matmul(a, b, acc, seed=7 if sr else None, **kw)}, reps)
        (jw, jc), (cw, cc) = t["jax"], t["core"]
        u = None
        if sr:
            T = A.sr_steps(n, cfg.order, cfg.chunk)
            u = jax.random.bits(key, (1, n, n, T), jnp.uint32) >> (32 - cfg.acc.sr_bits)
        ops = loop_ops(cfg, ja, jb, u, lane)
        opts = ", ".join(f"{k}={v}" for k, v in kw.items()) or "sequential, nearest_even"
        print(f"{kind:8} {acc:6} {opts:38} {jw * 1e3:8.1f} {cw * 1e3:8.1f} {cw / jw:6.2f} {jc * 1e3:8.1f} "
              f"{cc * 1e3:8.1f} {cc / jc:9.2f} {macs / jw / 1e9:8.2f}  {path} ({ops} ops in the loop body)")
        rows.append({"operands": kind, "acc": acc, "options": {k: str(v) for k, v in kw.items()}, "path": path,
                     "lane": str(lane),
                     "jax_wall_s": jw, "core_wall_s": cw, "ratio_wall": cw / jw, "jax_cpu_s": jc, "core_cpu_s": cc,
                     "ratio_cpu": cc / jc, "jax_gmacs": macs / jw / 1e9, "core_gmacs": macs / cw / 1e9,
                     "loop_body_ops": ops})
    head = rows[0]
    print(f"\nheadline (target >= 0.5): emul_jax / core speed = {head['ratio_wall']:.2f} wall, "
          f"{head['ratio_cpu']:.2f} by CPU time")
    load_after = os.getloadavg()
    machine = {"cores": os.cpu_count(), "cpu": cpu_model(), "load_avg_before": load_before,
               "load_avg_after": load_after, "platform": platform.platform(), "python": platform.python_version(),
               "jax": jax.__version__, "numpy": np.__version__, "devices": [str(d) for d in jax.devices()]}
    out = {"n": n, "macs": macs, "repeats": reps, "machine": machine, "rows": rows,
           "headline_ratio_wall": head["ratio_wall"], "headline_ratio_cpu": head["ratio_cpu"],
           "ratios": [{"name": f"emul_jax / core matmul, {head['operands']} into {head['acc']} (wall)",
                       "ratio": head["ratio_wall"], "target": 0.5}]}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", "jax_accumulate.json")
    with open(path, "w") as fh:
        json.dump(out, fh, indent=1)
    print(f"wrote {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
