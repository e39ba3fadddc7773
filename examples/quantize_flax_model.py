"""Quantize your own Flax NNX model with one emul config, then train it as usual.

Your model stays as it is: ``emul_jax.nn.quantize_model`` swaps an emulated ``dot_general`` /
``conv_general_dilated`` into every ``nnx.Linear`` and ``nnx.Conv`` (the weights are kept), and the
training step is the ordinary NNX + optax one. Here: 8-bit weights, activations and stochastically
rounded gradients (``w8a8g8``, paper [C]) with MVUE 2:4 weight gradients (paper [A]), on the digits.

    python examples/quantize_flax_model.py [--recipe w8a8g8+mvue24] [--steps 200]
"""

import argparse

import jax
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits

from emul_jax import nn as enn, ops


class MyModel(nnx.Module):  # any NNX model: nothing here knows about emul
    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 16, (3, 3), rngs=rngs)
        self.norm = nnx.BatchNorm(16, rngs=rngs)
        self.out = nnx.Linear(16 * 8 * 8, 10, rngs=rngs)

    def __call__(self, x):
        x = jax.nn.relu(self.norm(self.conv(x)))
        return self.out(x.reshape(x.shape[0], -1))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="w8a8g8+mvue24", help="an emul_jax.ops.recipe name")
    p.add_argument("--steps", type=int, default=200)
    args = p.parse_args(argv)

    digits = load_digits()
    x = (digits.images[..., None] / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    x_train, y_train, x_test, y_test = x[:1500], y[:1500], x[1500:], y[1500:]

    model = MyModel(nnx.Rngs(0))
    enn.quantize_model(model, ops.recipe(args.recipe), rngs=nnx.Rngs(emul=0))  # the one line
    opt = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, x, y):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    rng = np.random.default_rng(0)
    for i in range(args.steps):
        idx = rng.choice(len(y_train), 64, replace=False)
        loss = step(model, opt, x_train[idx], y_train[idx])
    model.eval()
    accuracy = float((nnx.jit(lambda m, x: m(x))(model, x_test).argmax(-1) == y_test).mean())
    print(f"{args.recipe}: loss {float(loss):.3f} after {args.steps} steps, test accuracy {accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    main()
