"""Training-step time of a small CNN with emulated arithmetic, relative to the float32 step.

One process, the same model, batch and optimizer for every recipe (``emul_jax.ops.recipe``): the
step (forward, backward, adam update) is compiled once, then timed as the best of ``--repeats``
rounds of ``--steps`` steps (each after one untimed step), rounds interleaved across recipes so a
change of machine load weighs on every row alike. ``--harness jax.jit`` (default) splits the NNX graph once and threads its state
through a plain ``jax.jit`` step, so the time is the computation's; ``--harness nnx.jit`` passes
the objects to ``nnx.jit``, whose per-call graph traversal (about 1 ms per step here) is added to
every row. Prints each recipe's step time and its ratio to ``fp32``
(targets: w8a8 <= 1.15x, w8a8g8 <= 1.5x, w8a8g8+mvue24 <= 1.6x; acc12 is reported) and writes
bench/results/train_step.json with the machine (cores, load average).

Peer row ``qwix-int8`` (optional: needs the ``qwix`` package, else the row is skipped with a
message): the same model, optimizer and step quantized by Qwix's quantized training
(``QtRule(weight_qtype=act_qtype=bwd_qtype="int8", bwd_stochastic_rounding="uniform")``: int8
forward GEMMs and int8 gradients with stochastic rounding, XLA arithmetic, not bit-exact
emulation). AQT (``aqtp``) installs too but quantizes the backward of ``dot_general`` only (its
``conv_general_dilated`` has no quantized backward), so it cannot run int8 forward+backward on
this CNN and has no row.

    python bench/train_step.py [--batch 64] [--steps 5] [--repeats 5] [--recipes fp32,w8a8,...,qwix-int8]
"""

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import emul_jax
from emul_jax import nn as enn

HERE = os.path.dirname(os.path.abspath(__file__))
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
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--recipes", default=",".join(RECIPES))
    p.add_argument("--harness", choices=("jax.jit", "nnx.jit"), default="jax.jit",
                   help="jax.jit: nnx.split once, the state through a plain jax.jit step (the computation); "
                        "nnx.jit: the model and optimizer objects through nnx.jit (adds Flax's per-call graph "
                        "traversal, about 1 ms here, more with the adapters' key streams)")
    args = p.parse_args(argv)
    recipes = args.recipes.split(",")
    load_before = os.getloadavg()
    runs, compile_s = {}, {}
    for r in list(recipes):
        runs[r], compile_s[r] = make_step(r, args.batch, args.harness)
        if runs[r] is None:
            print(f"{r}: skipped (the qwix package is not installed; pip install qwix to add this row)")
            recipes.remove(r)
    best = {r: float("inf") for r in recipes}
    for _ in range(args.repeats):
        for r in recipes:
            runs[r](1)  # untimed: wakes the thread pool and caches after the previous row
            t0 = time.perf_counter()
            runs[r](args.steps)
            best[r] = min(best[r], (time.perf_counter() - t0) / args.steps)
    base = best.get("fp32")
    rows = []
    print(f"{'recipe':<18} {'step ms':>9} {'x fp32':>8} {'target':>7} {'compile s':>10}")
    for r in recipes:
        ratio = best[r] / base if base else None
        target = TARGETS.get(r)
        rows.append({"recipe": r, "step_s": best[r], "ratio_to_fp32": ratio, "target": target,
                     "compile_s": compile_s[r], "peer": r in PEER_ROWS})
        print(f"{r:<18} {best[r] * 1e3:9.2f} {ratio:8.2f} {('<= %.2f' % target) if target else '':>7} "
              f"{compile_s[r]:10.1f}")
    machine = {"cores": os.cpu_count(), "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
               "platform": platform.platform(), "jax": jax.__version__, "backend": jax.default_backend()}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "train_step.json"), "w") as fh:
        json.dump({"batch": args.batch, "steps": args.steps, "repeats": args.repeats, "harness": args.harness,
                   "machine": machine,
                   "rows": rows}, fh, indent=2)
    print(f"machine: {machine['cores']} cores, load {load_before[0]:.1f} -> {machine['load_avg_after'][0]:.1f}")


if __name__ == "__main__":
    main()
