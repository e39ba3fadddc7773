"""Training-step time of a small CNN with emulated arithmetic, relative to the float32 step.

One process, the same model, batch and optimizer for every recipe (``emul_jax.ops.recipe``): the
step (forward, backward, adam update) is jitted with ``nnx.jit``, compiled once, then timed as the
best of ``--repeats`` rounds of ``--steps`` steps, rounds interleaved across recipes so a change of
machine load weighs on every row alike. Prints each recipe's step time and its ratio to ``fp32``
(targets: w8a8 <= 1.15x, w8a8g8 <= 1.5x, w8a8g8+mvue24 <= 1.6x; acc12 is reported) and writes
bench/results/train_step.json with the machine (cores, load average).

    python bench/train_step.py [--batch 64] [--steps 5] [--repeats 5] [--recipes fp32,w8a8,...]
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
RECIPES = ["fp32", "w8a8", "w8a8g8", "w8a8g8+mvue24", "w8a8g8+tnm24", "w8a8+acc12"]
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


def make_step(recipe, batch):
    model = SmallCNN(nnx.Rngs(0))
    if recipe != "fp32":
        enn.quantize_model(model, emul_jax.ops.recipe(recipe), rngs=nnx.Rngs(emul=1))
    opt = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, 16, 16, 1)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, batch))

    @nnx.jit
    def step(model, opt, x, y):
        def loss_fn(m):
            return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    def run(n):
        for _ in range(n):
            loss = step(model, opt, x, y)
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
    args = p.parse_args(argv)
    recipes = args.recipes.split(",")
    load_before = os.getloadavg()
    runs, compile_s = {}, {}
    for r in recipes:
        runs[r], compile_s[r] = make_step(r, args.batch)
    best = {r: float("inf") for r in recipes}
    for _ in range(args.repeats):
        for r in recipes:
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
                     "compile_s": compile_s[r]})
        print(f"{r:<18} {best[r] * 1e3:9.2f} {ratio:8.2f} {('<= %.2f' % target) if target else '':>7} "
              f"{compile_s[r]:10.1f}")
    machine = {"cores": os.cpu_count(), "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
               "platform": platform.platform(), "jax": jax.__version__, "backend": jax.default_backend()}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "train_step.json"), "w") as fh:
        json.dump({"batch": args.batch, "steps": args.steps, "repeats": args.repeats, "machine": machine,
                   "rows": rows}, fh, indent=2)
    print(f"machine: {machine['cores']} cores, load {load_before[0]:.1f} -> {machine['load_avg_after'][0]:.1f}")


if __name__ == "__main__":
    main()
