"""cocotb testbench: sr_cast (stochastic rounding fx<16,8> -> int8 fed by a 16-bit LFSR) against
emul, bit for bit: the LFSR word of every conversion and its result.

Vectors: the file named by $EMUL_VECTORS, written by
    emul vectors quantize --in-fmt "fx<16,8>" --fmt int8 --rounding stochastic --sr-bits 8 \\
        --random-source lfsr --lfsr-seed 44257 --exhaustive -o sr.hex
or, when unset, generated here with the same settings. Line i uses the LFSR state after i + 1
steps, so the vectors must be applied in file order, one per enabled clock, from reset.
"""

import os
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge

import emul.vectors

SETTINGS = dict(in_fmt="fx<16,8>", fmt="int8", rounding="stochastic", sr_bits=8, sr_method="add",
                random_source="lfsr", overflow="saturate",
                lfsr={"width": 16, "taps": [16, 14, 13, 11], "seed": 0xACE1, "kind": "fibonacci", "output": "state"})


def load_vectors():
    path = os.environ.get("EMUL_VECTORS")
    vec = emul.vectors.read(path) if path else emul.vectors.generate("quantize", sets="exhaustive", **SETTINGS)
    wrong = {k: vec.settings.get(k) for k, v in SETTINGS.items() if vec.settings.get(k) != v}
    assert not wrong, f"vectors were made for another SR unit: {wrong}"
    return vec


@cocotb.test()
async def sr_cast_matches_emul(dut):
    t0 = time.perf_counter()
    vec = load_vectors()
    t1 = time.perf_counter()
    x, u, y = (vec[name].tolist() for name in ("x", "u", "y"))
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value, dut.en.value, dut.x.value = 1, 0, 0
    await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    bad, out, n = [], [], len(x)
    for i in range(n + 1):
        if i:
            got_u, got_y = dut.u.value.to_unsigned(), dut.y.value.to_unsigned()
            out.append(f"{x[i - 1]:04x}_{got_u:02x}_{got_y:02x}\n")
            if (got_u, got_y) != (u[i - 1], y[i - 1]):
                bad.append(f"line {i - 1} (x={x[i - 1]:04x}): u={got_u:02x} y={got_y:02x}, "
                           f"emul u={u[i - 1]:02x} y={y[i - 1]:02x}")
        if i < n:
            dut.x.value, dut.en.value = x[i], 1
            await FallingEdge(dut.clk)
    t2 = time.perf_counter()
    if os.environ.get("EMUL_OUT"):  # whole vectors x_u_y, as the $readmemh testbench writes them
        with open(os.environ["EMUL_OUT"], "w") as fh:
            fh.writelines(out)
    dut._log.info("EMUL-COCOTB checked %d conversions, %d mismatches; load %.2f s, %.0f vectors/s",
                  n, len(bad), t1 - t0, n / max(t2 - t1, 1e-9))
    assert not bad, f"{len(bad)} of {n} conversions differ from emul; first: " + "; ".join(bad[:5])
