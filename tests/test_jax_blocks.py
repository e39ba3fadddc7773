"""emul_jax.blocks equals emul.blocks bit for bit (uint32 patterns compared, never float equality):
scale codes, element codes and decoded float32 values, over MX presets, generic block sizes, every
scale rule and overflow setting, axes, modes (SR with random_bits and key), NaN blocks, scale
under- and overflow; NVFP4 and other float scales (exact arithmetic, eager and jit, tensor scale
computed or given, scale_min). The long sweeps are ``-m slow``."""

from __future__ import annotations

import itertools

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


FLOAT_NAMES = ["nvfp4", "e2m1fn/e4m3fn/16", "e4m3fn/e5m2/8/tensor", "fx<8,6>/e4m3fn/16", "e2m3fn/e4m3fn/5/tensor",
               "e2m1fn/e4m3fn/axis/tensor"]


def _float_sweep(trials, seed, jit_every=3):
    """NVFP4 and other float scales: codes equal the core's (exact arithmetic), eager and under jit,
    with tensor scales computed or given, scale_min, every mode (SR by random_bits), NaN blocks,
    tiny blocks whose scale is 0 (or scale_min), short tails, every axis."""
    rng = np.random.default_rng(seed)
    for t in range(trials):
        x = _data(rng, (3, 37))
        if t % 5 == 0:
            x[0, :16] = np.float32(2.0 ** -140)  # amax / (6 s_t) below e4m3's grid: s_b = 0 or scale_min
        if t % 3:
            x[np.isnan(x)] = 1.0
        name = FLOAT_NAMES[t % len(FLOAT_NAMES)]
        mode = MODES[(t * 7) % len(MODES)]
        kw = dict(rounding=mode)
        if t % 4 == 1:
            kw["scale_min"] = 2.0 ** -6
        if B.format(name).tensor_scale and t % 2:
            kw["tensor_scale"] = np.float32(rng.random() * 2.0 ** int(rng.integers(-20, 20)) + 2.0 ** -100)
        if mode == "stochastic":
            kw["random_bits"] = rng.integers(0, 2 ** 32, x.shape, dtype=np.uint32)
        axis = [0, 1, -1][t % 3]
        s, c = B.encode(x, name, axis, **kw)
        for jit in (False, True) if t % jit_every == 0 else (False,):
            def f(v):
                return JB.encode(v, name, axis, **kw)
            js, jc = (jax.jit(f) if jit else f)(jnp.asarray(x))
            assert js.dtype == s.dtype and jc.dtype == c.dtype
            assert np.array_equal(_bits(s), _bits(js)) and np.array_equal(_bits(c), _bits(jc)), (name, kw, axis, jit)


def test_jax_float_scales_match_core():
    _float_sweep(4, 10, jit_every=4)


@pytest.mark.slow
def test_jax_float_scales_match_core_slow():
    _float_sweep(300, 11, jit_every=1)


def test_jax_nvfp4_hand_vectors_tensor_scale_and_key():
    # scale 6 / 6 = 1.0 (e4m3 0x38); 6 -> 0x7, 3 -> 0x5, 0.25 ties to even 0, -1 -> 0xA
    js, jc = JB.encode(jnp.array([6.0, 3.0, 0.25, -1.0]), "nvfp4", tensor_scale=1.0)
    assert _bits(js).tolist() == [0x38] and _bits(jc).tolist() == [7, 5, 0, 10]
    # a tiny block: s_b rounds to 0 (zero elements) by default, to scale_min 2**-6 as torchao
    x = np.array([1e-3] * 16 + [2688.0] * 16, np.float32)
    for smin in (None, 2.0 ** -6):
        s, c = B.encode(x, "nvfp4", scale_min=smin)
        js, jc = JB.encode(jnp.asarray(x), "nvfp4", scale_min=smin)
        assert np.array_equal(_bits(s), _bits(js)) and np.array_equal(_bits(c), _bits(jc))
    assert _bits(JB.encode(jnp.asarray(x), "nvfp4")[0])[0] == 0
    assert float(JB.tensor_scale(jnp.asarray(x), "nvfp4")) == float(B.tensor_scale(x, "nvfp4")) == 1.0
    y = _data(np.random.default_rng(4), (2, 32))
    y[np.isnan(y)] = 0
    s, c = B.encode(y, "nvfp4", rounding="stochastic", seed=3)
    js, jc = JB.encode(jnp.asarray(y), "nvfp4", rounding="stochastic", key=jax.random.key(3))
    assert np.array_equal(_bits(s), _bits(js)) and np.array_equal(_bits(c), _bits(jc))


def test_jax_blocks_refuses_what_it_does_not_mirror():
    with pytest.raises(ValueError, match="arithmetic='float64'"):
        JB.encode(jnp.ones(16), "nvfp4", arithmetic="float64")
    with pytest.raises(TypeError, match="must be float32"):
        JB.encode(jnp.ones(16, jnp.float16), "nvfp4", arithmetic="float32")
    with pytest.raises(ValueError, match="global_scale"):
        JB.encode(jnp.ones(16), "nvfp4", arithmetic="float32", global_scale=1.0)
    with pytest.raises(ValueError, match="float32_te"):
        JB.encode(jnp.ones(16), "nvfp4", arithmetic="float32_te", tensor_scale=1.0)
    with pytest.raises(ValueError, match="float32_te"):
        JB.encode(jnp.ones(16), "e2m1fn/e4m3fn/16", arithmetic="float32_te")
    with pytest.raises(ValueError, match="global_scale"):
        JB.encode(jnp.ones(16), "nvfp4", arithmetic="float32_te", global_scale=0.0)
    with pytest.raises(ValueError, match="always exact"):
        JB.encode(jnp.ones(32), "mxfp4", arithmetic="float32")
    with pytest.raises(ValueError, match=r'jax_enable_x64.*jax.config.update\("jax_enable_x64", True\)'):
        JB.decode(jnp.zeros(1, jnp.uint8), jnp.zeros(16, jnp.uint8), "nvfp4", tensor_scale=1.0)
    with pytest.raises(ValueError, match=r"jax_enable_x64.*jax.enable_x64\(True\)"):
        JB.quantize(jnp.ones(16), "nvfp4")
    with pytest.raises(ValueError, match="scale_rule"):
        JB.encode(jnp.ones(16), "nvfp4", scale_rule="ceil")
    with pytest.raises(ValueError, match="has no tensor scale"):
        JB.encode(jnp.ones(16), "e2m1fn/e4m3fn/16", tensor_scale=1.0)
    with pytest.raises(ValueError, match="tensor_scale"):
        JB.encode(jnp.ones(16), "nvfp4", tensor_scale=-1.0)
    with pytest.raises(ValueError, match="not a value"):
        JB.encode(jnp.ones(16), "nvfp4", scale_min=0.3)
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


# -- e8m0 as a plain format: emul_jax.encode / decode / quantize -----------------------------------

def _e8m0_inputs():
    rng = np.random.default_rng(8)
    edge = [0.0, -0.0, 1.0, 1.5, 3.0, 2.0 ** -127, 1.5 * 2.0 ** -127, 1.25 * 2.0 ** -127, 2.0 ** -128, 2.0 ** -149,
            1.5 * 2.0 ** -126, 2.0 ** 127, 1.5 * 2.0 ** 127, 1.75 * 2.0 ** 127, float(np.finfo(np.float32).max),
            np.inf, -np.inf, np.nan, -1.0, -(2.0 ** -149)]
    r = rng.integers(0, 2 ** 32, 2000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    return np.concatenate([np.array(edge, np.float32), r, np.abs(r)])


def _check_e8m0(x, mode, ovf, jit, **sr):
    import emul_jax as EJ

    kw = dict(sr)
    u = None
    if mode == "stochastic":
        u = np.random.default_rng(9).integers(0, 2 ** kw["sr_bits"], x.size, dtype=np.uint64).astype(np.uint32)
    want = emul.encode(x, "e8m0", mode, ovf, random_bits=u, **kw)
    f = (lambda a, w: EJ.encode(a, "e8m0", mode, ovf, random_bits=w, **kw))
    got = (jax.jit(f) if jit else f)(jnp.asarray(x), None if u is None else jnp.asarray(u))
    assert got.dtype == jnp.uint8 and np.array_equal(_bits(got), want.astype(np.uint32)), (mode, ovf, jit)


@pytest.mark.parametrize("mode, ovf, jit, sr", [
    ("nearest_even", None, False, {}), ("nearest_away", "saturate", True, {}), ("toward_zero", None, False, {}),
    ("stochastic", None, True, {"sr_bits": 5, "sr_method": "compare"}),
])
def test_e8m0_encode_matches_core(mode, ovf, jit, sr):
    """emul_jax.encode(x, "e8m0") = emul.encode bit for bit: ties by code parity, x <= 0 / NaN -> 0xFF,
    below 2**-127 -> 0, overflow at 2**127 by the mode and rule, subnormal and random float32s."""
    _check_e8m0(_e8m0_inputs(), mode, ovf, jit, **sr)


@pytest.mark.slow
def test_e8m0_encode_every_mode_slow():
    x = _e8m0_inputs()
    for mode in MODES:
        for ovf in (None, "saturate"):
            for jit in (False, True):
                if mode == "stochastic":
                    for sr in ({"sr_bits": 32}, {"sr_bits": 7, "sr_method": "compare"}):
                        _check_e8m0(x, mode, ovf, jit, **sr)
                else:
                    _check_e8m0(x, mode, ovf, jit)


def test_e8m0_decode_quantize_key_and_ints():
    import emul_jax as EJ

    c = np.arange(256, dtype=np.uint8)
    assert np.array_equal(_bits(EJ.decode(jnp.asarray(c), "e8m0")),
                          emul.decode(c, "e8m0").astype(np.float32).view(np.uint32))
    x = _e8m0_inputs()
    assert np.array_equal(_bits(EJ.quantize(jnp.asarray(x), "e8m0")), emul.quantize(x, "e8m0").view(np.uint32))
    got = EJ.encode(jnp.asarray(x), "e8m0", "stochastic", sr_bits=8, key=jax.random.key(3))
    assert np.array_equal(_bits(got), emul.encode(x, "e8m0", "stochastic", sr_bits=8, seed=3).astype(np.uint32))
    xi = np.array([0, 1, 3, -5, 2 ** 31 - 1, 2 ** 24 + 1], np.int32)
    assert np.array_equal(_bits(EJ.encode(jnp.asarray(xi), "e8m0")), emul.encode(xi, "e8m0").astype(np.uint32))
    g = jax.grad(lambda v: EJ.quantize(v, "e8m0").sum())(jnp.array([3.0, 0.7]))
    assert np.array_equal(np.asarray(g), [1.0, 1.0])
    with pytest.raises(ValueError, match="not a code of e8m0"):
        EJ.decode(jnp.array([256]), "e8m0")
    with pytest.raises(ValueError, match="overflow='wrap'"):
        EJ.encode(jnp.array([1.0]), "e8m0", overflow="wrap")


# -- float-scale decode / quantize: float64 values under jax_enable_x64 ------------------------------

def _b64(a):
    return np.asarray(a).view(np.uint64)


def _every_pair(name):
    """(scales, codes): row r holds every element code once (blocks of k), each scale of row r = r."""
    b = B.format(name)
    n_el, n_sc = 1 << b.element.bits, 1 << b.scale.bits
    codes = np.tile(np.arange(n_el, dtype=np.uint8), (n_sc, 1))
    scales = np.repeat(np.arange(n_sc, dtype=np.uint8)[:, None], n_el // b.block, axis=1)
    return scales, codes


def test_jax_float_decode_every_code_pair_x64():
    """decode: every (scale code, element code) pair of NVFP4 under three tensor scales (1/3, the
    smallest subnormal, float32 max) and of e5m2 elements on e4m3fn scales (NaN x NaN, inf x 0,
    inf x NaN, -0) equals emul.blocks.decode's float64 patterns, eagerly and under jit; a traced
    invalid tensor scale gives NaN under jit."""
    with jax.enable_x64(True):
        s, c = _every_pair("nvfp4")
        f = jax.jit(lambda s_, c_, t: JB.decode(s_, c_, "nvfp4", tensor_scale=t))
        for st in (np.float32(1 / 3), np.float32(2.0 ** -149), np.finfo(np.float32).max):
            want = _b64(B.decode(s, c, "nvfp4", tensor_scale=st))
            got = JB.decode(jnp.asarray(s), jnp.asarray(c), "nvfp4", tensor_scale=st)
            assert got.dtype == jnp.float64 and np.array_equal(_b64(got), want)
            assert np.array_equal(_b64(f(jnp.asarray(s), jnp.asarray(c), jnp.float32(st))), want)
        assert np.isnan(np.asarray(f(jnp.asarray(s), jnp.asarray(c), jnp.float32(-1.0)))).all()
        s, c = _every_pair("e5m2/e4m3fn/4")
        _check_generic_decode(s, c, "e5m2/e4m3fn/4", -1, None, JB.decode(jnp.asarray(s), jnp.asarray(c), "e5m2/e4m3fn/4"))


def _check_generic_decode(s, c, name, axis, st, got):
    """got = emul.blocks.decode's float64 patterns, NaN signs included (a NaN element gives its own
    NaN, else a NaN scale gives its NaN, in both)."""
    with np.errstate(invalid="ignore"):
        want = _b64(B.decode(s, c, name, axis, tensor_scale=st))
    assert np.array_equal(_b64(got), want), (name, axis)


def test_jax_decode_nan_pairs_every_position_x64():
    """A NaN element on a NaN scale of the other sign, at every position mod 16 (block 1 and 4,
    lengths 17 and 100; tests/test_blocks.py runs the core over every length 1..40): emul_jax.blocks.decode = emul.blocks.decode = reference/blocks.py, bit
    for bit (the element's NaN), eagerly and under jit."""
    import reference.blocks as R
    from test_blocks import nan_pair_blocks

    with jax.enable_x64(True):
        for block in (1, 4):
            name = f"e5m2/e4m3fn/{block}"
            bfmt = B.format(name)
            f = jax.jit(lambda s_, c_: JB.decode(s_, c_, name))
            for n in (17, 100):
                for mixed in (False, True):
                    s, c = nan_pair_blocks(n, block, mixed)
                    want = np.array(R.decode([int(v) for v in s], [int(v) for v in c], bfmt), np.float64)
                    assert np.array_equal(_b64(B.decode(s, c, bfmt)), _b64(want)), (name, n)
                    assert np.array_equal(_b64(JB.decode(jnp.asarray(s), jnp.asarray(c), name)), _b64(want))
                    if n == 100:
                        assert np.array_equal(_b64(f(jnp.asarray(s), jnp.asarray(c))), _b64(want)), (name, n)


def _nvfp4_data():
    x = _data(np.random.default_rng(12), (3, 37))   # tails: 37 = 2 * 16 + 5
    x[0, :16] = np.float32(2.0 ** -140)              # s_b below e4m3's grid: 0, or scale_min
    x[1, 16:20] = [0.0, -0.0, -0.0, 0.0]
    x[2, 3] = -np.inf
    return x


def test_jax_float_quantize_matches_core_x64():
    """quantize (NVFP4, float64 values) = emul.blocks.quantize(..., dtype=float64) bit for bit: zeros,
    -0, NaN and inf blocks, tails, tiny blocks under both clamp settings (scale_min 0 and 2**-6), a
    given and a computed tensor scale, SR by random_bits and by key, both axes, eager and jit."""
    x = _nvfp4_data()
    u = np.random.default_rng(13).integers(0, 2 ** 32, x.shape, dtype=np.uint32)
    cases = [(-1, {}, True), (-1, dict(scale_min=2.0 ** -6), False),
             (0, dict(tensor_scale=np.float32(2.0 ** -10 / 3), rounding="toward_zero"), False),
             (-1, dict(rounding="stochastic", random_bits=u), False)]
    with jax.enable_x64(True):
        for axis, kw, jit in cases:
            want = _b64(B.quantize(x, "nvfp4", axis, dtype=np.float64, **kw))
            got = JB.quantize(jnp.asarray(x), "nvfp4", axis, **kw)
            assert got.dtype == jnp.float64 and np.array_equal(_b64(got), want), (axis, kw)
            if jit:
                g = jax.jit(lambda v: JB.quantize(v, "nvfp4", axis, **kw))(jnp.asarray(x))
                assert np.array_equal(_b64(g), want)
        want = _b64(B.quantize(x, "nvfp4", rounding="stochastic", seed=3, dtype=np.float64))
        got = JB.quantize(jnp.asarray(x), "nvfp4", rounding="stochastic", key=jax.random.key(3))
        assert np.array_equal(_b64(got), want)


def test_jax_float_decode_quantize_errors_x64():
    s, c = jnp.zeros(1, jnp.uint8), jnp.zeros(16, jnp.uint8)
    with jax.enable_x64(True):
        with pytest.raises(ValueError, match="needs the tensor scale"):
            JB.decode(s, c, "nvfp4")
        with pytest.raises(ValueError, match="has no tensor scale"):
            JB.decode(s, c, "e2m1fn/e4m3fn/16", tensor_scale=1.0)
        with pytest.raises(ValueError, match="tensor_scale"):
            JB.decode(s, c, "nvfp4", tensor_scale=0.1)   # not a float32 value
        with pytest.raises(ValueError, match="0x10 is not a code of e2m1fn"):
            JB.decode(s, c.at[3].set(16), "nvfp4", tensor_scale=1.0)
        with pytest.raises(ValueError, match="scales: shape"):
            JB.decode(jnp.zeros(2, jnp.uint8), c, "nvfp4", tensor_scale=1.0)
        with pytest.raises(TypeError, match="must be float32"):
            JB.quantize(jnp.ones(16, jnp.bfloat16), "nvfp4", arithmetic="float32_te")


@pytest.mark.slow
def test_jax_float_decode_quantize_sweep_slow():
    """Random codes and scales of every float-scale test format (tails, both axes) and quantize over
    every mode, eager and jit, against emul.blocks (float64 patterns)."""
    rng = np.random.default_rng(14)
    with jax.enable_x64(True):
        for t, name in enumerate(FLOAT_NAMES * 2):
            b = B.format(name)
            axis = [0, -1][t % 2]
            c = rng.integers(0, 1 << b.element.bits, (5, 37)).astype(np.uint8)
            k = b.block or c.shape[axis]
            shape = list(c.shape)
            shape[axis] = -(-shape[axis] // k)
            s = rng.integers(0, 1 << b.scale.bits, shape).astype(np.uint8)
            st = np.float32(rng.random() * 2.0 ** int(rng.integers(-149, 100)) + 2.0 ** -149) \
                if b.tensor_scale else None
            _check_generic_decode(s, c, name, axis, st, JB.decode(jnp.asarray(s), jnp.asarray(c), name, axis,
                                                                  tensor_scale=st))
            f = jax.jit(lambda s_, c_: JB.decode(s_, c_, name, axis, tensor_scale=st))
            _check_generic_decode(s, c, name, axis, st, f(jnp.asarray(s), jnp.asarray(c)))
        x = _nvfp4_data()
        for t, mode in enumerate(MODES):
            kw = dict(rounding=mode, scale_min=[None, 2.0 ** -6][t % 2])
            if mode == "stochastic":
                kw["random_bits"] = rng.integers(0, 2 ** 32, x.shape, dtype=np.uint32)
            for name in ("nvfp4", "e2m1fn/e4m3fn/16"):
                want = _b64(B.quantize(x, name, t % 2, dtype=np.float64, **kw))
                assert np.array_equal(_b64(JB.quantize(jnp.asarray(x), name, t % 2, **kw)), want), (name, kw)
                g = jax.jit(lambda v: JB.quantize(v, name, t % 2, **kw))(jnp.asarray(x))
                assert np.array_equal(_b64(g), want), (name, kw)


# -- the peers' float32 arithmetic (arithmetic="float32", "float32_div", "float32_te") ----------------

def _f32_arith_data():
    """float32 blocks of 16 (tail 5) whose float32 steps meet the edges: scales and scale products
    that are float32 subnormals or underflow to 0, reciprocals that overflow, subnormal x, zeros,
    -0, NaN and inf blocks."""
    rng = np.random.default_rng(21)
    x = (rng.standard_normal((6, 37)) * 2.0 ** rng.integers(-140, 100, (6, 37))).astype(np.float32)
    x[0, :16] = np.float32(2.0 ** -140) * rng.integers(1, 200, 16)
    x[1, 16:20] = [0.0, -0.0, -0.0, 0.0]
    x[2, 3] = -np.inf
    x[3, 20] = np.nan
    x[4, :16] = rng.integers(-2 ** 20, 2 ** 20, 16).astype(np.float32) * np.float32(2.0 ** -149)
    x[5, 32:] = np.float32(3e38)
    return x


F32_CASES = [  # (format, keyword arguments)
    ("nvfp4", dict(arithmetic="float32")),
    ("nvfp4", dict(arithmetic="float32", tensor_scale=np.float32(2.0 ** -149), rounding="toward_zero")),
    ("nvfp4", dict(arithmetic="float32_div", scale_min=2 ** -6)),
    ("nvfp4", dict(arithmetic="float32_div", tensor_scale=np.finfo(np.float32).max)),
    ("nvfp4", dict(arithmetic="float32_te")),
    ("nvfp4", dict(arithmetic="float32_te", global_scale=np.float32(3e38))),
    ("e2m1fn/e4m3fn/16", dict(arithmetic="float32", rounding="nearest_away")),
]


def _check_f32_arith(x, name, kw, jit):
    ws, wc = B.encode(x, name, **kw)
    enc = jax.jit(lambda v: JB.encode(v, name, **kw)) if jit else (lambda v: JB.encode(v, name, **kw))
    gs, gc = enc(jnp.asarray(x))
    assert np.array_equal(_bits(ws), _bits(gs)) and np.array_equal(_bits(wc), _bits(gc)), (name, kw, jit)


def test_jax_float32_arithmetic_matches_core():
    """emul_jax.blocks.encode with the peers' float32 arithmetic = emul.blocks.encode bit for bit
    (scale and element codes): a subnormal tensor scale (scale products underflow, reciprocals
    overflow), float32 max (products overflow; under jit), TransformerEngine's G given, and
    quantize (x64) with float32_te = the core's float64 values; F32_CASES in full under slow."""
    x = _f32_arith_data()
    for i in (1, 3, 5):
        _check_f32_arith(x, *F32_CASES[i], jit=i == 3)
    assert _bits(B.tensor_scale(x, "nvfp4", "float32_te")) == _bits(JB.tensor_scale(jnp.asarray(x), "nvfp4",
                                                                                     "float32_te"))
    with jax.enable_x64(True):
        for name, kw in (F32_CASES[4],):
            want = B.quantize(x, name, dtype=np.float64, **kw)
            assert np.array_equal(_b64(JB.quantize(jnp.asarray(x), name, **kw)), _b64(want)), kw


@pytest.mark.slow
def test_jax_float32_arithmetic_sweep_slow():
    """Every variant x format x tensor/global scale (incl. subnormal and overflowing ones) x mode x
    scale_min on data from 2**-149 to float32 max, eagerly and under jit; SR by random_bits."""
    rng = np.random.default_rng(22)
    xs = [_f32_arith_data()]
    for i, (name, kw) in enumerate(F32_CASES):
        _check_f32_arith(xs[0], name, kw, jit=True)
    for lo, hi, shape in ((-5, 5, (4, 64)), (-149, -100, (3, 48)), (100, 127, (2, 32))):
        xs.append((rng.standard_normal(shape) * 2.0 ** rng.integers(lo, hi, shape)).astype(np.float32))
    for ar in ("float32", "float32_div", "float32_te"):
        for name in ("nvfp4", "e2m1fn/e4m3fn/16", "e3m2fn/e5m2/8"):
            bf = B.format(name)
            if ar == "float32_te" and not bf.tensor_scale:
                continue
            extra = [{}]
            if bf.tensor_scale and ar != "float32_te":
                extra += [dict(tensor_scale=np.float32(v)) for v in (2.0 ** -149, 2.0 ** -130, 3.4e38, 1 / 3)]
            if ar == "float32_te":
                extra += [dict(global_scale=np.float32(v)) for v in (2.0 ** -100, 3e38, 7.0)]
            for j, (x, ex, mode) in enumerate(itertools.product(xs, extra, ("nearest_even", "toward_zero", "up"))):
                if name == "e3m2fn/e5m2/8" and not np.isfinite(x).all():
                    x = np.nan_to_num(x, posinf=1.0, neginf=-1.0)
                kw = dict(arithmetic=ar, rounding=mode, **ex)
                if name == "nvfp4" and j % 2:
                    kw["scale_min"] = 2 ** -6
                _check_f32_arith(x, name, kw, jit=j % 5 == 0)
            x = xs[1]
            words = rng.integers(0, 2 ** 32, x.shape, dtype=np.uint64).astype(np.uint32)
            _check_f32_arith(x, name, dict(arithmetic=ar, rounding="stochastic", random_bits=words), jit=True)
