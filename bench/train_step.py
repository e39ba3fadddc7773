"""Training-step time of a small CNN with emulated arithmetic, relative to the float32 step.

One process, the same model, batch and optimizer for every recipe (``emul_jax.ops.recipe``): the
step (forward, backward, adam update) is compiled once, then timed in ``--repeats`` rounds of
``--steps`` steps (each after one untimed step, ``_common.median_time``), the rounds interleaved
across recipes so that a change of machine load weighs on every row alike. A recipe's slowdown is
the median over rounds of (its step time / the fp32 step time of the same round); the process CPU
time per step (less sensitive to other processes on a shared machine) is recorded alongside.
``--harness jax.jit`` (default) splits the NNX graph once and threads its state through a plain
``jax.jit`` step, so the time is the computation's; ``--harness nnx.jit`` passes the objects to
``nnx.jit``, whose per-call graph traversal (about 1 ms per step here) is added to every row.

Targets (issue 9): w8a8 <= 1.15x, w8a8g8 <= 1.5x, w8a8g8+mvue24 <= 1.6x the fp32 step; acc12 is
reported. bench/results/train_step.json holds, per recipe, the raw times and slowdowns, and in
``ratios`` (bench/summary.py) the speed relative to fp32, ``fp32 time / recipe time`` (higher is
better), with target ``1 / limit`` (1/1.15 = 0.87, 1/1.5 = 0.67, 1/1.6 = 0.625).

Peer row ``qwix-int8`` (optional: needs the ``qwix`` package, else the row is skipped with a
message): the same model, optimizer and step quantized by Qwix's quantized training
(``QtRule(weight_qtype=act_qtype=bwd_qtype="int8", bwd_stochastic_rounding="uniform")``: int8
forward GEMMs and int8 gradients with stochastic rounding, XLA arithmetic, not bit-exact
emulation). AQT (``aqtp``) installs too but quantizes the backward of ``dot_general`` only (its
``conv_general_dilated`` has no quantized backward), so it cannot run int8 forward+backward on
this CNN and has no row.

    python bench/train_step.py [--batch 64] [--steps 5] [--repeats 15] [--recipes fp32,w8a8,...,qwix-int8]
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import emul_jax
from emul_jax import nn as enn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, median_time, ratio, write  # noqa: E402

RECIPES = ["fp32", "w8a8", "w8a8g8", "w8a8g8+mvue24", "w8a8g8+tnm24", "w8a8+acc12", "qwix-int8"]
PEER_ROWS = ("qwix-int8",)
TARGETS = {"w8a8": 1.15, "w8a8g8": 1.5, "w8a8g8+mvue24": 1.6}


class SmallCNN(nnx.Module):
    """conv 3x3 (1->16) - relu - conv 3x3 stride 2 (16->32) - relu - dense (->10), on 16x16 images."""

    def __init__(self, rngs):
        self.c1 = nnx.Conv(1, 16, (3, 3), rngs=rngs)
        self.c2 = nnx.Conv(16, 32, (3, 3), strides=(2, 2), rngs=rngs)
        self.fc = nnx.Linear(8 * 8 * 32, 10, rngs=rngs)

    def __call__(self, x):
        x = jax.nn.relu(self.c1(x))
        x = jax.nn.relu(self.c2(x))
        return self.fc(x.reshape(x.shape[0], -1))


def qwix_model(model, x):
    """The model quantized by Qwix's quantized training (int8 weights, activations and gradients,
    gradients with stochastic rounding), or None when qwix is not installed."""
    try:
        import qwix
    except ImportError:
        return None
    rule = qwix.QtRule(module_path=".*", weight_qtype="int8", act_qtype="int8", bwd_qtype="int8",
                       bwd_stochastic_rounding="uniform")
    qm = qwix.quantize_model(model, qwix.QtProvider([rule]), x, rngs=nnx.Rngs(0))
    qm.set_attributes(qwix_rngs=nnx.Rngs(0, stochastic_rounding=1))  # SR keys, drawn per call
    return qm


def make_step(recipe, batch, harness="jax.jit"):
    model = SmallCNN(nnx.Rngs(0))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, 16, 16, 1)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, batch))
    if recipe == "qwix-int8":
        model = qwix_model(model, x)
        if model is None:
            return None, None
    elif recipe != "fp32":
        enn.quantize_model(model, emul_jax.ops.recipe(recipe), rngs=nnx.Rngs(emul=1))
    opt = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    def step(model, opt, x, y):
        def loss_fn(m):
            return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    if harness == "nnx.jit":
        step = nnx.jit(step)

        def run(n):
            for _ in range(n):
                loss = step(model, opt, x, y)
            loss.block_until_ready()
            return float(loss)
    else:  # the graph split once, the state threaded through a plain jax.jit (Flax's low-overhead form)
        graphdef, state = nnx.split((model, opt))

        @jax.jit
        def jstep(state, x, y):
            m, o = nnx.merge(graphdef, state)
            loss = step(m, o, x, y)
            return loss, nnx.state((m, o))

        box = [state]

        def run(n):
            for _ in range(n):
                loss, box[0] = jstep(box[0], x, y)
            loss.block_until_ready()
            return float(loss)

    t0 = time.perf_counter()
    run(1)  # compile
    return run, time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--recipes", default=",".join(RECIPES))
    p.add_argument("--harness", choices=("jax.jit", "nnx.jit"), default="jax.jit",
                   help="jax.jit: nnx.split once, the state through a plain jax.jit step (the computation); "
                        "nnx.jit: the model and optimizer objects through nnx.jit (adds Flax's per-call graph "
                        "traversal, about 1 ms here, more with the adapters' key streams)")
    args = p.parse_args(argv)
    recipes = args.recipes.split(",")
    if "fp32" not in recipes:
        recipes.insert(0, "fp32")
    load_before = os.getloadavg()
    runs, compile_s = {}, {}
    for r in list(recipes):
        runs[r], compile_s[r] = make_step(r, args.batch, args.harness)
        if runs[r] is None:
            print(f"{r}: skipped (the qwix package is not installed; pip install qwix to add this row)")
            recipes.remove(r)
    wall = {r: [] for r in recipes}
    cpu = {r: [] for r in recipes}
    for _ in range(args.repeats):
        for r in recipes:
            c0 = time.process_time()
            wall[r].append(median_time(lambda r=r: runs[r](args.steps), 1) / args.steps)  # after 1 untimed call
            cpu[r].append((time.process_time() - c0) / (args.steps + 1))  # (the untimed call included)
    base_w, base_c = np.array(wall["fp32"]), np.array(cpu["fp32"])
    rows, ratios = [], []
    print(f"{'recipe':<18} {'median ms':>9} {'min ms':>8} {'x fp32':>7} {'x fp32 (min)':>12} {'x fp32 (cpu)':>12} "
          f"{'limit':>7} {'compile s':>9}")
    for r in recipes:
        w, c = np.array(wall[r]), np.array(cpu[r])
        slow = float(np.median(w / base_w))  # per round: the same load on both
        slow_min = float(w.min() / base_w.min())
        slow_cpu = float(np.median(c) / np.median(base_c))
        limit = TARGETS.get(r)
        rows.append({"recipe": r, "step_s_median": float(np.median(w)), "step_s_min": float(w.min()),
                     "cpu_s_per_step_median": float(np.median(c)), "slowdown": slow, "slowdown_min": slow_min,
                     "slowdown_cpu": slow_cpu, "limit": limit, "met": None if limit is None else slow <= limit,
                     "compile_s": compile_s[r], "peer": r in PEER_ROWS, "step_s_rounds": [float(v) for v in w]})
        if r != "fp32":
            ratios.append(ratio(f"train step fp32/{r} (step speed vs fp32)", 1.0 / slow,
                                None if limit is None else 1.0 / limit))
        print(f"{r:<18} {np.median(w) * 1e3:9.2f} {w.min() * 1e3:8.2f} {slow:7.2f} {slow_min:12.2f} {slow_cpu:12.2f} "
              f"{('<= %.2f' % limit) if limit else '':>7} {compile_s[r]:9.1f}")
    record = {"batch": args.batch, "steps": args.steps, "repeats": args.repeats, "harness": args.harness,
              "jax": jax.__version__, "backend": jax.default_backend(),
              "slowdown_definition": "median over interleaved rounds of recipe step time / fp32 step time "
                                     "of the same round (lower is better); ratios[].ratio = 1 / slowdown",
              "machine": machine(load_before), "rows": rows, "ratios": ratios}
    write("train_step", record)
    m = record["machine"]
    print(f"machine: {m['cores']} cores, load {load_before[0]:.1f} -> {m['load_avg_after'][0]:.1f}")


if __name__ == "__main__":
    main()
