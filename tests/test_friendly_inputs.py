"""Friendlier inputs: NumPy and ml_dtypes dtypes as formats, ml_dtypes arrays as operands, "did you
mean …?" for unknown format, rounding and overflow names, and errors that name the fix."""

import ml_dtypes
import numpy as np
import pytest

import emul

DTYPES = [  # (dtype or scalar type, the format it names)
    (np.float16, "fp16"), (np.dtype("float32"), "fp32"), (np.float64, "fp64"),
    (ml_dtypes.bfloat16, "bf16"), (ml_dtypes.float8_e4m3fn, "e4m3fn"), (ml_dtypes.float8_e4m3fnuz, "e4m3fnuz"),
    (ml_dtypes.float8_e5m2, "e5m2"), (ml_dtypes.float8_e5m2fnuz, "e5m2fnuz"), (ml_dtypes.float8_e4m3, "e4m3"),
    (ml_dtypes.float8_e3m4, "e3m4"), (ml_dtypes.float8_e4m3b11fnuz, "e4m3b11fnuz"),
    (ml_dtypes.float6_e2m3fn, "e2m3fn"), (ml_dtypes.float6_e3m2fn, "e3m2fn"), (ml_dtypes.float4_e2m1fn, "e2m1fn"),
    (ml_dtypes.float8_e8m0fnu, "e8m0"),
    (np.int8, "int8"), (np.uint16, "uint16"), (np.int64, "int64"), (ml_dtypes.int4, "int4"), (ml_dtypes.uint2, "uint2"),
]


@pytest.mark.parametrize("dtype, name", DTYPES, ids=[n for _, n in DTYPES])
def test_dtypes_name_their_format(dtype, name):
    fmt = emul.format(dtype)
    assert fmt == emul.format(name)
    dt = np.dtype(dtype)
    if dt.kind in "fV" and name not in ("int4", "uint2"):  # the same largest value as the dtype itself
        info = ml_dtypes.finfo(dt)
        assert fmt.max == float(info.max)
    assert int(emul.encode(1, dtype)) == int(emul.encode(1, name))  # usable wherever a format is


def test_ml_dtypes_arrays_as_inputs():
    x = np.array([1.5, -2.25, 448.0, 2.0**-9, -0.0, np.inf], ml_dtypes.bfloat16)
    want = np.array([1.5, -2.25, 448.0, 2.0**-9, -0.0, np.inf])
    np.testing.assert_array_equal(emul.quantize(x, "fp16"), emul.quantize(want, "fp16"))
    np.testing.assert_array_equal(emul.encode(x, "e5m2"), emul.encode(want, "e5m2"))
    np.testing.assert_array_equal(emul.add(x, x, "bf16"), emul.add(want, want, "bf16"))
    f8 = np.array([448.0, -0.001953125, 1.0], ml_dtypes.float8_e4m3fn)
    assert emul.encode(f8, "e4m3fn").tolist() == [0x7E, 0x81, 0x38]  # the same codes back
    assert emul.dot(f8, f8, "fp64") == 448.0**2 + 2.0**-18 + 1
    i4 = np.array([-8, 7, 1], ml_dtypes.int4)
    assert emul.quantize(i4, "fx<4,1>", overflow="saturate").tolist() == [-4.0, 3.5, 1.0]
    assert np.isnan(emul.quantize(np.array([np.nan], ml_dtypes.float8_e5m2), "bf16")[0])


@pytest.mark.parametrize("name, suggestion", [
    ("e4m3fnn", "e4m3fn"), ("float8_e4m3fn", "e4m3fn"), ("float16", "fp16"), ("bfloat16", "bf16"),
    ("half", "fp16"), ("e5m2fnz", "e5m2fnuz"), ("float8_e5m2", "e5m2"), ("float4_e2m1fn", "e2m1fn"),
])
def test_format_did_you_mean(name, suggestion):
    with pytest.raises(ValueError, match=rf"did you mean '{suggestion}'\?"):
        emul.format(name)


@pytest.mark.parametrize("name, suggestion", [
    ("rne", "nearest_even"), ("rtz", "toward_zero"), ("rna", "nearest_away"), ("floor", "down"), ("ceil", "up"),
    ("sr", "stochastic"), ("nearest_evn", "nearest_even"), ("trunc", "toward_zero"),
])
def test_rounding_did_you_mean(name, suggestion):
    with pytest.raises(ValueError, match=rf"did you mean '{suggestion}'\?"):
        emul.quantize(1.0, "bf16", name)


@pytest.mark.parametrize("name, suggestion", [("sat", "saturate"), ("clamp", "saturate"), ("satruate", "saturate"),
                                              ("modular", "wrap"), ("inf", "ieee")])
def test_overflow_did_you_mean(name, suggestion):
    with pytest.raises(ValueError, match=rf"did you mean '{suggestion}'\?"):
        emul.quantize(1.0, "int8", overflow=name)


def test_no_guess_for_nonsense():
    with pytest.raises(ValueError) as exc:
        emul.format("qwerty")
    assert "did you mean" not in str(exc.value)
    with pytest.raises(TypeError, match="NumPy/ml_dtypes dtype"):
        emul.format(np.complex64)


def test_nan_into_int8_names_the_fix():
    with pytest.raises(ValueError, match=r"no overflow rule maps NaN.*np\.nan_to_num"):
        emul.quantize(np.array([1.0, np.nan]), "int8")
    with pytest.raises(ValueError, match="use a saturate rule"):
        emul.quantize(np.array([np.inf]), "int8", overflow="wrap")
