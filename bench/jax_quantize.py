"""Speed of emul_jax.quantize (jitted, CPU) against XLA's own casts and jax.random.bits: one run.

Same inputs for every row (16 M float32, randn * 10); best of ``--repeats`` timings after a warm-up
call, each ended by ``block_until_ready``, taken in interleaved rounds (every function once per
round) so that the load of a shared machine weighs on all rows alike. Prints throughputs and the ratios the issue sets targets
for, plus the NumPy core on the same input for reference; writes bench/results/jax_quantize.json with the
machine (cores, load average before and after) so a number can be read against the load it ran
under.

Float32 outputs of 16 M elements are bound by writing a fresh 64 MB buffer (XLA allocates the
output on every call): the row "floor: one bitwise and" measures that bound on the machine, and
``encode`` (uint8 out) shows how fast the rounding itself runs.

    .venv/bin/python bench/jax.py [--n 16777216] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def best_times(fns, repeats):
    """Best of ``repeats`` timings of each function (after one warm-up call each), measured in
    interleaved rounds — every function once per round — so that a change of load during the run
    affects all of them alike. Each function must block until its result is ready."""
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def lane_ops(jitted, args):
    """Operations in the compiled fusion(s) of a jitted function (constants, broadcasts and
    parameters not counted): how much work XLA does per element."""
    import re

    text = jitted.lower(*args).compile().as_text()  # args: the tuple the function is called with
    n = 0
    for line in text.split("ENTRY")[0].splitlines():
        m = re.search(r"= \S+ (\S+)\(", line)
        if m and m.group(1) not in ("parameter", "constant", "broadcast", "bitcast-convert", "fusion"):
            n += 1
    return n


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1 << 24)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)

    import jax
    import jax.numpy as jnp
    from jax import lax

    import emul
    import emul_jax

    load_before = os.getloadavg()
    n, reps = args.n, args.repeats
    x_np = (np.random.default_rng(0).standard_normal(n) * 10).astype(np.float32)
    u8_np = np.random.default_rng(1).integers(0, 256, n, dtype=np.uint8)
    x, u8 = jnp.asarray(x_np), jnp.asarray(u8_np)
    key = jax.random.key(1)

    fns = {
        "astype round trip": (jax.jit(lambda v: v.astype(jnp.float8_e4m3fn).astype(jnp.float32)), (x,)),
        "astype to float8 (one way)": (jax.jit(lambda v: v.astype(jnp.float8_e4m3fn)), (x,)),
        "floor: one bitwise and, float32 out": (jax.jit(
            lambda v: lax.bitcast_convert_type(lax.bitcast_convert_type(v, jnp.uint32) & np.uint32(0xFFFFFF00),
                                               jnp.float32)), (x,)),
        "quantize e4m3fn RNE": (jax.jit(lambda v: emul_jax.quantize(v, "e4m3fn")), (x,)),
        "encode e4m3fn RNE": (jax.jit(lambda v: emul_jax.encode(v, "e4m3fn")), (x,)),
        "quantize bf16 RNE": (jax.jit(lambda v: emul_jax.quantize(v, "bf16")), (x,)),
        "quantize e4m3fn toward_zero": (jax.jit(lambda v: emul_jax.quantize(v, "e4m3fn", "toward_zero")), (x,)),
        "quantize fx<8,4> RNE saturate": (jax.jit(lambda v: emul_jax.quantize(v, "fx<8,4>")), (x,)),
        "quantize e4m3fn SR 8 bits, random_bits (uint8)": (jax.jit(
            lambda v, w: emul_jax.quantize(v, "e4m3fn", "stochastic", random_bits=w, sr_bits=8)), (x, u8)),
        "quantize e4m3fn SR 8 bits, key": (jax.jit(
            lambda v, k: emul_jax.quantize(v, "e4m3fn", "stochastic", key=k, sr_bits=8)), (x, key)),
        "jax.random.bits alone": (jax.jit(lambda k: jax.random.bits(k, (n,), jnp.uint32)), (key,)),
    }
    timed = {name: (lambda f=f, a=a: jax.block_until_ready(f(*a))) for name, (f, a) in fns.items()}
    timed["emul.quantize e4m3fn RNE"] = lambda: emul.quantize(x_np, "e4m3fn")
    timed["emul.quantize e4m3fn SR 8 bits, seed"] = lambda: emul.quantize(x_np, "e4m3fn", "stochastic", seed=1,
                                                                          sr_bits=8)
    rows = {}
    for name, t in best_times(timed, reps).items():
        ops = lane_ops(*fns[name]) if name.startswith(("quantize", "encode", "astype")) else None
        rows[name] = {"seconds": t, "M_per_s": n / t / 1e6, "lane_ops": ops}

    def ratio(a, b):
        return rows[b]["seconds"] / rows[a]["seconds"]

    targets = [
        ("quantize e4m3fn RNE", "astype round trip", 1.0),
        ("quantize e4m3fn RNE", "floor: one bitwise and, float32 out", None),
        ("quantize e4m3fn SR 8 bits, random_bits (uint8)", "astype round trip", 0.5),
        ("quantize e4m3fn SR 8 bits, key", "jax.random.bits alone", 0.8),
        ("encode e4m3fn RNE", "astype to float8 (one way)", None),
        ("quantize e4m3fn RNE", "emul.quantize e4m3fn RNE", None),
        ("quantize e4m3fn SR 8 bits, key", "emul.quantize e4m3fn SR 8 bits, seed", None),
    ]
    load_after = os.getloadavg()
    machine = {"cores": os.cpu_count(), "load_avg_before": load_before, "load_avg_after": load_after,
               "platform": platform.platform(), "python": platform.python_version(), "jax": jax.__version__,
               "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()]}

    print(f"emul_jax benchmark — {n:,} float32 (randn*10), jitted on {jax.default_backend()}, best of {reps}; "
          f"{machine['cores']} cores, load average {load_before[0]:.1f} -> {load_after[0]:.1f}\n")
    print(f"{'work':<50}{'M elem/s':>10}{'lane ops':>10}")
    for name, r in rows.items():
        ops = "" if r["lane_ops"] is None else str(r["lane_ops"])
        print(f"{name:<50}{r['M_per_s']:>10.0f}{ops:>10}")
    print(f"\n{'ratio (speed of the first over the second)':<90}{'ratio':>7}{'target':>8}")
    out_ratios = []
    for a, b, target in targets:
        rr = ratio(a, b)
        mark = "" if target is None else f">= {target}" + (" ok" if rr >= target else " MISSED")
        print(f"{a + '  vs  ' + b:<90}{rr:>6.2f}x  {mark}")
        out_ratios.append({"work": a, "against": b, "ratio": rr, "target": target})

    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", "jax_quantize.json")
    with open(path, "w") as fh:
        json.dump({"n": n, "repeats": reps, "machine": machine, "rows": rows, "ratios": out_ratios}, fh, indent=2)
    print(f"wrote {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
