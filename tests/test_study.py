"""Tests for emul.study: sweep records equal a direct computation (emul.dot per row, exact sums
by Fractions, swamped steps counted one addition at a time), the grid and labels are as asked, the
plot is a PNG, bad grids fail clearly."""

import io
from contextlib import redirect_stderr
from fractions import Fraction

import numpy as np
import pytest

import emul
from emul import study


def _direct(acc, overflow, mode, bits, order, chunk, k, vectors, seed=0, dist="normal"):
    """One record computed the slow, obvious way."""
    rng = np.random.default_rng(seed + k)
    draw = study.DISTRIBUTIONS[dist]
    a = emul.quantize(draw(rng, (vectors, k)), "e4m3fn")
    b = emul.quantize(draw(rng, (vectors, k)), "e4m3fn")
    T = emul.accumulate.sr_steps(k, order, chunk or None)
    words = emul.random.bits(emul.random.key(seed), (vectors, T)) >> (32 - bits) if bits else None
    got, exact = [], []
    swamped = steps = 0
    for r in range(vectors):
        sr = {"sr_bits": bits, "random_bits": words[r]} if bits else {}
        got.append(float(emul.dot(a[r], b[r], acc, overflow=overflow, order=order, chunk=chunk or None,
                                  rounding=mode, **sr)))
        exact.append(float(sum(Fraction(x) * Fraction(y) for x, y in zip(a[r], b[r]))))
        if order == "sequential":  # count swamped steps one addition at a time
            s = 0.0
            for j in range(k):
                p = a[r, j] * b[r, j]
                w = {"sr_bits": bits, "random_bits": words[r, j]} if bits else {}
                t = float(emul.add(s, p, acc, rounding=mode, overflow=overflow, **w))
                swamped += t == s and p != 0
                steps += 1
                s = t
            assert s == got[-1]
    got, exact = np.array(got), np.array(exact)
    err = np.linalg.norm(got - exact) / np.linalg.norm(exact)
    bias = np.sum(got - exact) / np.sum(np.abs(exact))
    return err, bias, (swamped / steps if steps else None)


def test_sweep_equals_a_direct_computation():
    r = study.sweep(["bf16", ("fx<12,4>", "wrap")], k=[8, 24], order=["sequential", ("chunked", 5), "pairwise"],
                    rounding=["nearest_even", ("stochastic", 5)], vectors=6)
    assert len(r) == 2 * 2 * 3 * 2
    assert r[0]["acc"] == "bf16" and r[0]["overflow"] == "ieee" and r[-1]["acc"] == "fx<12,4>"
    assert set(r["overflow"].tolist()) == {"ieee", "wrap"} and set(r["sr_bits"].tolist()) == {0, 5}
    for rec in r:
        err, bias, swamped = _direct(str(rec["acc"]), str(rec["overflow"]), str(rec["rounding"]), int(rec["sr_bits"]),
                                     str(rec["order"]), int(rec["chunk"]), int(rec["k"]), 6)
        assert rec["rel_error"] == pytest.approx(err, rel=1e-12, abs=1e-300)
        assert rec["bias"] == pytest.approx(bias, rel=1e-9, abs=1e-15)
        if swamped is not None:
            assert rec["swamped"] == swamped
        assert rec["steps"] == 6 * emul.accumulate.sr_steps(int(rec["k"]), str(rec["order"]), int(rec["chunk"]) or None)


def test_grid_order_distributions_and_callables():
    r = study.sweep("fp16", k=16, distribution=["uniform", ("halves", lambda rng, shape: np.full(shape, 0.5))],
                    vectors=4)
    assert r["distribution"].tolist() == ["uniform", "halves"]
    assert r[1]["rel_error"] == 0 and r[1]["swamped"] == 0  # 16 x 0.25 is exact in fp16


def test_plot_writes_a_png(tmp_path):
    r = study.sweep(["bf16", "fp16"], k=[16, 32], vectors=4)
    out = study.plot(r, tmp_path / "sub" / "study.png", title="t")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    assert "bf16 sequential" in study.table(r) and "k=32" in study.table(r)


def test_progress_bar(tmp_path):
    err = io.StringIO()
    with redirect_stderr(err):
        study.sweep("bf16", k=[8, 16], vectors=2, progress=True)
    assert "emul.study" in err.getvalue()


@pytest.mark.parametrize("kw, match", [
    (dict(order="chunked"), "a chunk size goes with 'chunked'"),
    (dict(order=("pairwise", 4)), "a chunk size goes with 'chunked'"),
    (dict(rounding=("stochastic", 40)), "sr_bits=40"),
    (dict(rounding="nearest_even:4"), "random bits only go with 'stochastic'"),
    (dict(distribution="cauchy"), "distribution='cauchy'"),
    (dict(vectors=0), "vectors=0"),
    (dict(k=[0]), "every length"),
    (dict(acc="e4m3fnn"), "e4m3fnn"),
])
def test_bad_grids(kw, match):
    args = {"acc": "bf16", "k": 8, "vectors": 2, **kw}
    with pytest.raises(ValueError, match=match):
        study.sweep(args.pop("acc"), **args)
