"""Tests for emul.vectors and `emul vectors`: files decode back to emul's results (and to
independent oracles), headers regenerate files byte for byte, hex and CSV agree, corner sets hold
the corners, SR words come from the named source, and bad settings fail clearly."""

import io
import json
import sys
import warnings
from contextlib import redirect_stderr, redirect_stdout
from fractions import Fraction as F

import numpy as np
import pytest

import emul
import emul.random as er
import emul.vectors as V
from emul.cli import main

# (op, settings): small but covering every op, set, SR source and overflow family
CASES = [
    ("quantize", dict(fmt="e4m3fn")),
    ("quantize", dict(fmt="e5m2", in_fmt="fp16", sets="exhaustive")),
    ("quantize", dict(fmt="int8", in_fmt="fp16", rounding="stochastic", sr_bits=4, random_source="lfsr", count=200)),
    ("quantize", dict(fmt="e4m3fn", in_fmt="bf16", rounding="stochastic", sr_bits=3, random_source="all",
                      sets="random", count=50)),
    ("quantize", dict(fmt="e2m1fn", in_fmt="fp32", rounding="stochastic", sr_bits=8, sr_method="compare",
                      count=300, seed=7)),
    ("quantize", dict(fmt="fx<4,2>", rounding="down", overflow="wrap", count=200)),
    ("quantize", dict(fmt="e5m2", rounding="toward_zero", overflow="saturate", count=200)),
    ("quantize", dict(fmt="int64", in_fmt="fp64", count=100)),
    ("quantize", dict(fmt="fp32", in_fmt="uint64", rounding="stochastic", sr_bits=5, count=100)),
    ("quantize", dict(fmt="fp64", in_fmt="fx<64,10>", rounding="down", count=100)),
    ("quantize", dict(fmt="ufx<64,3>", in_fmt="fx<64,-3>", overflow="wrap", count=100)),
    ("add", dict(fmt="e4m3fn", count=300)),
    ("sub", dict(fmt="e5m2", rounding="down", count=300)),
    ("mul", dict(fmt="e4m3fn", out_fmt="fp16", sets="exhaustive")),
    ("mul", dict(fmt="bf16", rounding="odd", count=300, sets="random")),
    ("fma", dict(fmt="e2m1fn", out_fmt="e4m3fn", count=100)),
    ("add", dict(fmt="e4m3fn", out_fmt="e4m3fn", rounding="stochastic", sr_bits=8, count=300, sets="random")),
    ("mac", dict(overflow="saturate", count=100, seed=1)),
    ("mac", dict(overflow="wrap", count=100, seed=1)),
    ("mac", dict(fmt="e4m3fn", acc="fp16", k=8, count=50)),
    ("nm", dict(count=200)),
    ("nm", dict(fmt="e2m1fn", sets="exhaustive")),
    ("nm", dict(fmt="e4m3fn", n=1, m=2, ties="high_index", count=100)),
]
IDS = [f"{op}-{i}" for i, (op, _) in enumerate(CASES)]


@pytest.fixture(scope="module", params=range(len(CASES)), ids=IDS)
def case(request):
    op, kw = CASES[request.param]
    return op, kw, V.generate(op, **kw)


# ------------------------------------------------------------------------------ round trips


def _wide(name):
    f = emul.format(name)
    return isinstance(f, emul.FixedFormat) and not f.fits_float64


def golden_quantize(vec):
    """Result codes of quantize vectors from the golden model (reference/, Fractions): each input
    code's exact value rounded to the target."""
    import importlib

    ref = importlib.import_module("reference.quantize")  # (reference.quantize is also a function name)
    s = vec.settings
    I, O = emul.format(s["in_fmt"]), emul.format(s["fmt"])
    out = []
    for row in range(len(vec)):
        v = ref.decode(int(vec["x"][row]), I)  # exact: Fraction, or float for zeros and specials
        sr = {}
        if s["rounding"] == "stochastic":
            sr = dict(u=int(vec["u"][row]), sr_bits=s["sr_bits"], sr_method=s["sr_method"])
        out.append(ref.encode(v, O, s["rounding"], s["overflow"], **sr))
    return np.array(out, np.uint64)


def expected_from_file(vec):
    """What emul computes from the operand codes of a file (decoded), as result codes; for
    fixed-point formats wider than float64, the golden model's codes."""
    s = vec.settings
    sr = {}
    if s.get("rounding") == "stochastic":
        sr = dict(random_bits=vec["u"], sr_bits=s["sr_bits"], sr_method=s["sr_method"])
    if s["op"] == "quantize":
        if _wide(s["in_fmt"]) or _wide(s["fmt"]):
            return golden_quantize(vec)
        x = V._values(vec["x"], s["in_fmt"])
        return emul.encode(x, s["fmt"], s["rounding"], s["overflow"], **sr)
    from emul import arith

    names = ["a", "b", "c"] if s["op"] == "fma" else ["a", "b"]
    fmts = [s["fmt"], s["b_fmt"], s.get("c_fmt")]
    vals = [V._values(vec[n], f) for n, f in zip(names, fmts)]
    r = getattr(arith, s["op"])(*vals, s["out_fmt"], s["rounding"], s["overflow"], **sr)
    return emul.encode(r, s["out_fmt"], overflow=s["overflow"])


@pytest.mark.parametrize("kind", ["hex", "csv", "csv-values"])
def test_file_round_trip_and_regeneration(case, kind, tmp_path):
    op, kw, vec = case
    path = tmp_path / ("v.hex" if kind == "hex" else "v.csv")
    if kind == "hex":
        vec.to_hex(path)
    else:
        vec.to_csv(path, values=kind == "csv-values")
    back = V.read(path)
    assert back.fields == vec.fields and back.settings == vec.settings
    np.testing.assert_array_equal(back.codes, vec.codes)
    # the header alone regenerates the same bytes
    again = V.regenerate(path, tmp_path / "again")
    assert again.read_bytes() == path.read_bytes()
    if op in ("quantize", "add", "sub", "mul", "fma"):
        np.testing.assert_array_equal(expected_from_file(back), back["y"])


def test_csv_and_hex_agree(case, tmp_path):
    _, _, vec = case
    vec.to_hex(tmp_path / "v.hex")
    vec.to_csv(tmp_path / "v.csv", values=True)
    h, c = V.read(tmp_path / "v.hex"), V.read(tmp_path / "v.csv")
    np.testing.assert_array_equal(h.codes, c.codes)
    rows = [ln for ln in (tmp_path / "v.csv").read_text().splitlines() if not ln.startswith("#")]
    names = rows[0].split(",")
    for f in vec.fields:
        if f.fmt is None:
            continue
        text = [r.split(",")[names.index(f.name + "_value")] for r in rows[1:]]
        if _wide(f.fmt):  # exact decimals of integers and dyadic fractions
            assert [F(t) for t in text] == [F(int(v)) if isinstance(v, np.integer) else v for v in vec.values(f.name)]
        else:
            np.testing.assert_array_equal(np.array([float(t) for t in text]), vec.values(f.name))


def test_header_records_every_setting(case):
    op, kw, vec = case
    text = vec.to_bytes().decode()
    header = [ln for ln in text.splitlines() if ln.startswith("//")]
    settings = json.loads(next(ln for ln in header if ln.startswith("// settings: "))[len("// settings: "):])
    assert settings == vec.settings and settings["op"] == op
    want = V.canonical(op, **kw)
    assert all(settings[k] == want[k] for k in settings if k != "count" or "random" in settings["sets"])
    if "random" not in settings["sets"]:  # the real number of vectors
        assert settings["count"] == len(vec) // (settings["k"] if op == "mac" else 1)
    assert f"// lines: {len(vec)}" in header
    data = [ln for ln in text.splitlines() if not ln.startswith("//")]
    assert len(data) == len(vec) and len({len(ln) for ln in data}) <= 1  # fixed-width lines


def test_hex_word_layout_matches_header():
    vec = V.generate("mac", count=3, sets="random", seed=5)
    text = vec.to_bytes().decode()
    assert "// word: first=[28:28] a=[27:20] b=[19:12] acc=[11:0]" in text
    line = [ln for ln in text.splitlines() if not ln.startswith("//")][0]
    word = int(line.replace("_", ""), 16)
    first, a, b, acc = vec.codes[0]
    assert (word >> 28) & 1 == first and (word >> 20) & 0xFF == a and (word >> 12) & 0xFF == b
    assert word & 0xFFF == acc


def test_empty_and_wide_fields_write_like_python():
    rng = np.random.default_rng(1)
    bits = [1, 3, 4, 5, 8, 12, 16, 19, 32, 33, 63, 64]
    codes = np.stack([rng.integers(0, 2**63, 500, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
                      & np.uint64((1 << b) - 1 if b < 64 else 2**64 - 1) for b in bits], axis=1)
    fields = tuple(V.Field(f"f{b}", b) for b in bits)
    vec = V.Vectors({}, fields, codes)
    for sep in ("_", " ", ""):
        data = [ln for ln in vec.to_bytes(sep=sep).decode().splitlines() if not ln.startswith("//")]
        want = [sep.join(format(int(c), f"0{f.digits}x") for c, f in zip(row, fields)) for row in codes]
        assert data == want
    empty = V.Vectors({}, fields, np.zeros((0, len(bits)), np.uint64))
    assert [ln for ln in empty.to_bytes().decode().splitlines() if not ln.startswith("//")] == []


def test_read_accepts_edited_files(tmp_path):
    """Hand-edited files (upper case, comments, blank lines) still parse, by the slow path."""
    vec = V.generate("add", fmt="e4m3fn", count=5, sets="random")
    text = vec.to_bytes().decode().splitlines()
    head, data = [ln for ln in text if ln.startswith("//")], [ln for ln in text if not ln.startswith("//")]
    edited = head + [data[0].upper() + "  // a comment", ""] + data[1:]
    (tmp_path / "e.hex").write_text("\n".join(edited) + "\n")
    np.testing.assert_array_equal(V.read(tmp_path / "e.hex").codes, vec.codes)


# ------------------------------------------------------------------------------ expected values vs oracles


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_mul_e4m3fn_to_fp16_is_exact_but_overflow(ml_dtypes):
    vec = V.generate("mul", fmt="e4m3fn", out_fmt="fp16", sets="exhaustive")
    a, b = vec["a"], vec["b"]
    assert len(vec) == 65536 and len(set(zip(a.tolist(), b.tolist()))) == 65536
    fa = a.astype(np.uint8).view(ml_dtypes.float8_e4m3fn).astype(np.float64)
    fb = b.astype(np.uint8).view(ml_dtypes.float8_e4m3fn).astype(np.float64)
    prod = fa * fb  # exact in float64
    y = vec["y"].astype(np.uint16).view(np.float16).astype(np.float64)
    nan = np.isnan(fa) | np.isnan(fb)
    over = ~nan & (np.abs(prod) >= 65536)
    assert over.sum() == 396
    np.testing.assert_array_equal(y[~nan & ~over], prod[~nan & ~over])  # exact, signs of zeros too
    np.testing.assert_array_equal(np.signbit(y[~nan]), np.signbit(prod[~nan]))
    assert np.isinf(y[over]).all()
    # a NaN operand: canonical NaN with the sign of the first NaN operand
    first_nan_sign = np.where(np.isnan(fa), a >> np.uint64(7), b >> np.uint64(7))
    np.testing.assert_array_equal(vec["y"][nan], np.where(first_nan_sign[nan] == 1, 0xFE00, 0x7E00))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_quantize_fp32_to_e4m3fn_matches_ml_dtypes(ml_dtypes):
    vec = V.generate("quantize", fmt="e4m3fn", count=5000, seed=3)
    x = vec["x"].astype(np.uint32).view(np.float32)
    want = x.astype(ml_dtypes.float8_e4m3fn).view(np.uint8)
    np.testing.assert_array_equal(vec["y"], want)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_quantize_corners_hold_the_corners():
    vec = V.generate("quantize", fmt="e4m3fn", sets="corners")
    x = vec["x"].astype(np.uint32).view(np.float32).astype(np.float64)
    values = set(x.tolist())
    # ties at the top (464 -> 448), one ulp over max (480 -> NaN), subnormal ties, zeros of both signs
    for v in (448.0, 464.0, 480.0, 2.0**-10, 2.0**-9, 1.0 + 1 / 16, 1.0, 2.0**-6):
        assert v in values and -v in values, v
    assert np.nextafter(np.float32(464), np.float32(500)) in x.astype(np.float32)
    assert {0.0, np.inf, -np.inf} <= values and np.signbit(x[x == 0]).any() and np.isnan(x).any()
    ties = (np.abs(x) * 16 % 1 == 0.5) & (np.abs(x) >= 1) & (np.abs(x) < 2)
    assert ties.any()


INTEGER_CASTS = [  # input, target, target precision p (the first rounding binade is 2^p lsb)
    ("uint32", "fp32", 24), ("int32", "fp32", 24), ("uint64", "fp32", 24), ("int64", "fp32", 24),
    ("int64", "fp64", 53), ("uint64", "fp64", 53), ("int16", "fp16", 11), ("int32", "fp16", 11),
    ("uint16", "bf16", 8), ("int16", "bf16", 8), ("int8", "e4m3fn", 4), ("fx<20,4>", "fp16", 11),
    ("ufx<64,7>", "fp32", 24), ("fx<64,10>", "fp64", 53),
]


@pytest.mark.parametrize("in_fmt, fmt, p", INTEGER_CASTS)
def test_integer_input_corners_hold_the_interesting_cases(in_fmt, fmt, p):
    """Integer and fixed-point inputs into floats: the ties at the target's precision
    (2^p + 1 rounds down to even, 2^p + 3 up, 2^(p+1) + 2, in lsb units) and the values around
    them, both signs, the target's max and its neighbours where the input reaches them (max - 1
    ulp, max + 1/2 ulp: the overflow tie, max + 1 ulp), the input's extremes, 0 and +-1; the
    expected codes agree with the golden model; no warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vec = V.generate("quantize", fmt=fmt, in_fmt=in_fmt, sets="corners")
    I, O = emul.format(in_fmt), emul.format(fmt)
    raw = {x - (1 << I.bits) if I.signed and x >> (I.bits - 1) else x for x in vec["x"].tolist()}
    signs = (1, -1) if I.signed else (1,)
    lsb = F(2) ** -I.frac
    want = {0, 1, I.min_raw, I.max_raw} | ({-1} if I.signed else set())
    for k in (2**p + 1, 2**p + 3, 2**p - 1, 2**p, 2 ** (p + 1) + 2, 2 ** (p + 1) + 1, 2 ** (p + 1) + 3):
        want |= {s * k for s in signs if I.min_raw <= s * k <= I.max_raw}
    top = F(O.max)
    ulp = top - F(float(emul.decode(np.uint64(O.max_code_magnitude - 1), O)))
    for v in (top, top - ulp, top + ulp / 2, top + ulp):
        r = v / lsb
        if r.denominator == 1:
            want |= {s * int(r) for s in signs if I.min_raw <= s * int(r) <= I.max_raw}
    assert want <= raw, sorted(want - raw)
    np.testing.assert_array_equal(vec["y"], golden_quantize(vec))
    if O.max_code_magnitude < (1 << 62) and I.bits > 16:  # ties to even at the precision boundary
        tie = dict(zip(vec["x"].tolist(), vec["y"].tolist()))
        code = {x - (1 << I.bits) if I.signed and x >> (I.bits - 1) else x: x for x in tie}
        for k, rounded in ((2**p + 1, 2**p), (2**p + 3, 2**p + 4)):
            y = tie[code[k]]
            assert F(float(emul.decode(np.uint64(y), O))) == rounded * lsb


WIDTH_PROBES = [1, 8, 53, 54, 64]


def _check_generation(tmp_path, files=True, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vec = V.generate("quantize", **kw)
    assert len(vec) > 0
    np.testing.assert_array_equal(vec["y"], golden_quantize(vec))  # every row, exactly
    if not files:
        return
    path = tmp_path / "v.hex"
    vec.to_hex(path)
    back = V.read(path)
    np.testing.assert_array_equal(back.codes, vec.codes)
    assert V.regenerate(path, tmp_path / "again").read_bytes() == path.read_bytes()
    np.testing.assert_array_equal(V.expected_quantize(back.settings, back["x"], back["u"] if "u" in back.names
                                                      else None), back["y"])


@pytest.mark.parametrize("bits", WIDTH_PROBES)
def test_quantize_works_for_every_fixed_width_as_target_and_input(bits, tmp_path):
    """Fixed-point formats of every width (here: a sample of widths; all of 1..64 in the slow
    test) as targets of floats and as inputs of floats and integers: generation raises nothing,
    warns nothing, every expected code equals the golden model's, files read back equal and
    regenerate byte for byte."""
    for signed, frac in ((True, 0), (False, 5), (bits % 2 == 0, -3)):
        F_ = emul.FixedFormat(bits, frac, signed=signed).name
        combos = (dict(fmt=F_, in_fmt="fp64"), dict(fmt=F_, in_fmt="fp16", rounding="stochastic", sr_bits=4),
                  dict(fmt="fp32", in_fmt=F_), dict(fmt="fp64", in_fmt=F_, rounding="up"),
                  dict(fmt="int8", in_fmt=F_, overflow="wrap"))
        for i, kw in enumerate(combos):
            _check_generation(tmp_path, files=i in (0, 3), count=30, seed=bits, **kw)


@pytest.mark.slow
def test_quantize_works_for_all_fixed_widths_1_to_64(tmp_path):
    for bits in range(1, 65):
        for signed, frac in ((True, 0), (False, 0), (True, 7), (False, -2), (True, bits + 1)):
            F_ = emul.FixedFormat(bits, frac, signed=signed).name
            combos = (dict(fmt=F_, in_fmt="fp64"), dict(fmt=F_, in_fmt="fp32", rounding="stochastic", sr_bits=9),
                      dict(fmt=F_, in_fmt="int64"), dict(fmt="fp32", in_fmt=F_), dict(fmt="fp64", in_fmt=F_),
                      dict(fmt="e4m3fn", in_fmt=F_, rounding="odd"), dict(fmt="uint64", in_fmt=F_))
            for i, kw in enumerate(combos):
                _check_generation(tmp_path, files=i == 0, count=40, seed=bits, **kw)


def test_wide_fixed_values_are_exact():
    """values() of formats wider than float64: int64 / uint64 integers, Fractions with fraction
    bits; the CSV value columns hold them as exact decimals."""
    v = V.generate("quantize", fmt="int64", in_fmt="uint64", sets="corners")
    assert v.values("x").dtype == np.uint64 and v.values("y").dtype == np.int64
    assert (2**64 - 1) in v.values("x").tolist() and (2**63 - 1) in v.values("y").tolist()
    w = V.generate("quantize", fmt="fp32", in_fmt="fx<64,62>", sets="corners")
    xs = w.values("x")
    assert xs.dtype == object and F(-2) in xs.tolist() and F(2**63 - 1, 2**62) in xs.tolist()
    for x in (F(2**63 - 1, 2**62), F(-(2**63), 2**62), F(1, 2**62), F(5, 1)):
        text = V._value_text(x)
        assert F(text) == x and "e" not in text
    assert V._value_text(F(-3, 8)) == "-0.375" and V._value_text(np.int64(-(2**63))) == str(-(2**63))


def test_quantize_random_inputs_stay_within_the_input_range():
    """Integer inputs into a float target: random vectors pick target ordinals the inputs can
    reach (not mostly the input's clipped ends)."""
    vec = V.generate("quantize", fmt="fp32", in_fmt="int32", sets="random", count=2000)
    x = V._values(vec["x"], "int32")
    ends = np.isin(x, [-(2**31), 2**31 - 1, 0])
    assert ends.mean() < 0.05
    assert len(np.unique(x)) > 1500  # (was about 500: most inputs clipped to 0)


def test_corner_codes_e4m3fn_and_fixed():
    c = V.corner_codes("e4m3fn").tolist()
    for code in (0x00, 0x80, 0x01, 0x81, 0x07, 0x08, 0x38, 0x39, 0x37, 0x7E, 0xFE, 0x7F, 0xFF):
        assert code in c
    assert V.corner_codes("e5m2").tolist().count(0x7C) == 1  # +inf once
    assert set(V.corner_codes("int8").tolist()) >= {0x80, 0x81, 0xFF, 0x00, 0x01, 0x7F, 0x7E}


def test_mac_matches_integer_oracle():
    for overflow in ("saturate", "wrap"):
        vec = V.generate("mac", overflow=overflow, count=300, seed=2)
        sgn = lambda c, bits: int(c) - (1 << bits) if int(c) >> (bits - 1) else int(c)  # noqa: E731
        s = 0
        for first, a, b, acc in vec.codes.tolist():
            s = (0 if first else s) + sgn(a, 8) * sgn(b, 8)
            s = max(-2048, min(2047, s)) if overflow == "saturate" else sgn(s & 0xFFF, 12)
            assert sgn(acc, 12) == s
        sat = np.array([sgn(x, 12) for x in vec["acc"]])
        if overflow == "saturate":  # both bounds are reached
            assert (sat == 2047).any() and (sat == -2048).any()


def test_mac_float_accumulator_steps_are_single_roundings():
    """e4m3fn products into an fp16 accumulator: each step is one fma rounding (s = fma(a, b, s))."""
    from emul import arith

    k = 4
    vec = V.generate("mac", fmt="e4m3fn", acc="fp16", k=k, count=100)
    a, b = V._values(vec["a"], "e4m3fn").reshape(-1, k), V._values(vec["b"], "e4m3fn").reshape(-1, k)
    assert (vec["first"].reshape(-1, k)[:, 0] == 1).all() and (vec["first"].reshape(-1, k)[:, 1:] == 0).all()
    run = np.zeros(a.shape[0])
    for j in range(k):
        run = arith.fma(a[:, j], b[:, j], run, "fp16")
        np.testing.assert_array_equal(emul.encode(run, "fp16"), vec["acc"].reshape(-1, k)[:, j])


def test_nm_matches_sort_oracle():
    for ties in ("low_index", "high_index"):
        vec = V.generate("nm", fmt="int8", n=2, m=4, ties=ties, count=400)
        for row in vec.codes.tolist():
            x = [v - 256 if v >= 128 else v for v in row[:4]]
            order = sorted(range(4), key=lambda i: (-abs(x[i]), i if ties == "low_index" else -i))
            keep = sorted(order[:2])
            assert row[4] == sum(1 << i for i in keep)
            assert row[5:7] == [row[i] for i in keep] and row[7:9] == keep


def test_sr_lfsr_words_are_the_lfsr_stream():
    lf = {"width": 16, "taps": [16, 15, 13, 4], "seed": 0x1234, "kind": "galois", "output": "state"}
    vec = V.generate("quantize", fmt="e4m3fn", in_fmt="fp16", rounding="stochastic", sr_bits=6,
                     random_source="lfsr", lfsr=lf, count=400)
    np.testing.assert_array_equal(vec["u"], er.lfsr(len(vec), r=6, **lf))
    assert vec.settings["lfsr"] == lf


def test_sr_all_words_round_up_with_probability_t():
    """random_source='all': every input with every r-bit word; with sr_method='add' exactly
    t = floor(f * 2**r) of the 2**r words round the magnitude up."""
    r = 3
    vec = V.generate("quantize", fmt="e4m3fn", in_fmt="fp16", rounding="stochastic", sr_bits=r,
                     random_source="all", sets="random", count=200)
    x = vec.values("x").reshape(-1, 1 << r)
    np.testing.assert_array_equal(vec["u"].reshape(-1, 1 << r), np.tile(np.arange(1 << r), (x.shape[0], 1)))
    y = vec.values("y").reshape(-1, 1 << r)
    for xs, ys in zip(x, y):
        v = xs[0]
        if not np.isfinite(v) or abs(v) > 448:
            continue
        lo = abs(emul.quantize(v, "e4m3fn", "toward_zero"))
        hi = abs(emul.quantize(v, "e4m3fn", "away_from_zero"))
        if lo == hi:
            assert (np.abs(ys) == lo).all()
            continue
        t = int(np.floor((abs(v) - lo) / (hi - lo) * (1 << r)))
        assert int((np.abs(ys) == hi).sum()) == t


def test_sr_threefry_words_follow_the_seed():
    kw = dict(fmt="e4m3fn", rounding="stochastic", sr_bits=8, count=100, sets="random")
    a, b, c = (V.generate("quantize", seed=s, **kw) for s in (1, 1, 2))
    np.testing.assert_array_equal(a.codes, b.codes)
    assert not np.array_equal(a["u"], c["u"])
    sr_key = er.fold_in(er.key(1), 1)
    np.testing.assert_array_equal(a["u"], er.bits(sr_key, len(a)) >> 24)


# ------------------------------------------------------------------------------ settings


@pytest.mark.parametrize("op, kw, match", [
    ("mul", dict(fmt="e4m3fn", bogus=1), "bogus=: not a setting"),
    ("quantize", dict(), "fmt=None"),
    ("quantize", dict(fmt="e4m3fn", sr_bits=4), "only used with rounding='stochastic'"),
    ("quantize", dict(fmt="e4m3fn", rounding="stochastic", random_source="all", sr_bits=20), "at most 16"),
    ("quantize", dict(fmt="e4m3fn", rounding="stochastic", random_source="lfsr", sr_bits=20,
                      lfsr={"width": 16}), "r=20"),
    ("quantize", dict(fmt="fp16", in_fmt="fp32", sets="exhaustive"), "MAX_LINES"),
    ("quantize", dict(fmt="fp64", in_fmt="fx<64,1500>"), "in_fmt=fx<64,1500>: its values do not fit float64"),
    ("mul", dict(fmt="e4m3fn", overflow="wrap"), "only for fixed-point"),
    ("mac", dict(rounding="stochastic"), "not supported in mac"),
    ("mac", dict(sets="exhaustive"), "not available for mac"),
    ("nm", dict(n=5, m=4), "n=5"),
    ("frobnicate", dict(), "op='frobnicate'"),
    ("add", dict(fmt="e4m3fn", sets="most"), "sets="),
])
def test_bad_settings_raise(op, kw, match):
    with pytest.raises(ValueError, match=match):
        V.generate(op, **kw)


def test_settings_are_canonical():
    s = V.canonical("mul", fmt="E4M3FN", out_fmt="fp16", sets="random,corners")
    assert s["fmt"] == "e4m3fn" and s["b_fmt"] == "e4m3fn" and s["sets"] == ["corners", "random"]
    assert s["overflow"] == "ieee" and "sr_bits" not in s
    s = V.canonical("quantize", fmt="int8", rounding="stochastic", random_source="lfsr")
    assert s["sr_bits"] == 16 and s["sr_method"] == "add"  # default: the whole 16-bit LFSR state
    assert V.canonical("quantize", fmt="int8", rounding="stochastic")["sr_bits"] == 32
    assert s["lfsr"] == V.LFSR_DEFAULT and s["overflow"] == "saturate"


# ------------------------------------------------------------------------------ command line


def cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def test_cli_writes_what_the_api_writes(tmp_path):
    rc, _, err = cli("vectors", "mac", "--acc", "int12", "--overflow", "saturate", "--k", "16", "--count", "1000",
                     "--seed", "1", "-o", str(tmp_path / "mac.hex"))
    assert rc == 0 and "wrote 17648 vectors (first a b acc)" in err
    api = V.generate("mac", acc="int12", overflow="saturate", k=16, count=1000, seed=1)
    assert (tmp_path / "mac.hex").read_bytes() == api.to_bytes()
    rc, _, _ = cli("vectors", "mul", "--fmt", "e4m3fn", "--out-fmt", "fp16", "--exhaustive", "--csv",
                   "--values", "-o", str(tmp_path / "mul.csv"))
    assert rc == 0
    api = V.generate("mul", fmt="e4m3fn", out_fmt="fp16", sets="exhaustive")
    assert (tmp_path / "mul.csv").read_bytes() == api.to_bytes("csv", values=True)


def test_cli_lfsr_options(tmp_path):
    rc, _, _ = cli("vectors", "quantize", "--in-fmt", "fp16", "--fmt", "e4m3fn", "--rounding", "stochastic",
                   "--sr-bits", "8", "--lfsr-taps", "16,15,13,4", "--lfsr-seed", "7", "--count", "20",
                   "--random", "-o", str(tmp_path / "sr.hex"))
    assert rc == 0
    s = V.read(tmp_path / "sr.hex").settings
    assert s["random_source"] == "lfsr" and s["lfsr"]["taps"] == [16, 15, 13, 4] and s["lfsr"]["seed"] == 7


def test_cli_regenerate_and_check(tmp_path):
    path = tmp_path / "add.hex"
    assert cli("vectors", "add", "--fmt", "e5m2", "--rounding", "up", "--count", "50", "-o", str(path))[0] == 0
    original = path.read_bytes()
    assert cli("vectors", "--check", str(path))[0] == 0
    last = int(original[-2:-1], 16) ^ 1
    path.write_bytes(original[:-2] + format(last, "x").encode() + b"\n")  # corrupt the last expected code
    rc, _, err = cli("vectors", "--check", str(path))
    assert rc == 1 and "DIFFERS" in err
    assert cli("vectors", "--regenerate", str(path))[0] == 0
    assert path.read_bytes() == original


def test_cli_stdout_and_errors():
    rc, out, _ = cli("vectors", "nm", "--fmt", "e2m1fn", "--count", "2", "--random")
    assert rc == 0 and out.startswith("// emul test vectors") and len(out.strip().splitlines()) == 8 + 2
    rc, _, err = cli("vectors", "mul", "--fmt", "nope")
    assert rc == 2 and "emul vectors:" in err and "nope" in err
    rc, _, err = cli("vectors")
    assert rc == 2 and "--regenerate" in err


def test_cli_module_entry_point(tmp_path):
    import subprocess

    out = subprocess.run([sys.executable, "-m", "emul.cli", "vectors", "sub", "--fmt", "e4m3fn", "--count", "3",
                          "--random"], capture_output=True, text=True, check=True).stdout
    assert "// settings: " in out


def test_mac_dot_and_per_step_arith_agree(monkeypatch):
    """The MAC expectations from emul.accumulate.dot equal the per-step emul.arith rule."""
    pytest.importorskip("emul.accumulate")
    for kw in (dict(overflow="saturate", count=200, seed=4), dict(overflow="wrap", count=200, seed=4),
               dict(fmt="e4m3fn", acc="bf16", product="e5m2", k=6, count=100),
               dict(fmt="e5m2", acc="e5m2", rounding="toward_zero", k=6, count=100)):
        with_dot = V.generate("mac", **kw)
        monkeypatch.setattr(V._generate, "_dot", lambda: None)
        per_step = V.generate("mac", **kw)
        monkeypatch.undo()
        np.testing.assert_array_equal(with_dot.codes, per_step.codes)


def test_docs_rtl_examples_run():
    import doctest
    from pathlib import Path

    assert doctest.testmod(V).failed == 0
    doc = Path(__file__).resolve().parents[1] / "docs" / "rtl.md"
    result = doctest.testfile(str(doc), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 10


# -- kernel-free helpers of the cold start: value tables, exact-value encode, NumPy hex writer -------

TABLE_FORMATS = ["e4m3fn", "e5m2", "e4m3fnuz", "e5m2fnuz", "e2m1fn", "e3m2fn", "e2m3fn", "fp16", "bf16",
                 "e4m3-nosub", "int8", "uint8", "fx<12,4>", "int16", "ufx<16,3>", "fx<3,5>"]


def test_value_table_matches_core_decode():
    """Every code of formats up to 16 bits: the table's float64 patterns (NaN signs, -0, inf) are
    emul.decode's, invalid codes are the ones emul.decode rejects, and the vectors' decode raises
    the core's errors."""
    from emul.vectors import _codes as C

    for name in TABLE_FORMATS:
        fmt = emul.format(name)
        vals, bad = C._value_table(fmt)
        codes = np.arange(1 << fmt.bits, dtype=np.uint64)
        ok = ~bad
        assert np.array_equal(vals[ok].view(np.uint64), emul.decode(codes[ok], fmt).view(np.uint64)), name
        for c in codes[bad][:3]:
            with pytest.raises(ValueError):
                emul.decode(c, fmt)
        assert np.array_equal(C.decode(codes[ok], fmt).view(np.uint64), vals[ok].view(np.uint64))
    assert float(C.decode(0x7E, "e4m3fn")) == 448.0 and np.ndim(C.decode(0x7E, "e4m3fn")) == 0
    with pytest.raises(ValueError, match="not a code of e4m3fn"):
        C.decode(np.array([0x100]), "e4m3fn")
    with pytest.raises(ValueError, match="not a code of e4m3-nosub"):
        C.decode(np.array([1]), "e4m3-nosub")


def test_encode_exact_matches_core_encode():
    """encode_exact = emul.encode bit for bit: every value of the format (NaN of both signs, ±inf,
    ±0), values between codes, out of range and below the grid (the core's path), under the
    default and a saturating overflow rule; a NaN into a format without NaN raises as the core."""
    from emul.vectors import _codes as C

    rng = np.random.default_rng(3)
    for name, overflows in (("e5m2", (None, "saturate")), ("e4m3fn", (None, "saturate")), ("e4m3fnuz", (None,)),
                            ("fp16", (None,)), ("int8", (None, "wrap")), ("fx<8,4>", ("saturate",)),
                            ("e2m1fn", (None,))):
        fmt = emul.format(name)
        vals, bad = C._value_table(fmt)
        v = vals[~bad]
        x = np.concatenate([v, [-0.0, 0.0, 1e300, -1e-300, 2.0 ** -40], v * 1.0000001, rng.standard_normal(50)])
        if not np.isnan(v).any():
            x = x[~np.isnan(x)]
        for ovf in overflows:
            if ovf == "wrap":
                x = x[np.isfinite(x)]
            want = emul.encode(x, fmt, overflow=ovf)
            got = C.encode_exact(x, fmt, overflow=ovf)
            assert got.dtype == want.dtype and np.array_equal(got, want), (name, ovf)
    with pytest.raises(ValueError, match="NaN"):
        C.encode_exact(np.array([1.0, np.nan]), "e2m1fn")


def test_numpy_hex_writer():
    """The NumPy writer's lines are each field's lower-case hex digits (low bits), prefix and
    separator, as the format says (the Numba kernel's text; -m slow compares the two)."""
    from emul.vectors import _io

    rng = np.random.default_rng(4)
    codes = rng.integers(0, 2 ** 63, (50, 5), dtype=np.uint64) | np.uint64(1 << 63)
    from emul.vectors._table import Field

    fields = [Field("a", 1), Field("b", 8), Field("c", 10), Field("d", 16), Field("e", 64)]  # bits
    for prefix, sep in ((b"", b"_"), (b"0x", b" ")):
        text = _io._table_text(codes, fields, prefix, sep).decode()
        want = "".join(sep.decode().join(prefix.decode() + f"{int(v) & ((1 << 4 * f.digits) - 1):0{f.digits}x}"
                                         for v, f in zip(row, fields)) + "\n" for row in codes)
        assert text == want


@pytest.mark.slow
def test_numpy_hex_writer_equals_kernel_slow():
    from emul._kernels import hexwrite as HK
    from emul.vectors import _io
    from emul.vectors._table import Field

    rng = np.random.default_rng(5)
    codes = rng.integers(0, 2 ** 64, (3000, 4), dtype=np.uint64)
    fields = [Field("a", 3), Field("b", 13), Field("c", 32), Field("d", 64)]  # bits
    digits = np.array([f.digits for f in fields], np.int64)
    for prefix, sep in ((b"", b"_"), (b"0x", b", ")):
        pre, sp = np.frombuffer(prefix, np.uint8).copy(), np.frombuffer(sep, np.uint8).copy()
        line_len = int(digits.sum()) + pre.size * 4 + sp.size * 3 + 1
        buf = np.empty(codes.shape[0] * line_len, np.uint8)
        HK.write_lines(codes, digits, pre, sp, buf)
        assert bytes(_io._lines_numpy(codes, digits, pre, sp, line_len)) == bytes(buf)
