"""Tests for emul.vectors.compare and `emul vectors compare`: exactly the injected mismatches are
found (a flipped bit; a NaN with another payload under both NaN policies), per field and per operand
class, in every layout a testbench may write; bad files fail clearly; the exit status says it."""

from contextlib import redirect_stdout
import io

import numpy as np
import pytest

import emul.vectors as V
from emul.cli import main


@pytest.fixture(scope="module")
def mul():
    """e5m2 products (corners + random): the corners hold NaN results; the file and the table."""
    return V.generate("mul", fmt="e5m2", count=500)


def _injected(table, field="y"):
    """Result codes with two injected faults: line 7 with its lowest bit flipped, and the first NaN
    line with another NaN code (other payload)."""
    y = table[field].copy()
    flip = 7
    y[flip] ^= np.uint64(1)
    nan_line = int(np.flatnonzero(np.isnan(table.values(field)))[0])
    other = 0x7F if int(y[nan_line]) != 0x7F else 0x7E  # e5m2 NaNs: 0x7d..0x7f, 0xfd..0xff
    y[nan_line] = other
    return y, flip, nan_line


@pytest.mark.parametrize("layout", ["results", "results-0x", "whole", "csv-named", "whole-nosep", "commented"])
def test_finds_exactly_the_injected_mismatches(mul, layout, tmp_path):
    y, flip, nan_line = _injected(mul)
    a, b = mul["a"], mul["b"]
    if layout == "results":
        text = "".join(f"{int(c):02x}\n" for c in y)
    elif layout == "results-0x":
        text = "".join(f"0x{int(c):02X}\n" for c in y)
    elif layout == "whole":
        text = "".join(f"{int(p):02x} {int(q):02x} {int(c):02x}\n" for p, q, c in zip(a, b, y))
    elif layout == "whole-nosep":
        text = "".join(f"{int(p):02x}{int(q):02x}{int(c):02x}\n" for p, q, c in zip(a, b, y))
    elif layout == "csv-named":
        text = "y,a\n" + "".join(f"0x{int(c):02x},0x{int(p):02x}\n" for p, c in zip(a, y))
    else:
        text = "// DUT output\n\n" + "".join(f"{int(c):02x}  // line\n" for c in y)
    dut = tmp_path / "dut.txt"
    dut.write_text(text)
    exp = mul.to_hex(tmp_path / "mul.hex")
    exact = V.compare(exp, dut, nan="exact")
    assert not exact.ok and exact.mismatched_lines.tolist() == sorted([flip, nan_line])
    assert exact.per_field["y"] == 2 and sum(exact.per_field.values()) == 2
    assert exact.per_class["nan"] == 1
    assert {(m.line, m.field) for m in exact.first} == {(flip, "y"), (nan_line, "y")}
    anynan = V.compare(exp, dut, nan="any")
    assert anynan.mismatched_lines.tolist() == [flip] and anynan.per_field["y"] == 1
    assert anynan.first[0].actual == int(mul["y"][flip]) ^ 1 and anynan.first[0].expected == int(mul["y"][flip])


def test_report_decodes_operands(mul, tmp_path):
    y, flip, _ = _injected(mul)
    dut = tmp_path / "dut.hex"
    dut.write_text("".join(f"{int(c):02x}\n" for c in y))
    text = V.compare(mul, dut, nan="any").report()
    a, b = mul["a"][flip], mul["b"][flip]
    assert f"line {flip}: a=0x{int(a):02x} (" in text and f"b=0x{int(b):02x} (" in text
    assert f"y: expected 0x{int(mul['y'][flip]):02x}" in text and "mismatches per field: y 1" in text


def test_unknown_codes_and_missing_lines(mul, tmp_path):
    lines = [f"{int(c):02x}" for c in mul["y"]]
    lines[3] = "xx"
    dut = tmp_path / "dut.hex"
    dut.write_text("\n".join(lines[:-1]) + "\n")
    c = V.compare(mul, dut)
    assert not c.ok and c.mismatched_lines.tolist() == [3] and c.first[0].actual is None
    assert c.lines == len(mul) - 1 and "the actual output has" in c.problems[0]


def test_whole_vectors_file_and_dot_fields(tmp_path):
    dot = V.generate("dot", fmt="e4m3fn", acc="bf16", k=4, running=True, count=30)
    assert V.result_fields(dot) == ("s0", "s1", "s2", "s3", "y")
    assert V.compare(dot, dot.write(tmp_path / "same.csv")).ok  # an emul file as the actual side
    codes = dot.codes.copy()
    codes[5, dot.names.index("s2")] ^= np.uint64(1 << 3)
    got = V.Vectors(dot.settings, dot.fields, codes)
    c = V.compare(dot, got)
    assert c.mismatched_lines.tolist() == [5] and c.per_field["s2"] == 1 and sum(c.per_field.values()) == 1
    only_y = V.compare(dot, got, fields=["y"])
    assert only_y.ok and only_y.fields == ("y",)


def test_ties_are_a_class():
    v = V.generate("quantize", fmt="e2m1fn", count=0, sets="corners")
    x = v.values("x")
    tie_line = int(np.flatnonzero(x == 1.25)[0])  # halfway between 1 and 1.5
    codes = v.codes.copy()
    codes[tie_line, -1] ^= np.uint64(1)
    c = V.compare(v, V.Vectors(v.settings, v.fields, codes))
    assert c.per_class["tie"] == 1 and c.mismatched_lines.tolist() == [tie_line]


def test_cli_exit_status(mul, tmp_path):
    exp = mul.to_hex(tmp_path / "mul.hex")
    good, bad = tmp_path / "good.hex", tmp_path / "bad.hex"
    good.write_text("".join(f"{int(c):02x}\n" for c in mul["y"]))
    y, flip, _ = _injected(mul)
    bad.write_text("".join(f"{int(c):02x}\n" for c in y))
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["vectors", "compare", str(exp), str(good)]) == 0
        assert main(["vectors", "compare", str(exp), str(bad), "--nan", "any"]) == 1
        assert main(["vectors", "compare", str(exp), str(bad), "--show", "1"]) == 1
    text = out.getvalue()
    assert "all match" in text and "1 mismatching vector(s)" in text and "2 mismatching vector(s)" in text
    assert main(["vectors", "compare", str(exp)]) == 2  # one file: a usage error
    (tmp_path / "junk.hex").write_text("1 2 3 4 5\n")
    assert main(["vectors", "compare", str(exp), str(tmp_path / "junk.hex")]) == 2


def test_bad_arguments(mul, tmp_path):
    with pytest.raises(ValueError, match="nan='some'"):
        V.compare(mul, mul, nan="some")
    f = tmp_path / "cols.csv"
    f.write_text("y,zz\n0x00,0x00\n")
    with pytest.raises(ValueError, match="'zz' is not a field"):
        V.compare(mul, f)
