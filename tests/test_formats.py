"""Formats: parameters, derived properties, names, validation."""

import pytest

import emul
from emul import FixedFormat, FloatFormat

# name, bits, max, min_normal, min_subnormal, eps — from ml_dtypes' finfo and the OCP spec.
FLOATS = [
    ("fp64", 64, 1.7976931348623157e308, 2.0**-1022, 2.0**-1074, 2.0**-52),
    ("fp32", 32, 3.4028234663852886e38, 2.0**-126, 2.0**-149, 2.0**-23),
    ("fp16", 16, 65504.0, 2.0**-14, 2.0**-24, 2.0**-10),
    ("bf16", 16, 3.3895313892515355e38, 2.0**-126, 2.0**-133, 2.0**-7),
    ("tf32", 19, (2 - 2.0**-10) * 2.0**127, 2.0**-126, 2.0**-136, 2.0**-10),
    ("e4m3fn", 8, 448.0, 2.0**-6, 2.0**-9, 0.125),
    ("e4m3fnuz", 8, 240.0, 2.0**-7, 2.0**-10, 0.125),
    ("e5m2", 8, 57344.0, 2.0**-14, 2.0**-16, 0.25),
    ("e5m2fnuz", 8, 57344.0, 2.0**-15, 2.0**-17, 0.25),
    ("e3m4", 8, 15.5, 0.25, 2.0**-6, 2.0**-4),
    ("e4m3", 8, 240.0, 2.0**-6, 2.0**-9, 0.125),
    ("e4m3b11fnuz", 8, 30.0, 2.0**-10, 2.0**-13, 0.125),
    ("e2m3fn", 6, 7.5, 1.0, 0.125, 0.125),
    ("e3m2fn", 6, 28.0, 0.25, 0.0625, 0.25),
    ("e2m1fn", 4, 6.0, 1.0, 0.5, 0.5),
    ("e5m6b10-nosub", 12, 2.0**20 * (2 - 2.0**-6), 2.0**-9, 2.0**-9, 2.0**-6),
]


@pytest.mark.parametrize("name,bits,max_,min_normal,min_sub,eps", FLOATS)
def test_float_properties(name, bits, max_, min_normal, min_sub, eps):
    f = emul.format(name)
    assert (f.bits, f.max, f.min_normal, f.min_subnormal, f.eps) == (bits, max_, min_normal, min_sub, eps)
    assert f.name == name and emul.format(f.name) == f


def test_ml_dtypes_finfo_agrees(ml_dtypes):
    for name, dt in [("e4m3fn", "float8_e4m3fn"), ("e4m3fnuz", "float8_e4m3fnuz"), ("e5m2", "float8_e5m2"),
                     ("e5m2fnuz", "float8_e5m2fnuz"), ("e3m4", "float8_e3m4"), ("e4m3", "float8_e4m3"),
                     ("e4m3b11fnuz", "float8_e4m3b11fnuz"), ("e2m3fn", "float6_e2m3fn"),
                     ("e3m2fn", "float6_e3m2fn"), ("e2m1fn", "float4_e2m1fn"), ("bf16", "bfloat16")]:
        fi = ml_dtypes.finfo(getattr(ml_dtypes, dt))
        f = emul.format(name)
        assert f.max == float(fi.max), name
        assert f.min_normal == float(fi.smallest_normal), name
        assert f.min_subnormal == float(fi.smallest_subnormal), name
        assert f.eps == float(fi.eps), name


def test_preset_parameters():
    assert emul.format("e4m3fnuz") == FloatFormat(4, 3, bias=8, specials="fnuz")
    assert emul.format("e4m3b11fnuz") == FloatFormat(4, 3, bias=11, specials="fnuz")
    assert emul.format("e2m1fn") == FloatFormat(2, 1, specials="none")
    assert emul.format("e3m2fin") == emul.format("e3m2fn")
    assert emul.format("E4M3FN") == emul.format("e4m3fn")


@pytest.mark.parametrize("fmt", [
    FloatFormat(3, 2, specials="fn"), FloatFormat(2, 1, specials="fn"), FloatFormat(2, 3, specials="fn"),
    FloatFormat(4, 3, bias=7, specials="fn"), FloatFormat(4, 3, bias=3), FloatFormat(5, 10, subnormals=False),
    FloatFormat(3, 2, specials="none", subnormals=False), FloatFormat(8, 0, specials="fnuz"),
    FloatFormat(1, 4, specials="none"), FloatFormat(10, 52, bias=1000), FloatFormat(4, 3, bias=-3, specials="fn"),
])
def test_names_round_trip(fmt):
    assert emul.format(fmt.name) == fmt


def test_generic_names():
    assert emul.format("e5m6b10-nosub") == FloatFormat(5, 6, bias=10, subnormals=False)
    assert emul.format("e3m2b3fn") == FloatFormat(3, 2, specials="fn")  # explicit bias reads generically
    assert emul.format("e4m3fn-nosub") == FloatFormat(4, 3, specials="fn", subnormals=False)


def test_formats_are_values():
    a, b = FloatFormat(4, 3, specials="fn"), emul.format("e4m3fn")
    assert a == b and hash(a) == hash(b) and a.bias == 7
    with pytest.raises(Exception):
        a.man_bits = 2
    assert {a: 1}[b] == 1


@pytest.mark.parametrize("name,bits,frac,signed,min_,max_,lsb", [
    ("int8", 8, 0, True, -128.0, 127.0, 1.0),
    ("uint12", 12, 0, False, 0.0, 4095.0, 1.0),
    ("fx<4,2>", 4, 2, True, -2.0, 1.75, 0.25),
    ("ufx<4,2>", 4, 2, False, 0.0, 3.75, 0.25),
    ("fx<8,-2>", 8, -2, True, -512.0, 508.0, 4.0),
    ("fx<4,6>", 4, 6, True, -0.125, 7 / 64, 1 / 64),
    ("int64", 64, 0, True, -2.0**63, 2.0**63 - 1, 1.0),
])
def test_fixed_properties(name, bits, frac, signed, min_, max_, lsb):
    f = emul.format(name)
    assert f == FixedFormat(bits, frac, signed=signed)
    assert (f.min, f.max, f.lsb, f.name) == (min_, max_, lsb, name)


@pytest.mark.parametrize("args,kwargs,match", [
    ((0, 3), {}, "exp_bits=0"),
    ((4, -1), {}, "man_bits=-1"),
    ((1, 3), {}, "specials='ieee' needs"),
    ((4, 0), {}, "specials='ieee' needs"),
    ((12, 3), {}, "exp_bits=12"),
    ((5, 53), {}, "man_bits=53"),
    ((4, 3), {"specials": "weird"}, "specials='weird'"),
    ((8, 23), {"bias": -900}, "bias=-900"),
    ((8, 23), {"bias": 1100}, "bias=1100"),
])
def test_float_validation(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        FloatFormat(*args, **kwargs)


def test_type_validation():
    with pytest.raises(TypeError, match="exp_bits"):
        FloatFormat(4.0, 3)
    with pytest.raises(TypeError, match="subnormals"):
        FloatFormat(4, 3, subnormals="no")
    with pytest.raises(ValueError, match="bits=0"):
        FixedFormat(0, 0)
    with pytest.raises(ValueError, match="bits=65"):
        FixedFormat(65, 0)
    assert FixedFormat(1, 0, signed=True).min_raw == -1  # ap_fixed<1,1>: {-1, 0} (was rejected)


@pytest.mark.parametrize("name", ["e4m3x", "fp8", "int0", "int65", "fx<4>", "e0m3", "e4m3fnuzz", "", "float32"])
def test_unknown_names(name):
    with pytest.raises(ValueError):
        emul.format(name)


def test_format_argument_type():
    with pytest.raises(TypeError, match="format"):
        emul.format(8)


@pytest.mark.parametrize("preset", ["e2m1fn", "e3m2fn", "e2m3fn", "e4m3fn", "e4m3fnuz", "e5m2", "e5m2fnuz", "e3m4",
                                    "e4m3b11fnuz", "fp16", "bf16", "tf32", "fp32"])
def test_preset_nosub_keeps_the_preset(preset):
    """'<preset>-nosub' is the preset without subnormals, never a generic reading of the letters."""
    base = emul.format(preset)
    nosub = emul.format(preset + "-nosub")
    assert nosub == FloatFormat(base.exp_bits, base.man_bits, bias=base.bias, subnormals=False, specials=base.specials)
    assert nosub.max == base.max and nosub.specials == base.specials
    assert nosub.name == preset + "-nosub" and emul.format(nosub.name) == nosub


def test_nosub_names_round_trip_for_shadowed_formats():
    assert emul.format("e2m1fn-nosub").max == 6.0
    assert emul.format("e3m2fn-nosub").max == 28.0 and emul.format("e2m3fn-nosub").max == 7.5
    for specials in ("ieee", "fn", "fnuz", "none"):
        for e, m in ((2, 1), (3, 2), (2, 3), (4, 3), (5, 2)):
            for sub in (True, False):
                try:
                    f = FloatFormat(e, m, specials=specials, subnormals=sub)
                except ValueError:
                    continue
                assert emul.format(f.name) == f, f.name


def test_fixed_width_bounds():
    assert FixedFormat(1, 0).name == "int1" and FixedFormat(1, 0, signed=False).name == "uint1"
    assert emul.format("fx<1,-3>") == FixedFormat(1, -3)
    for bits in (0, 65):
        with pytest.raises(ValueError, match="bits="):
            FixedFormat(bits, 0)
    assert FixedFormat(8, 2000).frac == 2000 and FixedFormat(8, -2000).frac == -2000
    for frac in (2001, -2001):
        with pytest.raises(ValueError, match="between -2000 and 2000 .past that"):
            FixedFormat(8, frac)


@pytest.mark.parametrize("name", ["e4m3fn", "e5m2", "e4m3fnuz", "e2m1fn", "e3m0fin", "e8m0fn", "e4m3fn-nosub",
                                  "e3m2b-140fin", "bf16"])
def test_python_code_value_equals_decode(name):
    """FloatFormat._value (the plans' decoder of special codes, no kernel) == emul.decode, bit for
    bit, on every code (NaN signs included)."""
    import numpy as np

    fmt = emul.format(name)
    codes = np.arange(1 << fmt.bits, dtype=np.uint64)
    if not fmt.subnormals:
        mag = codes & np.uint64((1 << (fmt.bits - 1)) - 1)
        codes = codes[(mag >> np.uint64(fmt.man_bits) != 0) | (mag == 0)]
    got = np.array([fmt._value(int(c)) for c in codes], np.float64)
    assert (got.view(np.uint64) == emul.decode(codes, fmt).view(np.uint64)).all()
