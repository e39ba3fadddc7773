"""Run the RTL examples against emul: write vectors with `emul vectors`, then simulate.

Examples: ``fp8_mul`` (e4m3fn x e4m3fn -> fp16, RNE; all 65,536 pairs), ``mac`` (int8 x int8 into
an int12 accumulator, SAT or WRAP; 17,648 steps), ``sr_cast`` (fx<16,8> -> int8 stochastic rounding
fed by a 16-bit LFSR; all 65,536 inputs). Two testbench flows per example, each comparing every DUT
output with emul bit for bit:

* ``readmemh``: a plain Verilog testbench (``tb_*.v``) loads the vector file with ``$readmemh``;
  Icarus (``iverilog``/``vvp``) or Verilator (``verilator --binary``). Fast: the whole
  exhaustive multiplier in about a second. It also writes the DUT's results to
  ``dut_out.hex`` in the build directory (``+out=FILE``), which
  ``emul vectors compare VECTORS dut_out.hex`` checks independently of the testbench.
* ``cocotb``: a Python testbench (``cocotb_*.py``) drives the DUT through cocotb's runner API
  (``cocotb_tools.runner``), reading the same file (or generating vectors in-process).

Every (example, simulator, flow, parameters) gets its own build directory under ``--build``.

    python examples/rtl/run.py                         # both examples, icarus, both flows
    python examples/rtl/run.py --sim verilator --flow readmemh
    python examples/rtl/run.py --example mac --overflow wrap
    python examples/rtl/run.py --example fp8_mul --bug  # inject the RTL defect: must FAIL
    python examples/rtl/run.py --example sr_cast        # the LFSR-fed stochastic-rounding unit

Exit status 0 when every run passed. Prints one line per run: ``PASS``/``FAIL``, vectors, time.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIMULATORS = ("icarus", "verilator")
FLOWS = ("readmemh", "cocotb")


@dataclass(frozen=True)
class Example:
    name: str
    folder: str
    rtl: tuple
    top: str
    tb: str
    tb_top: str
    cocotb_module: str
    depth: int

    def vector_args(self, overflow: str) -> list[str]:
        """The `emul vectors` command line (after `vectors`) of this example's golden vectors."""
        if self.name == "fp8_mul":
            return ["mul", "--fmt", "e4m3fn", "--out-fmt", "fp16", "--exhaustive"]
        if self.name == "sr_cast":
            return ["quantize", "--in-fmt", "fx<16,8>", "--fmt", "int8", "--rounding", "stochastic", "--sr-bits", "8",
                    "--random-source", "lfsr", "--lfsr-seed", "44257", "--exhaustive"]
        return ["mac", "--fmt", "int8", "--acc", "int12", "--overflow", overflow, "--k", "16",
                "--count", "1000", "--seed", "1"]

    def params(self, overflow: str, bug: bool) -> dict:
        p = {"BUG": int(bug)}
        if self.name == "mac":
            p.update(ACC_W=12, SAT=int(overflow == "saturate"))
        return p


EXAMPLES = {
    "fp8_mul": Example("fp8_mul", "fp8mul", ("fp8_mul.v",), "fp8_mul", "tb_fp8_mul.v", "tb_fp8_mul",
                       "cocotb_fp8_mul", 1 << 17),
    "mac": Example("mac", "mac", ("mac_int8.v",), "mac_int8", "tb_mac.v", "tb_mac", "cocotb_mac", 1 << 15),
    "sr_cast": Example("sr_cast", "srcast", ("sr_cast.v",), "sr_cast", "tb_sr_cast.v", "tb_sr_cast", "cocotb_sr_cast",
                       1 << 17),
}


@dataclass
class Result:
    example: str
    sim: str
    flow: str
    params: dict
    passed: bool
    vectors: int
    seconds: float
    log: str = field(repr=False, default="")
    output: Path | None = None  # the DUT's results, one line per vector (emul vectors compare)

    def line(self) -> str:
        p = ",".join(f"{k}={v}" for k, v in self.params.items())
        return (f"{'PASS' if self.passed else 'FAIL'}  {self.example:8s} {self.sim:9s} {self.flow:8s} "
                f"{p:22s} {self.vectors:7d} vectors  {self.seconds:6.1f} s")


COCOTB_VERILATOR_MIN = (5, 36)  # cocotb 2.x's Verilator main loop needs VerilatedVpi::evalNeeded (5.036)


def available(sim: str) -> bool:
    """Whether a simulator's executables are on PATH."""
    return all(shutil.which(x) for x in (("iverilog", "vvp") if sim == "icarus" else ("verilator",)))


def verilator_version() -> tuple:
    """(major, minor) of the Verilator on PATH, or () when there is none."""
    if not shutil.which("verilator"):
        return ()
    out = subprocess.run(["verilator", "--version"], stdout=subprocess.PIPE, text=True).stdout
    m = re.search(r"Verilator (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else ()


def unsupported(sim: str, flow: str) -> str | None:
    """Why (sim, flow) cannot run here, or None when it can."""
    if not available(sim):
        return f"{sim} is not installed (Debian: apt-get install -y {'iverilog' if sim == 'icarus' else 'verilator'})"
    if flow == "cocotb":
        try:
            import cocotb_tools.runner  # noqa: F401
        except ImportError:
            return "cocotb is not installed (pip install cocotb==2.1.0)"
        if sim == "verilator":
            v = verilator_version()
            if v < COCOTB_VERILATOR_MIN:
                found = ".".join(f"{x:03d}" if i else str(x) for i, x in enumerate(v)) or "?"
                return (f"cocotb 2.x drives Verilator >= 5.036 only (its verilator.cpp calls "
                        f"VerilatedVpi::evalNeeded); found Verilator {found}. The $readmemh flow runs instead.")
    return None


def write_vectors(example: Example, overflow: str, path: Path) -> Path:
    """Write the example's vectors with the `emul vectors` command (in-process)."""
    from emul.cli import main

    path.parent.mkdir(parents=True, exist_ok=True)
    rc = main(["vectors", *example.vector_args(overflow), "-o", str(path)])
    if rc:
        raise RuntimeError(f"emul vectors failed with status {rc}")
    return path


def vector_count(path: Path) -> int:
    """The number of vector lines, from the file's `lines:` header entry."""
    with open(path) as fh:
        for line in fh:
            if not line.startswith(("//", "#")):
                break
            m = re.match(r"(?://|#) lines: (\d+)", line)
            if m:
                return int(m.group(1))
    raise ValueError(f"{path}: no 'lines:' entry in the header")


def build_dir(root: Path, example: Example, sim: str, flow: str, params: dict) -> Path:
    tag = "-".join(f"{k}{v}" for k, v in sorted(params.items()))
    return root / f"{example.name}-{sim}-{flow}-{tag}"


def _run(cmd, cwd, timeout=600) -> tuple[int, str]:
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    return proc.returncode, proc.stdout


def run_readmemh(example: Example, sim: str, vectors: Path, params: dict, bdir: Path) -> Result:
    """Build the $readmemh testbench and run it on a vector file."""
    t0 = time.perf_counter()
    bdir.mkdir(parents=True, exist_ok=True)
    n = vector_count(vectors)
    build_params = {**params, "DEPTH": max(example.depth, n)}
    sources = [str(HERE / example.folder / example.tb)] + [str(HERE / example.folder / f) for f in example.rtl]
    output = bdir / "dut_out.hex"
    plusargs = [f"+vectors={vectors.resolve()}", f"+count={n}", f"+out={output.resolve()}"]
    if sim == "icarus":
        build = ["iverilog", "-g2005", "-Wall", "-s", example.tb_top, "-o", str(bdir / "tb.vvp")]
        build += [f"-P{example.tb_top}.{k}={v}" for k, v in build_params.items()] + sources
        run = ["vvp", "-n", str(bdir / "tb.vvp"), *plusargs]
    else:
        build = ["verilator", "--binary", "--timing", "-Wall", "-Wno-fatal", "--top-module", example.tb_top,
                 "-Mdir", str(bdir / "obj"), "-o", "tb", *[f"-G{k}={v}" for k, v in build_params.items()], *sources]
        run = [str(bdir / "obj" / "tb"), *plusargs]
    rc, log = _run(build, bdir)
    if rc == 0:
        rc, out = _run(run, bdir)
        log += out
    passed = rc == 0 and f"EMUL-TB PASS {n}" in log
    (bdir / "run.log").write_text(log)
    return Result(example.name, sim, "readmemh", params, passed, n, time.perf_counter() - t0, log,
                  output if output.exists() else None)


def run_cocotb(example: Example, sim: str, vectors: Path, params: dict, bdir: Path, stride: int = 1) -> Result:
    """Build the DUT with cocotb's runner and run the cocotb testbench on a vector file
    (``stride`` > 1: the multiplier checks every stride-th vector only)."""
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    t0 = time.perf_counter()
    n = vector_count(vectors)
    folder = str(HERE / example.folder)
    if folder not in sys.path:  # the runner hands sys.path to the simulator's Python
        sys.path.insert(0, folder)
    runner = get_runner(sim)
    log = ""
    results = bdir / "results.xml"
    output = bdir / "dut_out.hex"
    output.unlink(missing_ok=True)
    try:
        runner.build(sources=[HERE / example.folder / f for f in example.rtl], hdl_toplevel=example.top,
                     parameters=params, build_dir=bdir, always=True, log_file=bdir / "build.log",
                     timescale=("1ns", "1ps"))
        runner.test(test_module=example.cocotb_module, hdl_toplevel=example.top, build_dir=bdir, test_dir=bdir,
                    extra_env={"EMUL_VECTORS": str(vectors.resolve()), "EMUL_LIMIT": str(stride),
                               "EMUL_OUT": str(output.resolve())},
                    results_xml=str(results),
                    log_file=bdir / "test.log")
        tests, failed = get_results(results)
        passed = tests > 0 and failed == 0
    except (SystemExit, RuntimeError, subprocess.CalledProcessError) as exc:
        passed = False
        log = f"{type(exc).__name__}: {exc}\n"
    for name in ("build.log", "test.log"):
        if (bdir / name).exists():
            log += (bdir / name).read_text(errors="replace")
    checked = len(range(0, n, stride)) if example.name == "fp8_mul" else n
    return Result(example.name, sim, "cocotb", params, passed, checked, time.perf_counter() - t0, log,
                  output if output.exists() else None)


def run_one(example: str, sim: str, flow: str, *, overflow="saturate", bug=False, vectors: Path | None = None,
            build_root: Path = HERE / "sim_build", stride: int = 1) -> Result:
    """Write vectors (unless given) and run one testbench; the unit the tests and the CLI use."""
    ex = EXAMPLES[example]
    params = ex.params(overflow, bug)
    bdir = build_dir(Path(build_root), ex, sim, flow, params)
    bdir.mkdir(parents=True, exist_ok=True)
    if vectors is None:
        vectors = write_vectors(ex, overflow, bdir / f"{ex.name}.hex")
    if flow == "readmemh":
        return run_readmemh(ex, sim, Path(vectors), params, bdir)
    return run_cocotb(ex, sim, Path(vectors), params, bdir, stride)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--example", choices=(*EXAMPLES, "all"), default="all")
    p.add_argument("--sim", choices=(*SIMULATORS, "all"), default="icarus")
    p.add_argument("--flow", choices=(*FLOWS, "all"), default="all")
    p.add_argument("--overflow", choices=("saturate", "wrap", "all"), default="all",
                   help="mac: the accumulator's overflow rule (SAT=1 / SAT=0)")
    p.add_argument("--bug", action="store_true", help="build with BUG=1 (a defect the testbench must catch)")
    p.add_argument("--vectors", type=Path, help="use this vector file instead of writing one")
    p.add_argument("--build", type=Path, default=HERE / "sim_build", help="root of the build directories")
    p.add_argument("--stride", type=int, default=1, help="cocotb multiplier: check every n-th vector only")
    p.add_argument("-v", "--verbose", action="store_true", help="print the simulator log of failed runs")
    args = p.parse_args(argv)

    sims = SIMULATORS if args.sim == "all" else (args.sim,)
    results, skipped = [], 0
    for example in EXAMPLES if args.example == "all" else (args.example,):
        overflows = ("saturate",) if example != "mac" else (
            ("saturate", "wrap") if args.overflow == "all" else (args.overflow,))
        for sim in sims:
            for flow in FLOWS if args.flow == "all" else (args.flow,):
                why = unsupported(sim, flow)
                if why:
                    print(f"SKIP  {example:8s} {sim:9s} {flow:8s} {why}")
                    skipped += 1
                    continue
                for overflow in overflows:
                    r = run_one(example, sim, flow, overflow=overflow, bug=args.bug, vectors=args.vectors,
                                build_root=args.build, stride=args.stride)
                    print(r.line(), flush=True)
                    if not r.passed and args.verbose:
                        print(r.log[-4000:])
                    results.append(r)
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return 1 if failed or not results else 0


if __name__ == "__main__":
    os.environ.pop("PYTEST_CURRENT_TEST", None)  # cocotb's runner changes behaviour under pytest
    sys.exit(main())
