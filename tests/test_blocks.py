"""emul.blocks and e8m0: hand-checked vectors, the oracles (ml_dtypes' float8_e8m0fnu, gfloat's
block encoding where its semantics match), and bad input."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

import emul
import emul.blocks as B

NAN = math.nan


# -- e8m0 -----------------------------------------------------------------------------------------

E8M0_CASES = [  # x, mode, overflow, expected code
    (1.0, "nearest_even", None, 127),
    (1.5, "nearest_even", None, 128),      # tie between 2**0 (127, odd) and 2**1 (128, even)
    (3.0, "nearest_even", None, 128),      # tie between 2**1 (128, even) and 2**2
    (3.0, "nearest_away", None, 129),      # ml_dtypes' cast
    (1.5, "toward_zero", None, 127),
    (1.25, "up", None, 128),
    (1.5, "odd", None, 127),
    (2.0 ** -127, "nearest_even", None, 0),
    (2.0 ** -200, "nearest_even", None, 0),  # no zero: below 2**-127 gives 2**-127
    (0.0, "nearest_even", None, 255),
    (-0.0, "nearest_even", None, 255),
    (-4.0, "nearest_even", None, 255),
    (NAN, "nearest_even", None, 255),
    (math.inf, "nearest_even", None, 255),
    (math.inf, "nearest_even", "saturate", 254),
    (2.0 ** 128, "nearest_even", None, 255),
    (2.0 ** 128, "toward_zero", None, 254),  # IEEE 754 §7.4: max for modes rounding toward zero
    (2.0 ** 128, "nearest_even", "saturate", 254),
    (1.5 * 2.0 ** 127, "nearest_even", None, 254),  # the even code 254 (2**127)
    (1.5 * 2.0 ** 127, "nearest_away", None, 255),  # rounds to 2**128: overflow
]


@pytest.mark.parametrize("x, mode, overflow, code", E8M0_CASES)
def test_e8m0_encode_table(x, mode, overflow, code):
    assert int(emul.encode(x, "e8m0", mode, overflow)) == code


def test_e8m0_format():
    f = emul.format("e8m0")
    assert isinstance(f, emul.ExpFormat) and f == emul.ExpFormat(8) and f.name == "e8m0"
    assert (f.bits, f.emin, f.emax, f.max, f.min_normal) == (8, -127, 127, 2.0 ** 127, 2.0 ** -127)
    assert emul.format("e5m0b20") == emul.ExpFormat(5, 20) and emul.format("e5m0b20").name == "e5m0b20"
    assert isinstance(emul.format("e4m0fn"), emul.FloatFormat)  # suffixed names stay signed floats


def test_e8m0_decode_matches_ml_dtypes():
    codes = np.arange(256, dtype=np.uint8)
    want = codes.view(ml_dtypes.float8_e8m0fnu).astype(np.float64)
    got = emul.decode(codes, "e8m0")
    np.testing.assert_array_equal(got, want)  # NaN code 0xFF included (NaN == NaN here)


def test_e8m0_ties_away_matches_ml_dtypes_cast():
    """ml_dtypes' float8_e8m0fnu cast rounds ties away (3.0 -> 4.0): emul's nearest_away, on
    every positive float32 from 2**-127 up to float32's max, ties and their neighbours included."""
    k = np.arange(-127, 128)
    m = np.array([1.0, 1.25, 1.5, np.nextafter(np.float32(1.5), np.float32(1)), np.nextafter(np.float32(1.5), 2),
                  1.75, np.nextafter(np.float32(2), np.float32(1))], np.float32)
    x = (m[None, :] * np.ldexp(np.float32(1), k)[:, None].astype(np.float32)).astype(np.float32).ravel()
    x = x[np.isfinite(x)]
    rng = np.random.default_rng(0)
    x = np.concatenate([x, np.abs(rng.standard_normal(5000).astype(np.float32)) * np.float32(2.0 ** 40),
                        np.float32([3 * 2.0 ** -128, 2.0 ** -127])])
    x = x[(x <= 2.0 ** -127) | (x >= 2.0 ** -126)]  # where ml_dtypes differs (below)
    with np.errstate(over="ignore"):
        want = x.astype(ml_dtypes.float8_e8m0fnu).view(np.uint8)
    got = emul.encode(x, "e8m0", "nearest_away")
    np.testing.assert_array_equal(got, want)


def test_e8m0_where_ml_dtypes_differs():
    """ml_dtypes (0.5) rounds every x in (2**-127, 2**-126) up to 2**-126 (1.25 * 2**-127 is not a
    tie), and maps a float64 far below 2**-127 (2**-200) to NaN; §9 says ties only and "below
    2**-127 -> 2**-127". docs/blocks.md lists both."""
    x = np.array([1.25 * 2.0 ** -127, 2.0 ** -200])
    assert list(emul.encode(x, "e8m0", "nearest_away")) == [0, 0]
    assert list(x.astype(ml_dtypes.float8_e8m0fnu).view(np.uint8)) == [1, 255]


def test_e8m0_only_in_quantize_encode_decode():
    with pytest.raises(ValueError, match="exponent-only"):
        emul.add(1.0, 2.0, "e8m0")


# -- hand-checked block vectors -----------------------------------------------------------------------

BLOCK_CASES = [  # preset, x, keyword arguments, expected scale codes, expected element codes
    # floor (OCP): floor(log2 960) - 8 = 1; 960 / 2 = 480 saturates to 448 (0x7E); 1 / 2 = 0x30
    ("mxfp8_e4m3", [960.0, 1.0], {}, [128], [0x7E, 0x30]),
    ("mxfp8_e4m3", [960.0, 1.0], {"scale_rule": "even"}, [128], [0x7E, 0x30]),  # 1.111b * 2**9 is exact
    ("mxfp8_e4m3", [960.0, 1.0], {"scale_rule": "ceil"}, [129], [0x77, 0x28]),  # 960 / 4 = 240
    ("mxfp8_e4m3", [960.0, 1.0], {"scale_rule": "rceil"}, [129], [0x77, 0x28]),
    # PEERS.md: amax 150 -> scale code 126 under floor and RCEIL, 127 under ceil; 300 -> 288 (0x79)
    ("mxfp8_e4m3", [150.0], {}, [126], [0x79]),
    ("mxfp8_e4m3", [150.0], {"scale_rule": "rceil"}, [126], [0x79]),
    ("mxfp8_e4m3", [150.0], {"scale_rule": "ceil"}, [127], [0x71]),
    # even: 7 = 1.11b * 2**2 rounds (ties away) to 2**3 first: e = 1, 3.5 -> 4 (0x6); floor: 7 -> 6
    ("mxfp4", [7.0], {"scale_rule": "even"}, [128], [0x6]),
    ("mxfp4", [7.0], {}, [127], [0x7]),
    ("mxfp4", [0.0, -0.0], {}, [0], [0x0, 0x8]),                      # amax = 0: 2**-127, signed zeros
    ("mxfp8_e4m3", [NAN, 1.0], {}, [255], [0x7F, 0x7F]),              # a NaN in the block
    ("mxfp8_e5m2", [math.inf, 1.0], {}, [255], [0x7E, 0x7E]),
    ("mxfp4", [NAN, 1.0], {}, [255], [0x0, 0x0]),                      # e2m1fn has no NaN
    ("mxfp8_e4m3", [2.0 ** 200, 1.0], {}, [255], [0x7F, 0x7F]),        # e = 192 > 127: NaN
    ("mxfp8_e4m3", [2.0 ** 200, 1.0], {"scale_overflow": "saturate"}, [254], [0x7E, 0x00]),
    ("mxfp8_e4m3", [2.0 ** -140, 2.0 ** -130], {}, [0], [0x00, 0x20]),  # e = -148 clamps to -127
    ("mxfp8_e4m3", [2.0 ** -140, 2.0 ** -130], {"rounding": "up"}, [0], [0x01, 0x20]),
    ("mxint8", [-1.999, 1.0], {}, [127], [0x80, 0x40]),               # -127.94 -> -128: -2.0 exists
    ("mxint8", [-2.0, 1.0], {}, [128], [0xC0, 0x20]),
    ("mxfp6_e2m3", [7.5, 0.1], {}, [127], [0x1F, 0x01]),
    ("mxfp6_e3m2", [28.0, 0.1], {}, [127], [0x1F, 0x02]),
]


@pytest.mark.parametrize("name, x, kw, scales, codes", BLOCK_CASES)
def test_block_table(name, x, kw, scales, codes):
    s, c = B.encode(np.array(x), name, **kw)
    assert [int(v) for v in s] == scales and [int(v) for v in c] == codes


def test_nvfp4_tiny_block_both_clamps():
    x = np.array([0.005, 0.01, -0.001] + [0.0] * 13)
    s, c = B.encode(x, "nvfp4", tensor_scale=1.0)           # TransformerEngine: s_b = e4m3(0.01/6) = 2**-9
    assert int(s[0]) == 1 and list(c[:3]) == [5, 7, 9]
    s, c = B.encode(x, "nvfp4", tensor_scale=1.0, scale_min=2 ** -6)  # torchao: s_b >= 2**-6
    assert int(s[0]) == 8 and list(c[:3]) == [1, 1, 8]
    s, c = B.encode(x[[0, 3] * 8], "nvfp4", tensor_scale=1.0)  # amax 0.005: s_b rounds to 0, zero elements
    assert int(s[0]) == 0 and not c.any()


def test_nvfp4_tensor_scale():
    x = np.array([2688.0 * 3, 1.0] * 8)
    assert B.tensor_scale(x, "nvfp4") == np.float32(3.0)
    assert B.tensor_scale(np.zeros(16), "nvfp4") == np.float32(1.0)
    s, c = B.encode(x, "nvfp4")
    assert int(s[0]) == 0x7E and int(c[0]) == 0x7  # 8064 / 6 / 3 = 448; 8064 / 1344 = 6


def test_axis_and_tail():
    x = np.arange(30.0).reshape(3, 10)
    s, c = B.encode(x, "e4m3fn/e8m0/4", axis=1)
    assert s.shape == (3, 3) and c.shape == (3, 10)
    s0, c0 = B.encode(x.T, "e4m3fn/e8m0/4", axis=0)
    np.testing.assert_array_equal(s0, s.T)
    np.testing.assert_array_equal(c0, c.T)
    # a short tail takes its amax over the elements present (as zero padding would)
    padded = np.concatenate([x, np.zeros((3, 2))], axis=1)
    sp, cp = B.encode(padded, "e4m3fn/e8m0/4")
    np.testing.assert_array_equal(sp, s)
    np.testing.assert_array_equal(cp[:, :10], c)
    s, c = B.encode(x, "e4m3fn/e8m0/axis")
    assert s.shape == (3, 1)
    with pytest.raises(ValueError, match="tail='error'"):
        B.encode(x, "e4m3fn/e8m0/4", tail="error")


# -- gfloat's block encoding (floor scale, clipped to 2**±127, RNE, saturating elements) -----------------

@pytest.mark.parametrize("name, gname", [("mxfp8_e4m3", "mxfp8_e4m3"), ("mxfp8_e5m2", "mxfp8_e5m2"),
                                         ("mxfp6_e2m3", "mxfp6_e2m3"), ("mxfp6_e3m2", "mxfp6_e3m2"),
                                         ("mxfp4", "mxfp4_e2m1"), ("mxint8", "mxint8")])
def test_gfloat_block_encoding(name, gname):
    """Where the semantics match (finite blocks, no scale overflow: gfloat clips e > 127 to 127,
    which is emul's scale_overflow='saturate', and turns an inf into scale 2**127 where emul gives a
    NaN block), gfloat's codes equal emul's, ties and subnormals included."""
    gfloat = pytest.importorskip("gfloat")
    import gfloat.formats as gf

    fi = getattr(gf, f"format_info_{gname}")
    rng = np.random.default_rng(7)
    blocks = [rng.standard_normal(32) * 2.0 ** rng.integers(-140, 130) for _ in range(40)]
    blocks += [np.round(rng.standard_normal(32) * 8) / 8 * 2.0 ** rng.integers(-10, 10) for _ in range(20)]  # ties
    blocks += [np.zeros(32), np.array([2.0 ** k for k in range(-16, 16)])]
    for x in blocks:
        scale = gfloat.compute_scale_amax(fi.etype.emax, x)
        want = list(gfloat.encode_block(fi, scale, x / scale))
        s, c = B.encode(x, name, scale_overflow="saturate")
        assert [int(s[0])] + [int(v) for v in c] == want


# -- bad input --------------------------------------------------------------------------------------------

def test_bad_input():
    x = np.ones((2, 32))
    with pytest.raises(ValueError, match="unknown"):
        B.format("mxfp9")
    with pytest.raises(ValueError, match="at least 1"):
        B.BlockFormat("e4m3fn", "e8m0", 0)
    with pytest.raises(TypeError, match="block"):
        B.BlockFormat("e4m3fn", "e8m0", True)
    with pytest.raises(ValueError, match="cannot be a block element"):
        B.BlockFormat("e8m0", "e8m0", 32)
    with pytest.raises(ValueError, match="block scales"):
        B.BlockFormat("e4m3fn", "int8", 32)
    with pytest.raises(ValueError, match="axis=2"):
        B.encode(x, "mxfp4", axis=2)
    with pytest.raises(ValueError, match="axis=-3"):
        B.decode(np.zeros((2, 1), np.uint8), np.zeros((2, 32), np.uint8), "mxfp4", axis=-3)
    with pytest.raises(ValueError, match="0-d"):
        B.encode(1.0, "mxfp4")
    with pytest.raises(ValueError, match="scale_rule='nearest'"):
        B.encode(x, "mxfp4", scale_rule="nearest")
    with pytest.raises(ValueError, match="scale_overflow"):
        B.encode(x, "mxfp4", scale_overflow="inf")
    with pytest.raises(ValueError, match="scale_rule"):
        B.encode(x, "nvfp4", scale_rule="floor")
    with pytest.raises(ValueError, match="tensor_scale"):
        B.encode(x, "mxfp4", tensor_scale=1.0)
    with pytest.raises(ValueError, match="rounding"):
        B.encode(x, "mxfp4", rounding="nearest")
    with pytest.raises(ValueError, match="seed"):
        B.encode(x, "mxfp4", rounding="stochastic")
    s, c = B.encode(x, "mxfp4")
    with pytest.raises(ValueError, match="scales: shape"):
        B.decode(s[:, :0], c, "mxfp4")
    with pytest.raises(ValueError, match="scales: shape"):
        B.decode(s, c[:, :40], "e2m1fn/e8m0/16")
    with pytest.raises(ValueError, match="codes: .*0x10"):
        B.decode(s, np.full(c.shape, 16, np.uint8), "mxfp4")
    with pytest.raises(ValueError, match="scales: .*0x100"):
        B.decode(np.full(s.shape, 256, np.uint16), c, "mxfp4")
    with pytest.raises(TypeError, match="codes"):
        B.decode(s, c.astype(np.float32), "mxfp4")
    with pytest.raises(ValueError, match="tensor_scale"):
        B.decode(*B.encode(np.ones(16), "nvfp4"), "nvfp4")
    with pytest.raises(ValueError, match="block sizes differ"):
        B.dot(np.ones(32), np.ones(32), "mxfp4", "nvfp4")
    with pytest.raises(ValueError, match="columns"):
        B.matmul(np.ones((2, 32)), np.ones((16, 2)), "mxfp4")


def test_cli_info_block_format(capsys):
    from emul.cli import main

    assert main(["info", "mxfp4", "--no-table"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "block format  mxfp4" and "bits/element  4 + 8/32 = 4.25" in out
    assert main(["info", "e8m0", "--no-table"]) == 0
    assert "nan           0xff" in capsys.readouterr().out
    assert main(["info", "nvfp4"]) == 0
    assert "0x7  0111  6.0" in capsys.readouterr().out


@pytest.mark.parametrize("shape, axis, scale_shape", [((3, 0), -1, (3, 0)), ((0, 4), -1, (0, 1)), ((0, 4), 0, (0, 4))])
def test_empty_arrays(shape, axis, scale_shape):
    s, c = B.encode(np.zeros(shape, np.float32), "mxfp4", axis)
    assert s.shape == scale_shape and c.shape == shape
    assert B.decode(s, c, "mxfp4", axis).shape == shape


@pytest.mark.parametrize("arithmetic", ["exact", "float32", "float32_div"])
def test_nvfp4_arithmetic_matches_reference(arithmetic):
    """Blocks built around element ties (x = fp32(m * s_t) for tie points m), random s_t, both
    clamp settings, against reference/blocks.py."""
    import reference.blocks as R

    rng = np.random.default_rng(11)
    bfmt = B.format("nvfp4")
    for t in range(30):
        st = np.float32(rng.uniform(0.001, 2.0))
        m = rng.choice([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0], 16) * rng.choice([-1, 1], 16)
        x = (m * st * rng.choice([1.0, 0.5, 2.0 ** -8])).astype(np.float32)
        scale_min = [0, 2 ** -6][t % 2]
        s, c = B.encode(x, bfmt, tensor_scale=st, scale_min=scale_min, arithmetic=arithmetic)
        ws, wc = R.encode([float(v) for v in x], bfmt, tensor_scale=st, scale_min=scale_min, arithmetic=arithmetic)
        assert [int(v) for v in s] == ws and [int(v) for v in c] == wc


def test_nvfp4_transformer_engine_arithmetic_matches_reference():
    """arithmetic='float32_te' (TransformerEngine's NVFP4 reference: G = fp32(2688 / amax), s_t =
    fp32(1 / G), s_b = e4m3(fp32(fp32(amax_b / 6) * G)), x * fp32(1 / fp32(s_b * s_t))) against
    reference/blocks.py, tensors of several magnitudes."""
    import reference.blocks as R

    rng = np.random.default_rng(12)
    bfmt = B.format("nvfp4")
    for t in range(12):
        x = (rng.standard_normal(64) * 2.0 ** rng.integers(-30, 30)).astype(np.float32)
        if t == 0:
            x[:] = 0
        G, st = R.te_scales([float(v) for v in x], bfmt)
        assert float(B.tensor_scale(x, bfmt, "float32_te")) == st
        s, c = B.encode(x, bfmt, arithmetic="float32_te")
        xs = [float(v) for v in x]
        ws, wc = [], []
        for lo in range(0, 64, 16):
            a, b = R.encode(xs[lo:lo + 16], bfmt, tensor_scale=st, arithmetic="float32_te", te_encode_scale=G)
            ws += a
            wc += b
        assert [int(v) for v in s] == ws and [int(v) for v in c] == wc
        if t == 0:  # an all-zero tensor: G = float32's max, zero elements
            assert not B.quantize(x, bfmt, arithmetic="float32_te").any()
        # global_scale=G: the same codes for a part of the tensor (one block) given the tensor's G
        s1, c1 = B.encode(x[16:32], bfmt, arithmetic="float32_te", global_scale=np.float32(G))
        assert np.array_equal(s1, s[1:2]) and np.array_equal(c1, c[16:32])
    with pytest.raises(ValueError, match="only with arithmetic='float32_te'"):
        B.encode(x, bfmt, global_scale=1.0)
    with pytest.raises(ValueError, match="global_scale"):
        B.encode(x, bfmt, arithmetic="float32_te", global_scale=0.1)


def test_quantize_float32_nvfp4_as_float64():
    """float32 NVFP4 values need ~30 bits: x's dtype raises, dtype=np.float64 returns decode's values
    (the float32-arithmetic variants take float32 x only, so this is their one way to values)."""
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((3, 32)) * 3).astype(np.float32)
    with pytest.raises(ValueError, match="dtype=np.float64"):
        B.quantize(x, "nvfp4")
    for arithmetic in ("exact", "float32", "float32_div"):
        v = B.quantize(x, "nvfp4", dtype=np.float64, arithmetic=arithmetic)
        s, c = B.encode(x, "nvfp4", arithmetic=arithmetic)
        want = B.decode(s, c, "nvfp4", tensor_scale=B.tensor_scale(x, "nvfp4"))
        assert v.dtype == np.float64 and np.array_equal(v.view(np.uint64), want.view(np.uint64))
    q = B.quantize(x, "mxfp8_e4m3", dtype=np.float64)  # float32-exact formats: the same values, widened
    assert q.dtype == np.float64 and np.array_equal(q.astype(np.float32).view(np.uint32),
                                                    B.quantize(x, "mxfp8_e4m3").view(np.uint32))
    with pytest.raises(ValueError, match="dtype="):
        B.quantize(x, "mxfp4", dtype=np.float16)


# -- dot / matmul: blocks whose exact sums float64 cannot carry -----------------------------------

WIDE_A = [57344.0, 2.0 ** -16, -3.0 * 2.0 ** -16, 1.0] + [0.0] * 28   # e5m2: products 2**63 apart
WIDE_B = [57344.0, 2.0 ** -16, 2.0 ** -15, -1.0] + [0.0] * 28


WIDE_CASES = [
    ("fp32", {}),
    ("fx<12,4>", {"overflow": "wrap"}),
    ("e5m6", {"rounding": "stochastic", "sr_bits": 32, "random_bits": [[1 << 31, 5, 3]]}),
]
WIDE_CASES_SLOW = [
    ("fp64", {"order": "pairwise"}),
    ("bf16", {"order": "chunked", "chunk": 1, "outer": "fp32"}),
    ("fx<40,10>", {}),                                   # saturates
    ("fp64", {"rounding": "up"}),
    ("fp16", {"rounding": "stochastic", "sr_bits": 3, "random_bits": [[7, 0, 4]], "order": "pairwise"}),
]


@pytest.mark.parametrize("acc, kw", WIDE_CASES + [pytest.param(*c, marks=pytest.mark.slow) for c in WIDE_CASES_SLOW])
def test_dot_wide_block_sums_are_exact(acc, kw):
    """A block whose exact sum needs ~90 bits (e5m2 max * max + 2**-32 - ...) is computed exactly
    (no ValueError), equal to reference/blocks.py, whose sums are Fractions."""
    import reference.blocks as R

    a = np.array(WIDE_A * 3)
    b = np.array(WIDE_B * 3)
    a[40], b[70] = 2.0 ** -14, -2.0 ** 14
    bf = B.format("mxfp8_e5m2")
    got = B.dot(a, b, bf, acc=acc, **{k: np.asarray(v, np.uint32)[0] if k == "random_bits" else v
                                      for k, v in kw.items()})
    rkw = {k: v for k, v in kw.items() if k not in ("random_bits", "outer")}
    if "random_bits" in kw:
        rkw["u"] = list(kw["random_bits"][0])
    if "outer" in kw:
        rkw["outer"] = emul.format(kw["outer"])
    want = R.dot(list(a), list(b), bf, acc=emul.format(acc), **rkw)
    assert float(got) == float(want) and got.view(np.uint64) == np.float64(float(want)).view(np.uint64)


def test_dot_wide_generic_formats_match_reference():
    """Element formats whose products span hundreds of bits (bf16, e6m2 elements) and a float
    scale with a tensor scale (terms of ~120 bits), against the reference."""
    import reference.blocks as R

    rng = np.random.default_rng(5)
    for name, acc in [("bf16/e8m0/8", "fp32"), ("e6m2/e8m0/4", "bf16"), ("e5m2/e4m3fn/8/tensor", "fp64")]:
        bf = B.format(name)
        for _ in range(3):
            a = rng.choice([-1, 1], 24) * 2.0 ** rng.integers(-60, 60, 24) * rng.choice([1, 1.25, 1.75], 24)
            b = rng.choice([-1, 1], 24) * 2.0 ** rng.integers(-60, 60, 24)
            got = B.dot(a, b, bf, acc=acc)
            want = R.dot(list(a), list(b), bf, acc=emul.format(acc))
            assert float(got) == float(want), (name, got, want)


@pytest.mark.parametrize("acc, kw", [
    ("fp32", {"order": "pairwise"}),
    ("e4m3fn", {"overflow": "saturate", "rounding": "stochastic", "sr_bits": 5, "seed": 3}),
    pytest.param("fx<16,4>", {"order": "chunked", "chunk": 2}, marks=pytest.mark.slow),
    pytest.param("fx<10,4>", {"overflow": "wrap", "order": "pairwise"}, marks=pytest.mark.slow),
    pytest.param("fp16", {"product": "bf16", "init": 3.0}, marks=pytest.mark.slow),
    pytest.param("bf16", {"order": "chunked", "chunk": 3, "outer": "fp32", "rounding": "down"},
                 marks=pytest.mark.slow),
])
def test_exact_path_equals_float_path(monkeypatch, acc, kw):
    """The exact (integer) path, forced on every output, gives the float path's bits — NaN signs,
    zero signs, init, product rounding, SR words from a seed, saturation included."""
    rng = np.random.default_rng(2)
    a = rng.standard_normal((3, 70)) * 2.0 ** rng.integers(-20, 20, (3, 70))
    b = rng.standard_normal((70, 2)) * 2.0 ** rng.integers(-20, 20, (70, 2))
    a[rng.random(a.shape) < 0.1] = 0.0
    if acc.startswith("e") or acc.startswith("fp"):
        a[0, 3], a[1, 40], b[50, 1] = np.nan, np.inf, -np.inf
    for name in ("mxfp8_e5m2", "mxfp4", "nvfp4"):
        if name == "nvfp4":
            a, b = np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=-1.0), np.nan_to_num(b, posinf=1.0, neginf=-1.0)
        want = B.matmul(a, b, name, acc=acc, **kw)
        monkeypatch.setattr(B, "_ALL_EXACT", True)
        got = B.matmul(a, b, name, acc=acc, **kw)
        monkeypatch.setattr(B, "_ALL_EXACT", False)
        assert np.array_equal(np.asarray(got).view(np.uint64), np.asarray(want).view(np.uint64)), name


def test_dot_of_encoded_nvfp4_operands_with_tensor_scales():
    """Encoded NVFP4 operands are (scales, codes, tensor_scale) triples: each block term is
    S * s_b,a * s_t,a * s_b,b * s_t,b exactly (reference/blocks.py), raw values give the same as
    their encoding with tensor_scale(x); per-batch tensor scales broadcast; bad triples raise."""
    import reference.arith as RA
    import reference.blocks as R

    rng = np.random.default_rng(1)
    bf = B.format("nvfp4")
    for t in range(6):
        x, y = rng.standard_normal(40) * 2.0 ** rng.integers(-10, 10), rng.standard_normal(40)
        sta, stb = np.float32(rng.uniform(1e-3, 10)), B.tensor_scale(y, bf)
        pa, pb = B.encode(x, bf, tensor_scale=sta), B.encode(y, bf, tensor_scale=stb)
        got = B.dot((*pa, sta), (*pb, stb), bf, acc="bf16")
        terms = R.block_terms(([int(c) for c in pa[0]], [int(c) for c in pa[1]]),
                              ([int(c) for c in pb[0]], [int(c) for c in pb[1]]), bf, bf, float(sta), float(stb))
        assert float(got) == float(RA.dot(terms, [1] * len(terms), emul.format("bf16")))
        assert B.dot(x, y, bf) == B.dot((*B.encode(x, bf), B.tensor_scale(x, bf)), (*pb, stb), bf)
    # a batch of two matrices with their own tensor scales = two separate products
    xs = rng.standard_normal((2, 3, 32))
    ws = rng.standard_normal((32, 2))
    ts = np.array([B.tensor_scale(m, bf) for m in xs], np.float32)
    s, c = B.encode(xs, bf, tensor_scale=1.0)  # any codes: the tensor scales are the operand's
    both = B.matmul((s, c, ts[:, None, None]), ws, bf)
    for i in range(2):
        one = B.matmul((s[i], c[i], ts[i]), ws, bf)
        assert np.array_equal(both[i].view(np.uint64), one.view(np.uint64))
    with pytest.raises(ValueError, match="triple"):
        B.dot(pa, pb, bf)
    with pytest.raises(ValueError, match="positive finite float32"):
        B.dot((*pa, 0.1), (*pb, stb), bf)
    with pytest.raises(ValueError, match="pair"):
        B.dot((*B.encode(x[:32], "mxfp4"), 1.0), x[:32], "mxfp4")


# -- which NaN: a NaN element meeting a NaN scale of the other sign ---------------------------------

def nan_pair_blocks(n, block, mixed):
    """(scales, codes) of ``e5m2/e4m3fn/{block}``: scales alternate +NaN / -NaN block by block, each
    element is the NaN of the other sign (so with block 1 both sign orders meet at every position
    mod 16: NumPy's SIMD body and its remainder loop). ``mixed`` also puts a finite negative element
    on a NaN scale and a NaN element on a finite negative scale at some positions."""
    nb = -(-n // block)
    s = np.where(np.arange(nb) % 2 == 0, 0x7F, 0xFF).astype(np.uint8)  # +NaN, -NaN scales
    if mixed and block == 1:
        s[np.arange(nb) % 8 == 5] = 0xB8                             # -1.0
    sc = np.repeat(s, block)[:n]
    c = np.where(sc == 0x7F, 0xFF, 0x7F).astype(np.uint8)             # the other sign's NaN
    if mixed:
        c[np.arange(n) % 8 == 3] = 0xBC                              # -1.0 element
        c[sc == 0xB8] = 0xFE                                         # a -NaN element on -1.0
    return s, c


@pytest.mark.parametrize("block", [1, 4])
def test_decode_nan_element_wins_whatever_its_position(block):
    """decode: a NaN element gives its own NaN (sign kept), else a NaN scale gives its NaN, at every
    position mod 16 and every length 1..40, 64, 100, 1-D and 2-D on both axes; bits equal
    reference/blocks.py and the rule computed here (NumPy's multiply alone gives either operand's
    NaN, by position)."""
    import reference.blocks as R

    bfmt = B.format(f"e5m2/e4m3fn/{block}")
    for n in list(range(1, 41)) + [64, 100]:
        for mixed in (False, True):
            s, c = nan_pair_blocks(n, block, mixed)
            got = B.decode(s, c, bfmt).view(np.uint64)
            want = np.array(R.decode([int(v) for v in s], [int(v) for v in c], bfmt), np.float64).view(np.uint64)
            assert np.array_equal(got, want), (n, mixed, got, want)
            p = B._decode(c, bfmt.element)   # the core's value table (no new kernel to compile)
            x = np.repeat(B._decode(s, bfmt.scale), block)[:n]
            rule = np.where(np.isnan(p), np.signbit(p), np.signbit(x))
            assert np.array_equal(got >> np.uint64(63), rule.astype(np.uint64)), (n, mixed)
            assert np.isnan(got.view(np.float64)).all()
    s2, c2 = (np.stack([v] * 3) for v in nan_pair_blocks(37, block, True))
    got = B.decode(s2, c2, bfmt).view(np.uint64)
    assert np.array_equal(got, np.stack([B.decode(s2[0], c2[0], bfmt).view(np.uint64)] * 3))
    got0 = B.decode(s2.T.copy(), c2.T.copy(), bfmt, axis=0).view(np.uint64)
    assert np.array_equal(got0, got.T)
    q = B.quantize(np.array([np.nan, -np.nan, 1.0, -2.0] * 9), bfmt)  # encode's NaN codes are +NaN
    assert np.isnan(q[0::4]).all() and np.isnan(q[1::4]).all()
    assert (q[np.isnan(q)].view(np.uint64) >> np.uint64(63) == 0).all()


def test_block_dot_nan_terms_are_chosen_explicitly():
    """dot's block sums take P's NaN, then Q's, whatever the position: a -NaN element of a against a
    +NaN element of b gives the same result at every position of a 40-element block-1 dot."""
    bfmt = B.format("e5m2/e4m3fn/1")
    sc = np.full(40, 0x38, np.uint8)   # 1.0
    got = set()
    for i in range(40):
        ca = np.full(40, 0x3C, np.uint8)
        cb = np.full(40, 0x3C, np.uint8)
        ca[i], cb[i] = 0xFF, 0x7F
        r = np.float64(B.dot((sc, ca), (sc, cb), bfmt))
        assert np.isnan(r)
        got.add(int(r.view(np.uint64)))
    assert len(got) == 1, got


@pytest.mark.parametrize("bfmt", ["mxfp8_e4m3", "nvfp4"])
def test_threads_and_row_slices_do_not_change_a_bit(bfmt):
    """Above the thread threshold the blocks run on slices of their rows from several threads:
    one thread, the default, and the two halves of the rows encoded apart (their own random
    words) give the same scales and codes, with stochastic rounding."""
    import numba

    rng = np.random.default_rng(7)
    x = rng.standard_normal((64, 1024)) * np.exp2(rng.integers(-8, 8, (64, 1)))
    bits = rng.integers(0, 1 << 8, x.shape).astype(np.uint32)
    ts = dict(tensor_scale=B.tensor_scale(x, bfmt)) if bfmt == "nvfp4" else {}
    kw = dict(rounding="stochastic", sr_bits=8, random_bits=bits, **ts)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = B.encode(x, bfmt, **kw)
    finally:
        numba.set_num_threads(before)
    many = B.encode(x, bfmt, **kw)
    top = B.encode(x[:32], bfmt, **dict(kw, random_bits=bits[:32]))
    bottom = B.encode(x[32:], bfmt, **dict(kw, random_bits=bits[32:]))
    for got in (many, tuple(np.concatenate(p) for p in zip(top, bottom))):
        for g, w in zip(got, one):
            assert g.dtype == w.dtype and g.tobytes() == w.tobytes()
