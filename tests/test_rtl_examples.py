"""The RTL examples (examples/rtl) against emul, under Icarus and Verilator, and proof that the
testbenches can fail.

Every run writes its vectors with `emul vectors` and compares every DUT output with them bit for
bit: the e4m3fn x e4m3fn -> fp16 multiplier on all 65,536 operand pairs, the int8 MAC into an
int12 accumulator on 17,648 steps (1,103 sequences of 16) per overflow rule, and the LFSR-fed
stochastic-rounding cast fx<16,8> -> int8 on all 65,536 inputs (its LFSR word and its result). A test is skipped only
when its simulator (or cocotb) is not installed, with the reason; with EMUL_REQUIRE_SIMULATORS=1
(set by CI) a missing simulator fails instead.
"""

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from emul.cli import main
from emul.vectors import compare

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("emul_rtl_run", ROOT / "examples" / "rtl" / "run.py")
rtl = importlib.util.module_from_spec(_spec)
sys.modules["emul_rtl_run"] = rtl
_spec.loader.exec_module(rtl)

REQUIRE = os.environ.get("EMUL_REQUIRE_SIMULATORS", "") not in ("", "0")


def need(sim, flow):
    why = rtl.unsupported(sim, flow)
    if why is None:
        return
    if REQUIRE and not (sim == "verilator" and flow == "cocotb" and rtl.available("verilator")):
        pytest.fail(f"EMUL_REQUIRE_SIMULATORS is set but {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def build_root(tmp_path_factory):
    return tmp_path_factory.mktemp("rtl")


@pytest.fixture(autouse=True)
def _not_under_pytest_for_cocotb(monkeypatch):
    # cocotb's runner renames its results file and calls sys.exit when it sees pytest
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)


@pytest.fixture(scope="module")
def vectors(build_root):
    """One vector file per example and overflow rule, written once by `emul vectors`."""
    files = {}

    def get(example, overflow="saturate"):
        key = (example, overflow)
        if key not in files:
            files[key] = rtl.write_vectors(rtl.EXAMPLES[example], overflow,
                                           build_root / f"{example}-{overflow}.hex")
        return files[key]

    return get


def run(example, sim, flow, vectors, build_root, *, overflow="saturate", bug=False, file=None, stride=1):
    need(sim, flow)
    path = file or vectors(example, overflow)
    return rtl.run_one(example, sim, flow, overflow=overflow, bug=bug, vectors=path,
                       build_root=build_root / ("bug" if bug else "ok"), stride=stride)


def assert_pass(result, n):
    assert result.passed, result.log[-3000:]
    assert result.vectors == n


# -------------------------------------------------------------------------------- they pass


# Verilator builds C++ (~10 s of CPU per design): by default it runs the mac (the largest design);
# the other two designs' Verilator runs are under slow, their icarus runs are not.
_SIMS = ["icarus", pytest.param("verilator", marks=pytest.mark.slow)]


@pytest.mark.parametrize("sim", _SIMS)
def test_fp8_mul_readmemh_exhaustive(sim, vectors, build_root):
    r = run("fp8_mul", sim, "readmemh", vectors, build_root)
    assert_pass(r, 65536)
    assert "EMUL-TB PASS 65536" in r.log
    # the testbench's output file (the DUT's y per vector) passes `emul vectors compare`
    assert r.output is not None
    assert main(["vectors", "compare", str(vectors("fp8_mul")), str(r.output)]) == 0


@pytest.mark.parametrize("overflow", ["saturate", "wrap"])
def test_mac_readmemh_icarus(overflow, vectors, build_root):
    r = run("mac", "icarus", "readmemh", vectors, build_root, overflow=overflow)
    assert_pass(r, 17648)
    assert compare(vectors("mac", overflow), r.output).ok


def test_mac_readmemh_verilator(vectors, build_root):
    assert_pass(run("mac", "verilator", "readmemh", vectors, build_root), 17648)


@pytest.mark.parametrize("sim", _SIMS)
def test_sr_cast_readmemh_exhaustive(sim, vectors, build_root):
    r = run("sr_cast", sim, "readmemh", vectors, build_root)
    assert_pass(r, 65536)
    c = compare(vectors("sr_cast"), r.output)  # whole vectors x_u_y: the LFSR word and the result
    assert c.ok and c.fields == ("x", "u", "y")


def test_sr_cast_cocotb_icarus(vectors, build_root):
    r = run("sr_cast", "icarus", "cocotb", vectors, build_root)
    assert_pass(r, 65536)
    assert "EMUL-COCOTB checked 65536 conversions, 0 mismatches" in r.log
    c = compare(vectors("sr_cast"), r.output)  # the cocotb testbench's output file, as the $readmemh one's
    assert c.ok and c.fields == ("x", "u", "y")


def test_fp8_mul_cocotb_icarus_exhaustive(vectors, build_root):
    r = run("fp8_mul", "icarus", "cocotb", vectors, build_root)
    assert_pass(r, 65536)
    assert "EMUL-COCOTB checked 65536 vectors, 0 mismatches" in r.log
    assert compare(vectors("fp8_mul"), r.output).ok


@pytest.mark.parametrize("overflow", ["saturate", "wrap"])
def test_mac_cocotb_icarus(overflow, vectors, build_root):
    r = run("mac", "icarus", "cocotb", vectors, build_root, overflow=overflow)
    assert_pass(r, 17648)
    assert "EMUL-COCOTB checked 17648 steps, 0 mismatches" in r.log
    assert compare(vectors("mac", overflow), r.output).ok


def test_cocotb_verilator(vectors, build_root):
    """cocotb + Verilator through the runner API: runs where Verilator >= 5.036."""
    r = run("mac", "verilator", "cocotb", vectors, build_root)
    assert_pass(r, 17648)


# -------------------------------------------------------------------------------- they can fail


def test_fp8_mul_bug_is_caught(vectors, build_root):
    """BUG=1 saturates overflow to 65504 instead of inf: exactly the overflowing products differ."""
    r = run("fp8_mul", "icarus", "readmemh", vectors, build_root, bug=True)
    assert not r.passed
    assert "EMUL-TB FAIL 396 65536" in r.log  # 396 pairs overflow binary16
    assert "y=7bff emul=7c00" in r.log
    c = compare(vectors("fp8_mul"), r.output, show=3)  # the output file tells the same story
    assert not c.ok and c.mismatches == 396 and c.per_field == {"y": 396}
    assert c.per_class["overflow"] == 396 and all(m.expected == 0x7C00 and m.actual == 0x7BFF for m in c.first
                                                  if m.line >= 0 and c.table["y"][m.line] == 0x7C00)


def test_mac_bug_is_caught_by_both_testbenches(vectors, build_root):
    """BUG=1 clamps the negative bound to -2047: caught by $readmemh and by cocotb."""
    r = run("mac", "icarus", "readmemh", vectors, build_root, bug=True)
    assert not r.passed and "EMUL-TB FAIL" in r.log and "emul=800" in r.log
    r = run("mac", "icarus", "cocotb", vectors, build_root, bug=True)
    assert not r.passed and "accumulator values differ from emul" in r.log


def test_sr_cast_bug_is_caught(vectors, build_root):
    """BUG=1 compares the random word instead of adding it (sr_method 'compare' vs 'add'):
    the same probabilities, different bits, so about half of the conversions differ."""
    r = run("sr_cast", "icarus", "readmemh", vectors, build_root, bug=True)
    assert not r.passed
    bad = int(r.log.split("EMUL-TB FAIL ")[1].split()[0])
    assert 20000 < bad < 45000


def test_wrong_overflow_rule_is_caught(vectors, build_root):
    """A saturating MAC checked against wrapping vectors fails (the rule matters at every step)."""
    ex = rtl.EXAMPLES["mac"]
    need("icarus", "readmemh")
    r = rtl.run_readmemh(ex, "icarus", vectors("mac", "wrap"), ex.params("saturate", False),
                         build_root / "mismatch")
    assert not r.passed and "EMUL-TB FAIL" in r.log


def _perturb(src: Path, dst: Path, line_no: int) -> str:
    """Copy a vector file, flipping the last bit of the expected (last) field of one vector line."""
    lines = src.read_text().splitlines(keepends=True)
    data = [i for i, ln in enumerate(lines) if not ln.startswith("//")]
    i = data[line_no]
    text = lines[i].rstrip("\n")
    last = text[-1]
    text = text[:-1] + format(int(last, 16) ^ 1, "x")
    lines[i] = text + "\n"
    dst.write_text("".join(lines))
    return text


@pytest.mark.parametrize("flow", ["readmemh", "cocotb"])
def test_perturbed_expected_value_is_caught(flow, vectors, build_root, tmp_path):
    bad = tmp_path / "fp8_mul-perturbed.hex"
    _perturb(vectors("fp8_mul"), bad, 12345)
    r = run("fp8_mul", "icarus", flow, vectors, build_root, file=bad, stride=1)
    assert not r.passed
    if flow == "readmemh":
        assert "EMUL-TB FAIL 1 65536" in r.log and "MISMATCH line 12345" in r.log
    else:
        assert "1 of 65536 products differ from emul" in r.log


@pytest.mark.slow
def test_fp8_mul_bug_is_caught_by_verilator(vectors, build_root):
    r = run("fp8_mul", "verilator", "readmemh", vectors, build_root, bug=True)
    assert not r.passed and "EMUL-TB FAIL 396 65536" in r.log


def test_runner_reports_cocotb_verilator_limit():
    """The runner names the reason it cannot drive this Verilator with cocotb."""
    if not rtl.available("verilator"):
        pytest.skip("verilator is not installed")
    why = rtl.unsupported("verilator", "cocotb")
    if rtl.verilator_version() >= rtl.COCOTB_VERILATOR_MIN:
        assert why is None or "cocotb is not installed" in why
    else:
        assert "5.036" in why
