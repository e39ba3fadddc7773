"""Independent oracles beyond ml_dtypes: APyTypes float/fixed casts and gfloat's vectorised rounding.

(ml_dtypes is in test_quantize.py; the golden model reference/ in property_tests/.)
"""

import numpy as np
import pytest

import emul

apytypes = pytest.importorskip("apytypes")
gfloat = pytest.importorskip("gfloat")
import gfloat.formats  # noqa: E402

Q = apytypes.QuantizationMode
APY_MODES = {"nearest_even": Q.TIES_EVEN, "nearest_away": Q.TIES_AWAY, "nearest_zero": Q.TIES_ZERO,
             "nearest_up": Q.TIES_POS, "nearest_down": Q.TIES_NEG, "toward_zero": Q.TO_ZERO,
             "away_from_zero": Q.TO_AWAY, "up": Q.TO_POS, "down": Q.TO_NEG}


def _inputs(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n) * 10.0 ** rng.uniform(-8, 8, n)
    return np.concatenate([x, [0.0, -0.0, np.inf, -np.inf]])


@pytest.mark.parametrize("e,m", [(5, 6), (4, 7), (5, 2), (8, 7), (5, 10), (3, 4), (6, 9)])
@pytest.mark.parametrize("mode", list(APY_MODES))
def test_apytypes_float_casts(e, m, mode):
    """APyTypes' float casts use IEEE-style specials and the IEEE 754 overflow rule."""
    x = _inputs()
    a = apytypes.APyFloatArray.from_float(x, exp_bits=11, man_bits=52)
    want = np.asarray(a.cast(exp_bits=e, man_bits=m, quantization=APY_MODES[mode]).to_bits()).astype(np.uint64)
    np.testing.assert_array_equal(emul.encode(x, emul.FloatFormat(e, m), mode).astype(np.uint64), want)


FIXED_MODES = {"nearest_even": Q.RND_CONV, "nearest_away": Q.RND_INF, "nearest_zero": Q.RND_ZERO,
               "nearest_up": Q.RND, "nearest_down": Q.RND_MIN_INF, "toward_zero": Q.TRN_ZERO, "down": Q.TRN,
               "up": Q.TRN_INF, "away_from_zero": Q.TRN_AWAY}


@pytest.mark.parametrize("bits,frac", [(12, 4), (8, 0), (6, 5), (16, -2)])
@pytest.mark.parametrize("mode", list(FIXED_MODES))
@pytest.mark.parametrize("overflow,apy_overflow", [("saturate", "SAT"), ("wrap", "WRAP")])
def test_apytypes_fixed_casts(bits, frac, mode, overflow, apy_overflow):
    rng = np.random.default_rng(bits * 100 + frac)
    lsb = 2.0 ** -frac
    # exact inputs on a grid 64x finer than the target (ties included), in and beyond the range
    x = rng.integers(-(1 << (bits + 7)), 1 << (bits + 7), 5000) * (lsb / 64)
    a = apytypes.APyFixedArray.from_float(x, int_bits=bits + 8 - frac, frac_bits=frac + 6)
    got = a.cast(int_bits=bits - frac, frac_bits=frac, quantization=FIXED_MODES[mode],
                 overflow=getattr(apytypes.OverflowMode, apy_overflow))
    want = np.asarray(got.to_bits()).astype(np.uint64)
    np.testing.assert_array_equal(emul.encode(x, emul.FixedFormat(bits, frac), mode, overflow).astype(np.uint64), want)


G_MODES = {"nearest_even": gfloat.RoundMode.TiesToEven, "nearest_away": gfloat.RoundMode.TiesToAway,
           "toward_zero": gfloat.RoundMode.TowardZero, "up": gfloat.RoundMode.TowardPositive,
           "down": gfloat.RoundMode.TowardNegative}


@pytest.mark.parametrize("name,fi", [("e4m3fn", "format_info_ocp_e4m3"), ("e5m2", "format_info_ocp_e5m2"),
                                     ("e2m1fn", "format_info_ocp_e2m1"), ("e3m2fn", "format_info_ocp_e3m2"),
                                     ("e2m3fn", "format_info_ocp_e2m3"), ("bf16", "format_info_bfloat16"),
                                     ("fp16", "format_info_binary16")])
@pytest.mark.parametrize("mode", list(G_MODES))
@pytest.mark.parametrize("saturate", [False, True])
def test_gfloat_round_ndarray(name, fi, mode, saturate):
    fmt = emul.format(name)
    if fmt.specials == "none" and not saturate:
        pytest.skip("gfloat leaves out-of-range values of formats without specials to the caller")
    x = _inputs(3000, seed=7)
    if fmt.specials == "none":
        x = x[np.isfinite(x)]
    want = gfloat.round_ndarray(getattr(gfloat.formats, fi), x, G_MODES[mode], sat=saturate)
    got = emul.quantize(x, fmt, mode, "saturate" if saturate else "ieee")
    np.testing.assert_array_equal(got, want)
    finite = ~np.isnan(want)  # NaN values carry no meaningful sign here (codes do: test_quantize)
    np.testing.assert_array_equal(np.signbit(got[finite]), np.signbit(want[finite]))
