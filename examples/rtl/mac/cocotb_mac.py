"""cocotb testbench: mac_int8 against emul, bit for bit, after every step.

Vectors: the file named by $EMUL_VECTORS, written by
    emul vectors mac --fmt int8 --acc int12 --overflow saturate --k 16 --count 1000 --seed 1 -o mac.hex
(use --overflow wrap for SAT=0), or, when unset, generated here for the DUT's SAT parameter.
One line per step: first, a, b and emul's accumulator after the step.
"""

import os
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge

import emul.vectors


def _param(dut, name, default):
    try:
        return int(getattr(dut, name).value)
    except Exception:  # a simulator that does not expose parameters
        return default


def load_vectors(dut):
    sat = _param(dut, "SAT", None)
    acc_w = _param(dut, "ACC_W", 12)
    path = os.environ.get("EMUL_VECTORS")
    if path:
        vec = emul.vectors.read(path)
    else:
        vec = emul.vectors.generate("mac", fmt="int8", acc=f"int{acc_w}", overflow="wrap" if sat == 0 else "saturate",
                                    k=16, count=1000, seed=1)
    s = vec.settings
    want = {"op": "mac", "fmt": "int8", "b_fmt": "int8", "acc": f"int{acc_w}", "product": None}
    if sat is not None:
        want["overflow"] = "saturate" if sat else "wrap"
    wrong = {k: s.get(k) for k, v in want.items() if s.get(k) != v}
    assert not wrong, f"vectors were made for other settings than this MAC (SAT={sat}, ACC_W={acc_w}): {wrong}"
    return vec


@cocotb.test()
async def mac_matches_emul(dut):
    """One step per clock: inputs change on the falling edge, acc is checked on the next one."""
    t0 = time.perf_counter()
    vec = load_vectors(dut)
    t1 = time.perf_counter()
    first, a, b, acc = (vec[name].tolist() for name in ("first", "a", "b", "acc"))
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value, dut.en.value, dut.first.value, dut.a.value, dut.b.value = 1, 0, 0, 0, 0
    await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    bad, out = [], []
    n = len(a)
    digits = (len(dut.acc.value) + 3) // 4
    for i in range(n + 1):
        if i:
            got = dut.acc.value.to_unsigned()
            out.append(f"{got:0{digits}x}\n")
            if got != acc[i - 1]:
                bad.append(f"line {i - 1} (first={first[i - 1]} a={a[i - 1]:02x} b={b[i - 1]:02x}): "
                           f"acc={got:03x}, emul={acc[i - 1]:03x}")
        if i < n:
            dut.first.value, dut.a.value, dut.b.value, dut.en.value = first[i], a[i], b[i], 1
            await FallingEdge(dut.clk)
    t2 = time.perf_counter()
    if os.environ.get("EMUL_OUT"):  # the accumulator after every step, as the $readmemh testbench writes it
        with open(os.environ["EMUL_OUT"], "w") as fh:
            fh.writelines(out)
    dut._log.info("EMUL-COCOTB checked %d steps, %d mismatches; load %.2f s, %.0f vectors/s",
                  n, len(bad), t1 - t0, n / max(t2 - t1, 1e-9))
    assert not bad, f"{len(bad)} of {n} accumulator values differ from emul; first: " + "; ".join(bad[:5])
