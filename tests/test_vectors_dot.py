"""Tests for dot-product vectors (``emul vectors dot``) and the format-adaptive corner sequences of
mac and dot tables: every line equals ``emul.dot`` of its operands (one call per line), files
regenerate byte for byte, saturating fixed-point accumulators get finite corners that saturate."""

import numpy as np
import pytest

import emul
import emul.vectors as V
from emul.cli import main

DOT_CASES = [
    dict(fmt="int8", acc="fx<20,8>", overflow="saturate", k=16, count=30),
    dict(fmt="e5m2", acc="fx<20,8>", overflow="saturate", k=16, count=30),
    dict(fmt="e4m3fn", acc="fp16", k=8, order="chunked", chunk=3, outer="fp32", count=20),
    dict(fmt="e4m3fn", acc="bf16", k=6, rounding="stochastic", sr_bits=6, running=True, count=20),
    dict(fmt="e4m3fn", acc="e4m7", k=8, order="pairwise", product="e5m2", product_rounding="toward_zero", count=20),
    dict(fmt="int8", acc="int12", overflow="wrap", k=5, running=True, count=20, seed=3),
    dict(fmt="e2m1fn", acc="e4m3fn", k=4, rounding="stochastic", sr_bits=4, random_source="lfsr", order="chunked",
         chunk=2, count=20),
    dict(fmt="int8", acc="fx<20,8>", overflow="saturate", k=3, count=20, init="per_vector", running=True),
    dict(fmt="e4m3fn", acc="fp16", k=5, order="chunked", chunk=2, outer="fp32", count=20, init="per_vector"),
    dict(fmt="e4m3fn", acc="bf16", k=4, rounding="stochastic", sr_bits=5, count=20, init=-1.5, running=True),
]


def _line_kwargs(s):
    kw = dict(rounding=s["rounding"], overflow=s["overflow"], order=s["order"], chunk=s["chunk"], outer=s["outer"])
    if s.get("init") is not None and s["init"] != "per_vector":
        kw["init"] = s["init"]
    if s["product"]:
        kw.update(product=s["product"], product_rounding=s["product_rounding"])
    if s["rounding"] == "stochastic":
        kw.update(sr_bits=s["sr_bits"], sr_method=s["sr_method"])
    return kw


@pytest.mark.parametrize("kw", DOT_CASES, ids=[f"{c['fmt']}-{c['acc']}-{c.get('order', 'seq')}" for c in DOT_CASES])
def test_dot_vectors_equal_emul_dot_on_every_line(kw, tmp_path):
    v = V.generate("dot", **kw)
    s, k = v.settings, v.settings["k"]
    final = s["outer"] or s["acc"]
    assert v.names[:2 * k] == tuple(f"a{j}" for j in range(k)) + tuple(f"b{j}" for j in range(k))
    assert v.names[-1] == "y" and v.field("y").fmt == emul.format(final).name
    a = np.stack([v.values(f"a{j}") for j in range(k)], axis=1)
    b = np.stack([v.values(f"b{j}") for j in range(k)], axis=1)
    sr = s["rounding"] == "stochastic"
    T = emul.accumulate.sr_steps(k, s["order"], s["chunk"])
    u = np.stack([v[f"u{j}"] for j in range(T)], axis=1) if sr else None
    assert sr == ("u0" in v.names)
    if s["random_source"] == "lfsr" if sr else False:  # consecutive LFSR words, a line's T words in step order
        np.testing.assert_array_equal(u.reshape(-1), emul.random.lfsr(len(v) * T, r=s["sr_bits"], **s["lfsr"]))
    kwl = _line_kwargs(s)
    assert ("init" in v.names) == (s.get("init") == "per_vector")
    for i in range(len(v)):  # one emul.dot call per line: the independent expectation
        extra = {"random_bits": u[i]} if sr else {}
        if "init" in v.names:
            extra["init"] = v.values("init")[i]
        want = emul.dot(a[i], b[i], s["acc"], **kwl, **extra)
        assert v["y"][i] == emul.encode(want, final, overflow=s["overflow"]), (i, a[i], b[i])
        if s["running"]:
            for j in range(k):
                extra = {"random_bits": u[i, : j + 1]} if sr else {}
                if "init" in v.names:
                    extra["init"] = v.values("init")[i]
                step = emul.dot(a[i, : j + 1], b[i, : j + 1], s["acc"], **kwl, **extra)
                assert v[f"s{j}"][i] == emul.encode(step, s["acc"], overflow=s["overflow"])
    # regenerable byte for byte from the header, hex and CSV
    for name in ("d.hex", "d.csv"):
        path = v.write(tmp_path / name)
        again = V.regenerate(path, tmp_path / ("re-" + name))
        assert again.read_bytes() == path.read_bytes()
        np.testing.assert_array_equal(V.read(path).codes, v.codes)


def test_dot_cli_check_and_regenerate(tmp_path, capsys):
    out = tmp_path / "dot.hex"
    assert main(["vectors", "dot", "--fmt", "e5m2", "--acc", "fx<20,8>", "--k", "16", "--count", "50", "--order",
                 "chunked", "--chunk", "4", "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().err
    assert main(["vectors", "--check", str(out)]) == 0
    v = V.read(out)
    assert v.settings["order"] == "chunked" and v.settings["chunk"] == 4
    np.testing.assert_array_equal(v.codes, V.generate("dot", **{k: x for k, x in v.settings.items() if k != "op"}).codes)


def test_fx20_8_saturating_corners_exist_and_saturate():
    acc = emul.format("fx<20,8>")
    for fmt in ("e5m2", "int8", "e4m3fn"):
        v = V.generate("dot", fmt=fmt, acc=acc, overflow="saturate", k=16, sets="corners", running=True)
        F = emul.format(fmt)
        a = np.stack([v.values(f"a{j}") for j in range(16)], axis=1)
        b = np.stack([v.values(f"b{j}") for j in range(16)], axis=1)
        assert np.isfinite(a).all() and np.isfinite(b).all()  # finite corners: no NaN/inf into fixed point
        s = np.stack([v.values(f"s{j}") for j in range(16)], axis=1)
        lo = F.min if isinstance(F, emul.FixedFormat) else -F.max
        down = lo * F.max
        run = (a == F.max).all(axis=1) & (b == F.max).all(axis=1)
        assert run.any() and (v.values("y")[run] == acc.max).all()  # max·max runs sit at the bound
        # saturate, then come back: max·max for 8 steps, then min·max
        updown = (a[:, :8] == F.max).all(axis=1) & (a[:, 8:] == lo).all(axis=1) & (b == F.max).all(axis=1)
        assert updown.sum() == 1
        i = np.flatnonzero(updown)[0]
        assert s[i, 7] == acc.max and s[i, 8] == max(acc.max + down, acc.min)
        alternating = (a[:, 0::2] == F.max).all(axis=1) & (a[:, 1::2] == lo).all(axis=1) & (b == F.max).all(axis=1)
        assert alternating.sum() == 1
        i = np.flatnonzero(alternating)[0]
        assert s[i, 0] == acc.max and (s[i, 2::2] == acc.max).all()  # back at the bound after every up step


def test_ties_at_the_accumulator_lsb():
    """e4m3fn products can form half of fp16's spacing at 1.0 (2**-11): 1 + h + h … rounds to even."""
    v = V.generate("dot", fmt="e4m3fn", acc="fp16", k=4, sets="corners", running=True)
    p = np.stack([v.values(f"a{j}") * v.values(f"b{j}") for j in range(4)], axis=1)
    h = 2.0 ** -11
    tie = (p[:, 0] == 1) & (p[:, 1:] == h).all(axis=1)
    assert tie.sum() == 1
    i = np.flatnonzero(tie)[0]
    assert [v.values(f"s{j}")[i] for j in range(4)] == [1.0, 1.0, 1.0, 1.0]  # every step a tie to even
    fx = V.generate("dot", fmt="e4m3fn", acc="fx<20,8>", k=4, sets="corners")
    p = np.stack([fx.values(f"a{j}") * fx.values(f"b{j}") for j in range(4)], axis=1)
    assert ((p == 2.0 ** -9).all(axis=1)).any() and ((p == -(2.0 ** -9)).all(axis=1)).any()


def test_mac_takes_finite_corners_into_fixed_point():
    """inf operands (e5m2) cannot go into a fixed-point accumulator: the corners stay finite."""
    v = V.generate("mac", fmt="e5m2", acc="fx<20,8>", count=10)
    assert np.isfinite(v.values("a")).all() and np.isfinite(v.values("b")).all()
    assert (v.values("acc") == emul.format("fx<20,8>").max).any()
    kept = V.generate("mac", fmt="e5m2", acc="fp32", count=0)
    assert np.isinf(kept.values("a")).any()  # a float accumulator with NaN and inf still gets them


@pytest.mark.parametrize("kw, match", [
    (dict(order="chunked"), "needs a chunk size"),
    (dict(chunk=4), "only used with order='chunked'"),
    (dict(running=True, order="pairwise"), "running sums are the steps of order='sequential'"),
    (dict(rounding="stochastic", random_source="all"), "not available for dot vectors"),
    (dict(sets="exhaustive"), "not available for dot vectors"),
    (dict(product="e4m3fn", product_rounding="stochastic"), "product_rounding='stochastic'"),
    (dict(order="diagonal"), "order='diagonal'"),
])
def test_dot_bad_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        V.generate("dot", **kw)


def test_exhaustive_count_is_the_real_count():
    v = V.generate("mul", fmt="e2m1fn", sets="exhaustive")
    assert v.settings["count"] == len(v) == 256
    assert "count 256" in V.describe(v.settings)


def test_per_vector_init_corners_start_at_the_bounds():
    """init="per_vector": every corner value of the accumulator starts runs of zero, max·max and
    -max·max products; a zero run returns the init itself, a max·max run from the lower bound climbs."""
    acc = emul.format("fx<20,8>")
    v = V.generate("dot", fmt="int8", acc=acc, overflow="saturate", k=4, sets="corners", init="per_vector")
    init, y = v.values("init"), v.values("y")
    a = np.stack([v.values(f"a{j}") for j in range(4)], axis=1)
    assert {acc.min, acc.max, -acc.lsb, acc.lsb} <= set(init.tolist())
    zero = (a == 0).all(axis=1)
    assert set(init[zero].tolist()) >= {acc.min, acc.max} and (y[zero] == init[zero]).all()
    up = (a == 127).all(axis=1) & (init == acc.min)
    assert up.any() and (y[up] == min(acc.min + 4 * 127 * 127, acc.max)).all()
    assert v.settings["count"] == len(v) and len(np.unique(v.codes, axis=0)) == len(v)


def test_mac_init(tmp_path):
    """mac with init: a constant in the header only, or an init field (the sequence's value on
    each line); every step equals emul.dot of the prefix from that init; files regenerate."""
    for init in (-3.0, "per_vector"):
        m = V.generate("mac", fmt="int8", acc="int12", overflow="saturate", k=3, count=10, init=init)
        k, n = 3, len(m) // 3
        assert ("init" in m.names) == (init == "per_vector")
        a, b = m.values("a").reshape(n, k), m.values("b").reshape(n, k)
        start = m.values("init").reshape(n, k) if init == "per_vector" else np.full((n, k), init)
        assert (start == start[:, :1]).all()
        for j in range(k):
            want = [emul.dot(a[i, : j + 1], b[i, : j + 1], "int12", overflow="saturate", init=start[i, 0])
                    for i in range(n)]
            np.testing.assert_array_equal(m.values("acc").reshape(n, k)[:, j], want)
        path = m.write(tmp_path / "m.hex")
        assert V.regenerate(path, tmp_path / "re.hex").read_bytes() == path.read_bytes()


def test_init_option_and_bad_values(tmp_path, capsys):
    out = tmp_path / "dot.hex"
    assert main(["vectors", "dot", "--fmt", "int8", "--acc", "fx<20,8>", "--k", "4", "--count", "5", "--init",
                 "-2.5", "-o", str(out)]) == 0
    v = V.read(out)
    assert v.settings["init"] == -2.5 and "init" not in v.names and "init -2.5" in out.read_text()
    assert main(["vectors", "--check", str(out)]) == 0
    assert main(["vectors", "dot", "--k", "4", "--count", "5", "--init", "per_vector", "-o", str(out)]) == 0
    assert "init" in V.read(out).names and main(["vectors", "--check", str(out)]) == 0
    assert "init" not in V.generate("dot", k=2, count=1).settings  # the default is not recorded
    for bad, match in ((0.3, "not representable"), (float("nan"), "must be finite"), ("one", "must be a number"),
                       (1e9, "not representable")):
        with pytest.raises(ValueError, match=match):
            V.generate("dot", acc="fx<20,8>", k=2, count=1, init=bad)
    capsys.readouterr()
