"""emul_jax.ptq: the §E.1 quantizer, BN folding, AdaQuant, BN/bias tuning, the §E.3 integer program,
data-free calibration (§F) and ``emul ptq``'s errors (PAPERS.md §E, §F)."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import emul
from emul_jax import ptq
from emul_jax.train import load_dataset, make_model, save_model


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _randomize_bn(net, seed):
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    rng = np.random.default_rng(seed)
    for _, m in nnx.iter_modules(net):
        if isinstance(m, nnx.BatchNorm):
            c = m.mean[...].shape[0]
            m.mean[...] = jnp.asarray(rng.normal(0, 0.1, c), jnp.float32)
            m.var[...] = jnp.asarray(rng.uniform(0.02, 0.3, c), jnp.float32)
            m.scale[...] = jnp.asarray(rng.uniform(0.5, 1.5, c) * rng.choice([-1, 1], c), jnp.float32)
            m.bias[...] = jnp.asarray(rng.normal(0, 0.2, c), jnp.float32)
    return net


@pytest.fixture(scope="module")
def cnn():
    return ptq.fold_bn(_randomize_bn(make_model("cnn", (8, 8, 1), 10, seed=0), 1), "cnn")


# ------------------------------------------------------------------------------ the quantizer

def test_anchor():
    """PAPERS.md §E.1: 4 bit, R = 2, Z = −1 -> zp = round(7.5) = 8, Z' = −16/15."""
    x = jnp.array([-1.0, -0.3, 0.0, 0.2, 1.0], jnp.float32)
    got = np.asarray(ptq.fake_quant(x, 2.0, -1.0, "uint4"))
    np.testing.assert_allclose(got, [-1.066667, -0.266667, 0.0, 0.266667, 0.933333], atol=5e-7)
    s = np.float32(2) / np.float32(15)
    np.testing.assert_array_equal(got, (np.array([0, 6, 8, 10, 15], np.float32) - 8) * s)


def _reference(x, r, z, fmt):
    """The quantizer in NumPy float32 (correctly rounded ops) with emul.quantize on the grid."""
    f = emul.format(fmt)
    x, r, z = np.float32(x), np.clip(np.float32(r), 1e-6, 1e5).astype(np.float32), np.float32(z)
    if isinstance(f, emul.FloatFormat):
        m = np.float32(f.max)
        a = (r * np.float32(0.5)).astype(np.float32)
        y = np.clip((x * m).astype(np.float32) / a, -m, m).astype(np.float32)
        return (emul.quantize(y, f) * (a / m).astype(np.float32)).astype(np.float32)
    qmin, qmax = np.float32(f.min), np.float32(f.max)
    n = np.float32(qmax - qmin)
    zp = np.clip(np.round((qmin - (z * n).astype(np.float32) / r).astype(np.float32)), qmin, qmax)
    y = np.clip(((x * n).astype(np.float32) / r).astype(np.float32) + zp, qmin, qmax).astype(np.float32)
    return ((emul.quantize(y, f) - zp).astype(np.float32) * (r / n).astype(np.float32)).astype(np.float32)


@pytest.mark.parametrize("fmt", ["uint4", "int4", "uint8", "uint3", "e2m1fn", "e4m3fn"])
def test_bit_exact_against_numpy(fmt):
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (64, 6)).astype(np.float32)
    x[0, :] = [0.5, -0.5, 1.5, 0, -0.0, 7.0]  # ties and clipping
    r = rng.uniform(0.3, 4, 6).astype(np.float32)
    z = (-rng.uniform(0, 1, 6) * r).astype(np.float32)
    got = np.asarray(jax.jit(ptq.fake_quant, static_argnums=3)(x, r, z, fmt))
    want = _reference(x, r, z, fmt)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_ste_gradients():
    g = jax.grad(lambda x: ptq.fake_quant(x, 2.0, -1.0, "uint4").sum())(jnp.array([-3.0, -0.3, 0.2, 3.0]))
    np.testing.assert_array_equal(np.asarray(g), [0, 1, 1, 0])  # straight through inside, 0 where clamped
    gr = jax.grad(lambda r: ptq.fake_quant(jnp.array([3.0]), r, -1.0, "uint4").sum())(2.0)
    assert float(gr) > 0  # a clipped value pulls the range up


@pytest.mark.parametrize("bad", ["fx<8,3>", "nonsense", "e8m23x"])
def test_unknown_formats(bad):
    with pytest.raises(ValueError, match="format"):
        ptq.quantizer_format(bad)


# ------------------------------------------------------------------------------ block (MX) formats

def _block_reference(x, fmt, axis):
    """emul.blocks.quantize (the NumPy core) along ``axis``, as float32."""
    import emul.blocks

    return np.moveaxis(emul.blocks.quantize(np.moveaxis(x, axis, -1), fmt), -1, axis).astype(np.float32)


@pytest.mark.parametrize("fmt", ["mxfp4", "mxfp8_e4m3", "e2m1fn/e8m0/16"])
def test_block_quant_bit_exact(fmt):
    """The PTQ block quantizer (jitted) equals emul.blocks.quantize bit for bit along the reduction axis,
    incl. an all-zero block, a short last block (40 = 32 + 8 channels), ±0, huge and tiny values."""
    rng = np.random.default_rng(5)
    w = (rng.normal(size=(3, 3, 40, 4)) * np.exp(rng.uniform(-6, 6, (1, 1, 40, 1)))).astype(np.float32)
    w[0, 0, :32, 0] = 0.0
    w[0, 1, :4, 1] = [-0.0, 3e38, 1e-39, -2.5]
    got = np.asarray(jax.jit(ptq.block_quant, static_argnums=(1, 2))(w, fmt, 2))
    np.testing.assert_array_equal(got.view(np.uint32), _block_reference(w, fmt, 2).view(np.uint32))
    if fmt == "mxfp4":
        g = jax.grad(lambda v: ptq.block_quant(v, fmt, 2).sum())(jnp.asarray(w))
        np.testing.assert_array_equal(np.asarray(g), np.ones_like(w))  # straight through


def test_block_format_layers_match_emul_jax_ops(cnn, digits):
    """A quantized conv / dense layer with block formats is emul_jax.ops' GEMM with those Operands
    (blocks along the reduction axis), bit for bit."""
    from emul_jax import ops

    rng = np.random.default_rng(6)
    fmts = (ptq.quantizer_format("mxfp4"), ptq.quantizer_format("mxfp8_e4m3"))
    cfg = ops.DotConfig(fwd=ops.GemmSpec(lhs=ops.Operand(format="mxfp8_e4m3"), rhs=ops.Operand(format="mxfp4")))
    infos = {i.name: i for i in cnn.layers}
    for name, h in (("c2", rng.normal(size=(2, 4, 4, 16))), ("head", rng.normal(size=(3, 1024)))):
        info, h = infos[name], jnp.asarray(h, jnp.float32)
        p = ptq._jparams(dict(cnn.params[name], wr=1.0, wz=0.0, ar=1.0, az=0.0))
        y = jax.jit(ptq._layer, static_argnums=(0, 3))(info, p, h, fmts)
        if info.kind == "conv":
            want = ops.conv_general_dilated(h, p["w"], info.strides, "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            cfg=cfg)
        else:
            want = ops.dot_general(h, p["w"], (((1,), (0,)), ((), ())), cfg)
        want = np.asarray(want + p["b"])
        np.testing.assert_array_equal(np.asarray(y).view(np.uint32), want.view(np.uint32))


def test_block_formats_in_the_pipeline(digits):
    assert ptq.storage_bits("mxfp4") == 4.25 and ptq.storage_bits("mxfp8_e4m3") == 8.25
    assert ptq.storage_bits("uint4") == 4
    mlp = ptq.fold_bn(_randomize_bn(make_model("mlp", (8, 8, 1), 10, seed=0), 3), "mlp")
    x = digits.x_train[:40]
    p = ptq.init_params(mlp, x, "mxfp4", "uint8")
    q, rep = ptq.adaquant(mlp, p, x, "mxfp4", "uint8", iters=30, batch=20)
    assert all(r["mse_after"] < r["mse_before"] for r in rep), rep
    np.testing.assert_array_equal(q["fc1"]["wr"], p["fc1"]["wr"])  # nothing to learn in a block format's range
    for bad in ("nvfp4", "e2m1fn/e8m0/axis", "mxfp5"):
        with pytest.raises(ValueError, match="format"):
            ptq.quantizer_format(bad)


def test_per_tensor_weight_ranges(cnn, digits):
    """weights="tensor": one (R, Z) per weight tensor over its min/max; BN tuning keeps it one range,
    scaled by the largest channel factor."""
    x = digits.x_train[:40]
    p = ptq.init_params(cnn, x, "uint4", "uint4", weights="tensor")
    w = cnn.params["c2"]["w"]
    assert p["c2"]["wr"].shape == () and p["c2"]["wr"] == np.float32(max(w.max(), 0) - min(w.min(), 0))
    pc = ptq.init_params(cnn, x, "uint4", "uint4")
    np.testing.assert_array_equal(pc["c2"]["ar"], p["c2"]["ar"])
    assert pc["c2"]["wr"].max() == p["c2"]["wr"]  # the widest channel's range
    t = ptq.bn_tune(cnn, p, x, ptq._uniform(cnn, "uint4", "uint4"))
    assert t["c2"]["wr"].shape == () and t["c2"]["wz"].shape == ()
    with pytest.raises(ValueError, match="weights"):
        ptq.init_params(cnn, x, "uint4", "uint4", weights="row")


# ------------------------------------------------------------------------------ folding

@pytest.mark.parametrize("model", ["mlp", "cnn", "resnet"])
def test_bn_folding_keeps_fp32_outputs(model, digits):
    net = _randomize_bn(make_model(model, (8, 8, 1), 10, seed=0), 2)
    f = ptq.fold_bn(net, model)
    net.eval()
    x = digits.x_test[:32]
    want = np.asarray(net(jnp.asarray(x)))
    got = np.asarray(ptq.forward(f, x))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert set(f.bn) == {i.name for i in f.layers if i.bn}


# ------------------------------------------------------------------------------ AdaQuant, BN and bias tuning

def test_naive_and_adaquant_reduce_layer_error(cnn, digits):
    x = digits.x_train[:40]
    p = ptq.init_params(cnn, x, "uint4", "uint4")
    assert p["c1"]["wr"].shape == (16,) and p["c1"]["ar"].shape == ()
    for mode in ("parallel", "sequential"):
        q, rep = ptq.adaquant(cnn, p, x, "uint4", "uint4", iters=40, batch=20, mode=mode)
        assert [r["layer"] for r in rep] == ["c1", "c2", "c3", "head"]
        assert all(r["mse_after"] < r["mse_before"] for r in rep), rep
    with pytest.raises(ValueError, match="mode"):
        ptq.adaquant(cnn, p, x, "uint4", "uint4", mode="greedy")


def test_bn_tuning_restores_channel_statistics(cnn, digits):
    x = digits.x_train[:64]
    pol = ptq._uniform(cnn, "uint3", "uint3")
    p = ptq.bn_tune(cnn, ptq.init_params(cnn, x, "uint3", "uint3"), x, pol)
    _, rec = ptq.trace(cnn, x, p, pol)
    for name, bn in cnn.bn.items():
        y = np.asarray(rec[name][1], np.float64).reshape(-1, bn["beta"].shape[0])
        g2 = bn["gamma"].astype(np.float64) ** 2
        np.testing.assert_allclose(y.mean(0), bn["beta"], atol=0.02 * np.sqrt(g2).max())
        # std = sqrt(γ² + eps)·σ_q/sqrt(σ_q² + eps): ≈ |γ| when σ_q² >> eps
        np.testing.assert_allclose(y.std(0), np.sqrt(g2 + bn["eps"]) * np.sqrt(1 - bn["eps"] / (y.var(0) + bn["eps"])),
                                   rtol=0.03)


def test_bn_tuning_momentum(cnn, digits):
    """momentum m, P passes: the running statistics move f = 1 − (1 − m)^P of the way from (β, γ²) to the
    batch's; f -> 0 leaves the layer as it was, f = 1 is the default (momentum 1)."""
    x = digits.x_train[:32]
    pol = ptq._uniform(cnn, "uint4", "uint4")
    p = ptq.init_params(cnn, x, "uint4", "uint4")
    one = ptq.bn_tune(cnn, p, x, pol)
    same = ptq.bn_tune(cnn, p, x, pol, momentum=0.5, passes=80)  # (1/2)^80: f == 1.0 in float64
    for n in cnn.names:
        for k in ("w", "b", "wr"):
            np.testing.assert_array_equal(same[n][k], one[n][k])
    tiny = ptq.bn_tune(cnn, p, x, pol, momentum=1e-12)
    np.testing.assert_allclose(tiny["c2"]["w"], p["c2"]["w"], rtol=1e-6)
    np.testing.assert_allclose(tiny["c2"]["b"], p["c2"]["b"], rtol=1e-5, atol=1e-6)
    # the first layer (its input is the image, the same in every case): mean = β + (1 − f)(μ_q − β)·k
    part = ptq.bn_tune(cnn, p, x, pol, momentum=0.5, passes=2)  # f = 0.75
    bn = cnn.bn["c1"]
    _, rec = ptq.trace(cnn, x, p, pol)
    y = np.asarray(rec["c1"][1], np.float64).reshape(-1, 16)
    mu, var = y.mean(0), y.var(0)
    g2 = bn["gamma"].astype(np.float64) ** 2
    k = np.sqrt(g2 + bn["eps"]) / np.sqrt(g2 + 0.75 * (var - g2) + bn["eps"])
    _, rec = ptq.trace(cnn, x, part, pol)
    got = np.asarray(rec["c1"][1], np.float64).reshape(-1, 16).mean(0)
    np.testing.assert_allclose(got, bn["beta"] + 0.25 * (mu - bn["beta"]) * k, atol=0.02 * np.sqrt(g2).max())
    for bad in ({"momentum": 0}, {"momentum": 1.5}, {"passes": 0}):
        with pytest.raises(ValueError, match="momentum|passes"):
            ptq.bn_tune(cnn, p, x, pol, **bad)


def test_bias_tuning_lowers_its_loss(cnn, digits):
    x = digits.x_train[:40]
    pol = ptq._uniform(cnn, "uint3", "uint3")
    p = ptq.init_params(cnn, x, "uint3", "uint3")
    q, losses = ptq.bias_tune(cnn, p, x, pol, steps=30, batch=20, lr=1.0)
    assert losses[-5:].mean() < losses[:5].mean()
    np.testing.assert_array_equal(q["head"]["b"], p["head"]["b"])  # the classifier's bias is not tuned
    assert not np.array_equal(q["c1"]["b"], p["c1"]["b"])


def test_no_bn_is_a_clear_error(cnn, digits):
    nobn = dataclasses.replace(cnn, bn={})
    x = digits.x_train[:8]
    for call in (lambda: ptq.bn_tune(nobn, ptq.init_params(nobn, x, "uint4", "uint4"), x, None),
                 lambda: ptq.synthesize(nobn, 4, (8, 8, 1), steps=1)):
        with pytest.raises(ValueError, match="no BatchNorm"):
            call()


# ------------------------------------------------------------------------------ integer program

def test_ip_equals_brute_force():
    rng = np.random.default_rng(0)
    bits = [8, 4, 2]
    for trial in range(12):
        sizes = rng.integers(10, 500, 5).astype(float)
        dl = np.concatenate([np.zeros((5, 1)), rng.uniform(1e-3, 1, (5, 2))], 1)
        dl[:, 2] += dl[:, 1]
        for D in (0.07, 0.1, 0.13, 0.18, 0.25):
            best, _ = ptq._brute_force(dl, sizes, bits, D)
            if not np.isfinite(best):
                with pytest.raises(ValueError, match="infeasible"):
                    ptq.solve_bit_allocation(dl, sizes, bits, D)
                continue
            ch = ptq.solve_bit_allocation(dl, sizes, bits, D)
            assert np.isclose(dl[np.arange(5), ch].sum(), best)
            assert (sizes * np.array(bits)[ch]).sum() <= D * 32 * sizes.sum() + 1e-9


def test_ip_infeasible_size():
    with pytest.raises(ValueError, match=r"D=0.1: infeasible.*D >= 0.125"):
        ptq.solve_bit_allocation(np.zeros((3, 2)), [1, 2, 3], [8, 4], 0.1)
    with pytest.raises(ValueError, match="positive"):
        ptq.solve_bit_allocation(np.zeros((3, 2)), [1, 2, 3], [8, 4], -1)


def test_ip_with_three_precisions_and_sigma(digits):
    """run(): the program over three precisions (two high pairs + the low one), ΔL noise per D (§E.3
    --sigma) recorded, each choice optimal for its noisy ΔL (brute force) and within its size bound."""
    mlp = ptq.fold_bn(_randomize_bn(make_model("mlp", (8, 8, 1), 10, seed=0), 4), "mlp")
    cx, cy = digits.x_train[:30], digits.y_train[:30]
    rec = ptq.run(mlp, cx, cy, digits.x_test[:60], digits.y_test[:60], wfmt="uint2", afmt="uint4",
                  high=[("uint8", "uint8"), ("uint4", "uint4")], pipeline="light", sizes=(0.07, 0.13), sigma=0.5,
                  bn_tuning=False, bias_tuning=False, seed=3)
    meta = rec["ip_inputs"]
    assert meta["formats"] == [["uint8", "uint8"], ["uint4", "uint4"], ["uint2", "uint4"]] and meta["bits"] == [8, 4, 2]
    dl, xi = np.array(meta["delta_loss"]), np.random.default_rng(3)
    for row in rec["ip"]:
        assert row["size"] <= row["D"] and len(row["formats"]) == 2
        used = np.array(row["delta_loss_used"])
        want = dl * (1 + 0.5 * xi.standard_normal(dl.shape))
        want[:, 0] = 0
        np.testing.assert_array_equal(used, want)  # ΔL·(1 + σ·ξ), ξ drawn afresh per D
        best, _ = ptq._brute_force(used, meta["weights"], meta["bits"], row["D"])
        got = [meta["bits"].index(int(f[4:])) for f in row["formats"]]
        assert np.isclose(used[np.arange(2), got].sum(), best)


# ------------------------------------------------------------------------------ data-free calibration

def test_synthetic_statistics_approach_running_ones(cnn, digits):
    real = ptq.bn_input_stats(cnn, digits.x_train[:200])
    bn = {n: dict(cnn.bn[n], mean=np.asarray(m), var=np.asarray(v)) for n, (m, v) in real.items()}
    f = dataclasses.replace(cnn, bn=bn)  # running statistics = those of real images

    def distance(x):  # scale-free: |μ − μ̂|/σ̂ + |σ²/σ̂² − 1|, averaged over channels and layers
        st = ptq.bn_input_stats(f, x)
        return np.mean([(np.abs(np.asarray(m) - bn[n]["mean"]) / np.sqrt(bn[n]["var"])
                         + np.abs(np.asarray(v) / bn[n]["var"] - 1)).mean() for n, (m, v) in st.items()])

    x0, _ = ptq.synthesize(f, 32, (8, 8, 1), steps=1, lr=0.0)
    x, losses = ptq.synthesize(f, 32, (8, 8, 1), loss="sym", steps=60, lr=0.1, chunk=30)
    assert np.all(np.diff(losses[::10]) < 0)  # falling
    assert losses[-1] < 0.4 * losses[0]
    assert distance(x) < 0.5 * distance(x0)
    with pytest.raises(ValueError, match="loss"):
        ptq.stats_loss({}, {}, "js")


def test_stats_losses_vanish_at_the_target():
    bns = {"a": {"mean": jnp.array([0.5, -1.0]), "var": jnp.array([2.0, 0.3])}}
    stats = {"a": (bns["a"]["mean"], bns["a"]["var"])}
    for kind in ptq.STATS_LOSSES:
        assert abs(float(ptq.stats_loss(stats, bns, kind))) < 1e-6
    # KL(N(0,1) || N(1,2)) = ½(−1 + ln 2 + 2/2)
    got = ptq.stats_loss({"a": (jnp.zeros(1), jnp.ones(1))}, {"a": {"mean": jnp.ones(1), "var": 2 * jnp.ones(1)}},
                         "kl")
    assert np.isclose(float(got), 0.5 * np.log(2))


# ------------------------------------------------------------------------------ the command line

def test_cli_errors(tmp_path, digits, capsys):
    from emul.cli import main

    net = make_model("cnn", (8, 8, 1), 10, seed=0)
    path = save_model(net, tmp_path / "m.npz", model="cnn", dataset=digits, recipe="fp32")
    for argv, msg in ((["--bits", "4", "--size", "0.05"], "infeasible"),
                      (["--w-format", "fx<8,3>"], "format"),
                      (["--calib", "many"], "calib"),
                      (["--w-format", "mxfp4", "--size", "0.13"], "4.25 bits"),
                      (["--w-format", "nvfp4"], "e8m0"),
                      (["--w-ranges", "row"], "w-ranges"),
                      (["--high-bits", "8,x"], "high-bits"),
                      (["--high-format", "uint8,uint4", "--size", "0.2"], "more bits"),
                      (["--bn-momentum", "0"], "bn-momentum"),
                      (["--sigma", "-1"], "sigma"),
                      (["--pipeline", "heavy"], "pipeline")):
        assert main(["ptq", str(path), *argv, "--out", str(tmp_path)]) == 2
        assert msg in capsys.readouterr().err
    assert main(["ptq", str(tmp_path / "missing.npz")]) == 2


@pytest.mark.slow
def test_digits_pipeline(digits):
    """The recorded protocol in small: a trained digits CNN, 1 image per class, W3A3, the advanced
    pipeline with two sizes D. Asserted: what each step optimises (AdaQuant lowers every layer's MSE on
    its held-out subset; the bit allocation respects D) and a JSON-ready record. Test accuracy is
    not asserted: on digits' 360 test images W4A4 and W3A3 move it by a few images either way
    (docs/ptq.md records the runs)."""
    from emul_jax.train import train_run

    _, net = train_run(digits, "fp32", model="cnn", epochs=5, progress=False)
    f = ptq.fold_bn(net, "cnn")
    cx, cy = ptq.calibration_set(digits.x_train, digits.y_train, 1)
    rec = ptq.run(f, cx, cy, digits.x_test, digits.y_test, wfmt="uint3", afmt="uint3", pipeline="advanced",
                  sizes=(0.1, 0.15), bias_steps=100)
    assert all(a["mse_after"] < a["mse_before"] for a in rec["adaquant"])
    assert [r["D"] for r in rec["ip"]] == [0.1, 0.15]
    assert all(r["size"] <= r["D"] for r in rec["ip"])
    assert rec["steps"][0]["accuracy"] > 0.9
    json.dumps(rec)
