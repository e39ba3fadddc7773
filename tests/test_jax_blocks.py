"""emul_jax.blocks equals emul.blocks bit for bit (uint32 patterns compared, never float equality):
scale codes, element codes and decoded float32 values, over MX presets, generic block sizes, every
scale rule and overflow setting, axes, modes (SR with random_bits and key), NaN blocks, scale
under- and overflow. The long sweep is ``-m slow``."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import emul  # noqa: E402
import emul.blocks as B  # noqa: E402
import emul_jax.blocks as JB  # noqa: E402

NAMES = ["mxfp8_e4m3", "mxfp8_e5m2", "mxfp4", "mxfp6_e2m3", "mxfp6_e3m2", "mxint8", "e2m1fn/e8m0/axis",
         "e4m3fn/e8m0/7"]
MODES = [m.value for m in emul.Rounding]


def _bits(a):
    return np.asarray(a).astype(np.uint32) if np.asarray(a).dtype.kind in "iu" else np.asarray(a).view(np.uint32)


def _data(rng, shape):
    x = rng.standard_normal(shape) * 2.0 ** rng.integers(-150, 128, (shape[0], 1))
    x = (x * 2.0 ** rng.integers(-30, 1, shape)).astype(np.float32)
    x[rng.random(shape) < 0.05] = 0
    x[rng.random(shape) < 0.05] *= -0.0
    x[rng.random(shape) < 0.02] = np.nan
    return x


def _sweep(trials, seed):
    rng = np.random.default_rng(seed)
    for t in range(trials):
        x = _data(rng, (3, 40))
        name = NAMES[t % len(NAMES)]
        mode = MODES[(t * 7) % len(MODES)]
        kw = dict(rounding=mode, scale_rule=["floor", "ceil", "even", "rceil"][t % 4],
                  scale_overflow=["nan", "saturate"][(t // 4) % 2])
        if mode == "stochastic":
            kw["random_bits"] = rng.integers(0, 2 ** 32, x.shape, dtype=np.uint32)
        axis = [0, 1, -1][t % 3]
        s, c = B.encode(x, name, axis, **kw)
        js, jc = JB.encode(jnp.asarray(x), name, axis, **kw)
        assert np.array_equal(_bits(s), _bits(js)) and np.array_equal(_bits(c), _bits(jc)), (name, kw, axis)
        v = B.decode(s, c, name, axis)
        v32 = v.astype(np.float32)
        if np.array_equal(v32.astype(np.float64), v, equal_nan=True):  # the values are float32 values
            assert np.array_equal(v32.view(np.uint32), _bits(JB.decode(js, jc, name, axis)))


def test_jax_blocks_match_core():
    _sweep(8, 0)


@pytest.mark.slow
def test_jax_blocks_match_core_slow():
    _sweep(400, 1)


def test_jax_blocks_key_words_and_jit():
    x = _data(np.random.default_rng(2), (4, 64))
    s, c = B.encode(x, "mxfp4", 0, rounding="stochastic", seed=5)
    js, jc = JB.encode(jnp.asarray(x), "mxfp4", 0, rounding="stochastic", key=jax.random.key(5))
    assert np.array_equal(_bits(c), _bits(jc)) and np.array_equal(_bits(s), _bits(js))
    f = jax.jit(lambda v: JB.quantize(v, "mxfp8_e4m3"))
    assert np.array_equal(_bits(f(jnp.asarray(x))), B.quantize(x, "mxfp8_e4m3").view(np.uint32))


def test_jax_blocks_refuses_what_it_does_not_mirror():
    with pytest.raises(ValueError, match="e8m0"):
        JB.encode(jnp.ones(16), "nvfp4")
    with pytest.raises(ValueError, match="axis=2"):
        JB.encode(jnp.ones((2, 32)), "mxfp4", axis=2)
    with pytest.raises(ValueError, match="scale_rule"):
        JB.encode(jnp.ones(32), "mxfp4", scale_rule="nearest")
    with pytest.raises(ValueError, match="float32"):  # 448 * 2**127 is no float32
        JB.decode(jnp.array([254], jnp.uint8), jnp.array([0x7E], jnp.uint8), "e4m3fn/e8m0/1")


def test_jax_blocks_empty():
    for shape, axis in (((3, 0), -1), ((0, 4), -1), ((0, 4), 0)):
        s, c = B.encode(np.zeros(shape, np.float32), "mxfp4", axis)
        js, jc = JB.encode(jnp.zeros(shape), "mxfp4", axis)
        assert js.shape == s.shape and jc.shape == c.shape and jc.dtype == c.dtype
