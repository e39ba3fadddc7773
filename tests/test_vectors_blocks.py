"""Vectors of block-scaled formats (``emul vectors block_encode`` / ``block_dot``): every line equals
emul.blocks on its own operands (one call per line, and the golden model reference/blocks.py on a
sample of lines), the hand-checked corners are present, files regenerate byte for byte, read back
and compare, and bad settings give clear errors."""

import math

import numpy as np
import pytest

import emul
import emul.blocks as B
import emul.vectors as V
import reference.arith as RA
import reference.blocks as R
from emul.quantize import code_dtype, exact_float32
from emul.cli import main

ENCODE_CASES = [
    dict(fmt="mxfp8_e4m3", count=20),
    dict(fmt="mxfp4", scale_rule="even", count=20, k=7),
    dict(fmt="mxint8", in_fmt="fp64", scale_rule="rceil", scale_overflow="saturate", count=20),
    dict(fmt="mxfp6_e3m2", in_fmt="bf16", rounding="stochastic", sr_bits=8, count=20, k=8),
    dict(fmt="nvfp4", count=20),
    dict(fmt="nvfp4", arithmetic="float32", scale_min=2.0 ** -6, rounding="nearest_away", count=20),
    dict(fmt="nvfp4", arithmetic="float32_te", sets="random", count=20),
    dict(fmt="e2m1fn/e8m0/axis", k=5, scale_rule="ceil", rounding="stochastic", sr_bits=4, random_source="lfsr",
         count=20),
]


def _ids(cases):
    return ["-".join(str(v) for v in c.values())[:60] for c in cases]


def _rows(v, prefix, n):
    return np.stack([v[f"{prefix}{i}"] for i in range(n)], axis=1)


def _encode_kwargs(s):
    kw = dict(rounding=s["rounding"], tail=s["tail"])
    if "scale_rule" in s:
        kw.update(scale_rule=s["scale_rule"], scale_overflow=s["scale_overflow"])
    else:
        kw.update(scale_min=s["scale_min"], arithmetic=s["arithmetic"])
    if s["rounding"] == "stochastic":
        kw.update(sr_bits=s["sr_bits"], sr_method=s["sr_method"])
    return kw


def _scale_kwargs(v, i, ref=False):
    """The line's tensor scale (field t), or with arithmetic='float32_te' TransformerEngine's G (field
    g; s_t = fp32(1/G)), as keyword arguments of emul.blocks.encode (``ref``: of reference.blocks)."""
    if "g" in v.names:
        G = np.uint32(v["g"][i]).view(np.float32)
        if ref:
            return dict(tensor_scale=float(np.float32(1) / G), te_encode_scale=float(G))
        return dict(global_scale=G)
    if "t" in v.names:
        t = np.uint32(v["t"][i]).view(np.float32)
        return dict(tensor_scale=float(t) if ref else t)
    return {}


def _line_inputs(x, s):
    """A line's inputs as emul.blocks takes them: float32 when in_fmt fits it, else float64."""
    return exact_float32(x) if s["in_fmt"] in ("fp32", "bf16", "fp16") else x


@pytest.mark.parametrize("kw", ENCODE_CASES, ids=_ids(ENCODE_CASES))
def test_block_encode_lines_equal_emul_blocks(kw):
    v = V.generate("block_encode", **kw)
    s, k = v.settings, v.settings["k"]
    bfmt = B.format(s["fmt"])
    assert v.names[:k] == tuple(f"x{j}" for j in range(k)) and v.names[-k - 1] == "s"
    assert V.result_fields(v) == ("s",) + tuple(f"y{j}" for j in range(k))
    sr = s["rounding"] == "stochastic"
    xs = np.stack([v.values(f"x{j}") for j in range(k)], axis=1)
    ys, us = _rows(v, "y", k), (_rows(v, "u", k) if sr else None)
    kw_line = _encode_kwargs(s)
    step = max(1, len(v) // 150)  # every line of small tables; a spread of 150 otherwise
    for i in range(0, len(v), step):
        x = _line_inputs(xs[i], s)
        extra = _scale_kwargs(v, i)
        if sr:
            extra["random_bits"] = us[i].astype(np.uint32)
        sc, c = B.encode(x, bfmt, **kw_line, **extra)
        assert int(sc[0]) == int(v["s"][i]), (i, xs[i])
        assert np.array_equal(c.astype(np.uint64), ys[i]), (i, xs[i])
    # the golden model on a few lines
    for i in range(0, len(v), max(1, len(v) // 12)):
        rkw = dict(_encode_kwargs(s))
        rkw.pop("tail")
        rkw.update(_scale_kwargs(v, i, ref=True))
        if sr:
            rkw.update(u=[int(w) for w in us[i]])
            rkw.pop("random_bits", None)
        want_s, want_c = R.encode([float(x) for x in xs[i]], bfmt, **rkw)
        assert want_s == [int(v["s"][i])] and want_c == [int(c) for c in ys[i]], i


def _find(v, s_k, **first):
    """Lines whose leading inputs are the given float values."""
    I = emul.format(v.settings["in_fmt"])
    hit = np.ones(len(v), bool)
    for name, val in first.items():
        hit &= v[name] == np.uint64(int(emul.encode(np.float64(val), I)))
    return np.flatnonzero(hit)


def test_block_encode_hand_checked_corners():
    v = V.generate("block_encode", fmt="mxfp8_e4m3", sets="corners")
    # amax = 0: scale code 0 (2**-127), zero elements, signs kept
    zero = np.flatnonzero((_rows(v, "x", 32) & np.uint64(0x7FFFFFFF) == 0).all(axis=1))
    assert zero.size == 2 and (v["s"][zero] == 0).all()
    assert set(_rows(v, "y", 32)[zero].ravel().tolist()) == {0x00, 0x80}
    # a NaN in a block: scale NaN (0xFF), every element the canonical NaN 0x7F
    nan = np.flatnonzero(np.isnan(v.values("x0")))
    assert nan.size and (v["s"][nan] == 0xFF).all() and (_rows(v, "y", 32)[nan] == 0x7F).all()
    # floor-rule saturation: 960 -> scale 2**1 (code 128), 960 / 2 = 480 -> 448 (0x7E)
    line = _find(v, 32, x0=960.0)
    assert line.size and v["s"][line[0]] == 128 and v["y0"][line[0]] == 0x7E
    # amax a power of two at the top of the scale: 2**127 -> e = 119 (code 246), element 2**8 (0x78)
    line = _find(v, 32, x0=2.0 ** 127)
    assert line.size and v["s"][line[0]] == 246 and v["y0"][line[0]] == 0x78
    # scale overflow needs inputs beyond 2**(127 + 8 + 1): fp64, both settings
    for ovf, scale, y0 in (("nan", 0xFF, 0x7F), ("saturate", 254, 0x7E)):
        w = V.generate("block_encode", fmt="mxfp8_e4m3", in_fmt="fp64", sets="corners", scale_overflow=ovf)
        line = _find(w, 32, x0=2.0 ** 200)
        assert line.size and w["s"][line[0]] == scale and w["y0"][line[0]] == y0, ovf


def test_block_encode_ceil_differs_from_floor_on_the_same_inputs():
    floor = V.generate("block_encode", fmt="mxfp8_e4m3", sets="corners")
    ceil = V.generate("block_encode", fmt="mxfp8_e4m3", sets="corners", scale_rule="ceil")
    assert np.array_equal(_rows(floor, "x", 32), _rows(ceil, "x", 32))
    i = _find(floor, 32, x0=960.0)[0]
    assert floor["s"][i] == 128 and ceil["s"][i] == 129 and ceil["y0"][i] == 0x77  # 960 / 4 = 240


DOT_CASES = [
    dict(fmt="mxfp8_e4m3", count=20),
    dict(fmt="mxint8", acc="fx<24,8>", count=10),
    dict(fmt="e2m1fn/e4m3fn/16", acc="fp16", rounding="stochastic", sr_bits=8, k=48, order="chunked", chunk=2,
         outer="fp32", count=10),
    dict(fmt="nvfp4", k=40, count=10),
]
SLOW_DOT_CASES = [
    dict(fmt="mxfp4", k=64, acc="bf16", order="pairwise", count=10),
    dict(fmt="mxfp8_e5m2", b_fmt="mxfp8_e4m3", k=40, count=10),
    dict(fmt="mxfp6_e2m3", k=100, acc="fp16", rounding="stochastic", sr_bits=6, random_source="lfsr", count=30),
    dict(fmt="nvfp4", b_fmt="e2m1fn/e4m3fn/16", acc="bf16", order="pairwise", rounding="stochastic", sr_bits=7,
         count=30),
    dict(fmt="nvfp4", acc="fx<24,8>", k=20, count=30),
]


@pytest.mark.parametrize("kw", DOT_CASES, ids=_ids(DOT_CASES))
def test_block_dot_lines_equal_emul_blocks_dot(kw):
    _check_block_dot(kw)


@pytest.mark.slow
@pytest.mark.parametrize("kw", SLOW_DOT_CASES, ids=_ids(SLOW_DOT_CASES))
def test_block_dot_lines_equal_emul_blocks_dot_slow(kw):
    _check_block_dot(kw)


def _check_block_dot(kw):
    v = V.generate("block_dot", **kw)
    s, k = v.settings, v.settings["k"]
    A, Bf = B.format(s["fmt"]), B.format(s["b_fmt"])
    nb = 1 if A.block is None else -(-k // A.block)
    assert v.names[:nb] == tuple(f"sa{j}" for j in range(nb)) and v.names[-1] == "y"
    final = emul.format(s["outer"] or s["acc"])
    kw_line = dict(acc=s["acc"], rounding=s["rounding"], overflow=s["overflow"], order=s["order"])
    if s["order"] == "chunked":
        kw_line.update(chunk=s["chunk"], outer=s["outer"])
    sr = s["rounding"] == "stochastic"
    if sr:
        kw_line.update(sr_bits=s["sr_bits"], sr_method=s["sr_method"])
        T = sum(n.startswith("u") for n in v.names)
        us = _rows(v, "u", T)
    sa, a, sb, b = _rows(v, "sa", nb), _rows(v, "a", k), _rows(v, "sb", nb), _rows(v, "b", k)
    ta = v["ta"].astype(np.uint32).view(np.float32) if A.tensor_scale else None
    tb = v["tb"].astype(np.uint32).view(np.float32) if Bf.tensor_scale else None
    assert ("ta" in v.names) == A.tensor_scale and ("tb" in v.names) == Bf.tensor_scale
    lines = np.unique(np.r_[np.arange(min(len(v), 25)), np.linspace(0, len(v) - 1, 15).astype(int)])
    for i in lines:
        opa = (sa[i].astype(code_dtype(A.scale)), a[i].astype(code_dtype(A.element)))
        opb = (sb[i].astype(code_dtype(Bf.scale)), b[i].astype(code_dtype(Bf.element)))
        opa += (ta[i],) if ta is not None else ()
        opb += (tb[i],) if tb is not None else ()
        extra = {"random_bits": us[i].astype(np.uint32)} if sr else {}
        r = B.dot(opa, opb, A, Bf, **kw_line, **extra)
        want = int(emul.encode(np.float64(r), final, overflow=s["overflow"]))
        assert want == int(v["y"][i]), i
        # the golden model: exact block terms, accumulated by reference.arith.dot (finite elements:
        # reference.blocks.block_terms takes NaN but not inf)
        if not (np.isfinite(emul.decode(a[i], A.element)).all() and np.isfinite(emul.decode(b[i], Bf.element)).all()):
            continue
        terms = R.block_terms(([int(c) for c in sa[i]], [int(c) for c in a[i]]),
                              ([int(c) for c in sb[i]], [int(c) for c in b[i]]), A, Bf,
                              None if ta is None else float(ta[i]), None if tb is None else float(tb[i]))
        rkw = {key: val for key, val in kw_line.items() if key not in ("acc", "outer")}
        rkw["outer"] = emul.format(s["outer"]) if s.get("outer") else None
        if sr:
            rkw["u"] = [int(w) for w in us[i]]
        ref = RA.dot(terms, [1] * len(terms), emul.format(s["acc"]), **rkw)
        ref = float(ref) if not isinstance(ref, float) else ref
        assert int(emul.encode(np.float64(ref), final, overflow=s["overflow"])) == int(v["y"][i]) or \
            (math.isnan(ref) and math.isnan(float(emul.decode(v["y"][i], final)))), i


def test_block_dot_keeps_lines_wider_than_float64():
    """Random e5m2 lines whose block sums need more than 53 bits are kept (no line is dropped) and
    equal the golden model (every line checked)."""
    v = V.generate("block_dot", fmt="mxfp8_e5m2", sets="random", count=24)
    assert len(v) == 24
    P, Q = (np.stack([v.values(f"{c}{i}") for i in range(32)], 1)[:, None, :] for c in "ab")
    wide = B._block_terms(P, Q, v.values("sa0")[:, None])[2]
    assert wide.sum() >= 5
    _check_block_dot(dict(fmt="mxfp8_e5m2", sets="random", count=24))


def test_block_dot_nvfp4_lines_carry_tensor_scales():
    """NVFP4 block_dot: fields ta and tb (fp32) after each operand; every corner line appears with
    (ta, tb) = (1, 1), odd 24-bit significands and (2**-149, float32 max); the product of the two
    tensor scales scales the block terms exactly (a hand-checked line)."""
    v = V.generate("block_dot", fmt="nvfp4", sets="corners")
    assert v.names[17] == "ta" and v.names[-2] == "tb" and v.names[-1] == "y"
    ta, tb = (v[n].astype(np.uint32).view(np.float32) for n in ("ta", "tb"))
    pairs = set(zip(ta.tolist(), tb.tolist()))
    assert pairs == {(1.0, 1.0), (float(np.float32(1 / 3)), float(np.float32(5 / 2688))),
                     (2.0 ** -149, float(np.finfo(np.float32).max))}
    # 16 x (6 * 448 * ta) * (6 * 448 * tb) with ta = fp32(1/3), tb = fp32(5/2688): exact product, then fp32
    top = (v["sa0"] == 0x7E) & (v["sb0"] == 0x7E) & (v["a0"] == 7) & (v["b0"] == 7) & (ta < 0.5) & (ta > 0.3)
    assert top.sum() == 1
    want = np.float32(16 * (6 * 448) ** 2 * float(np.float32(1 / 3)) * float(np.float32(5 / 2688)))
    assert int(v["y"][top][0]) == int(want.view(np.uint32))


def test_block_dot_corners_hold_nan_scales_and_overflow():
    v = V.generate("block_dot", fmt="mxfp8_e4m3", sets="corners")
    y = v.values("y")
    assert np.isnan(y[v["sa0"] == 0xFF]).all() and (v["sa0"] == 0xFF).any()
    top = (v["sa0"] == 254) & (v["sb0"] == 254) & (v["a0"] == 0x7E)
    assert top.any() and np.isinf(y[top]).all()  # 2**254 * 448**2 * 32 overflows fp32


@pytest.mark.parametrize("op,kw", [("block_encode", dict(fmt="nvfp4", count=8, rounding="stochastic", sr_bits=5)),
                                   ("block_dot", dict(fmt="mxint8", acc="fx<24,8>", k=40, count=8)),
                                   ("block_dot", dict(fmt="nvfp4", sets="random", count=8))])
def test_files_regenerate_read_and_compare(op, kw, tmp_path):
    v = V.generate(op, **kw)
    hexf, csvf = v.to_hex(tmp_path / "v.hex"), v.to_csv(tmp_path / "v.csv", values=True)
    for f in (hexf, csvf):
        data = f.read_bytes()
        V.regenerate(f, tmp_path / "again")
        assert (tmp_path / "again").read_bytes() == data
        back = V.read(f)
        assert back.names == v.names and np.array_equal(back.codes, v.codes)
    assert V.compare(hexf, hexf).ok
    # a device that gets one result code wrong
    res = V.result_fields(v)
    bad = v.codes[:, [v.names.index(n) for n in res]].copy()
    bad[3, -1] ^= 1
    (tmp_path / "dut.txt").write_text("".join("_".join(f"{int(c):x}" for c in row) + "\n" for row in bad))
    cmp = V.compare(hexf, tmp_path / "dut.txt")
    assert not cmp.ok and cmp.mismatches == 1 and cmp.first[0].line == 3
    assert "expected" in cmp.report()


def test_cli_writes_and_checks(tmp_path, capsys):
    out = tmp_path / "mx.hex"
    assert main(["vectors", "block_encode", "--fmt", "mxfp4", "--scale-rule", "rceil", "--count", "5",
                 "-o", str(out)]) == 0
    assert main(["vectors", "--check", str(out)]) == 0
    head = out.read_text().splitlines()[:8]
    assert any("block_encode fp32 -> mxfp4" in h and "scale_rule rceil" in h for h in head)
    assert main(["vectors", "block_dot", "--fmt", "mxfp8_e4m3", "--k", "40", "--count", "3",
                 "-o", str(tmp_path / "d.hex")]) == 0
    assert main(["vectors", "block_dot", "--fmt", "nvfp4", "--count", "3", "-o", str(tmp_path / "n.hex")]) == 0
    assert main(["vectors", "--check", str(tmp_path / "n.hex")]) == 0


@pytest.mark.parametrize("op,kw,msg", [
    ("block_encode", dict(fmt="mxfp9"), "unknown"),
    ("block_encode", dict(), "need a block format"),
    ("block_encode", dict(fmt="mxfp4", k=33), "at most 32"),
    ("block_encode", dict(fmt="mxfp4", k=0), "between 1 and 32"),
    ("block_encode", dict(fmt="mxfp4", k=8, tail="error"), "short block"),
    ("block_encode", dict(fmt="mxfp4", scale_rule="round"), "scale_rule"),
    ("block_encode", dict(fmt="mxfp4", scale_min=0.5), "only for float scale"),
    ("block_encode", dict(fmt="mxfp4", arithmetic="float32"), "always exact"),
    ("block_encode", dict(fmt="nvfp4", scale_rule="ceil"), "only for power-of-two"),
    ("block_encode", dict(fmt="nvfp4", arithmetic="float32_te", tensor_scale=1.0), "global scale G"),
    ("block_encode", dict(fmt="e2m1fn/e4m3fn/16", arithmetic="float32_te"), "needs a format with a tensor"),
    ("block_encode", dict(fmt="nvfp4", arithmetic="float32", in_fmt="fp64"), "float32 inputs"),
    ("block_encode", dict(fmt="nvfp4", scale_min=0.3), "not a value"),
    ("block_encode", dict(fmt="nvfp4", tensor_scale=-1.0), "positive"),
    ("block_encode", dict(fmt="e2m1fn/e4m3fn/16", tensor_scale=1.0), "has no tensor scale"),
    ("block_encode", dict(fmt="mxfp4", in_fmt="int8"), "float format"),
    ("block_encode", dict(fmt="e4m3fn/e8m0/axis"), "needs k"),
    ("block_encode", dict(fmt="mxfp4", sets="exhaustive"), "exhaustive"),
    ("block_encode", dict(fmt="mxfp4", overflow="saturate"), "not a setting"),
    ("block_encode", dict(fmt="mxfp4", rounding="stochastic", random_source="all"), "random_source='all'"),
    ("block_dot", dict(fmt="nvfp4", b_fmt="mxfp4"), "block sizes differ"),
    ("block_dot", dict(fmt="mxfp4", b_fmt="e2m1fn/e8m0/16"), "block sizes differ"),
    ("block_dot", dict(fmt="mxfp4", order="chunked"), "chunk"),
    ("block_dot", dict(fmt="mxfp4", k=5000), "between 1 and 4096"),
])
def test_bad_settings_raise_clearly(op, kw, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        V.generate(op, **kw)


SLOW_ENCODE = [dict(fmt=p, scale_rule=r, count=50) for p in ("mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e2m3", "mxfp6_e3m2",
                                                              "mxfp4", "mxint8") for r in ("floor", "ceil", "even", "rceil")]
SLOW_ENCODE += [dict(fmt="mxfp8_e4m3", in_fmt="fp64", scale_overflow=o, count=50) for o in ("nan", "saturate")]
SLOW_ENCODE += [dict(fmt="nvfp4", scale_min=m, arithmetic=a, count=50) for m in (0, 2.0 ** -6)
                for a in ("exact", "float32", "float32_div")]
SLOW_ENCODE += [dict(fmt="mxfp4", rounding=m, count=50) for m in ("nearest_away", "toward_zero", "up", "down", "odd")]
SLOW_ENCODE += [dict(fmt="nvfp4", rounding="stochastic", sr_bits=8, sr_method="compare", count=50)]
SLOW_ENCODE += [dict(fmt="nvfp4", arithmetic="float32_te", scale_min=m, count=50) for m in (0, 2.0 ** -6)]


@pytest.mark.slow
@pytest.mark.parametrize("kw", SLOW_ENCODE, ids=_ids(SLOW_ENCODE))
def test_block_encode_every_line_equals_the_reference_slow(kw):
    v = V.generate("block_encode", **kw)
    s, k = v.settings, v.settings["k"]
    bfmt = B.format(s["fmt"])
    xs = np.stack([v.values(f"x{j}") for j in range(k)], axis=1)
    ys = _rows(v, "y", k)
    us = _rows(v, "u", k) if s["rounding"] == "stochastic" else None
    for i in range(len(v)):
        rkw = dict(_encode_kwargs(s))
        rkw.pop("tail")
        rkw.update(_scale_kwargs(v, i, ref=True))
        if us is not None:
            rkw["u"] = [int(w) for w in us[i]]
        want_s, want_c = R.encode([float(x) for x in xs[i]], bfmt, **rkw)
        assert want_s == [int(v["s"][i])] and want_c == [int(c) for c in ys[i]], (i, xs[i])
