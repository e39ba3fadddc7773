"""cocotb testbench: fp8_mul (e4m3fn x e4m3fn -> fp16, RNE) against emul, bit for bit.

Vectors: the file named by $EMUL_VECTORS, written by
    emul vectors mul --fmt e4m3fn --out-fmt fp16 --exhaustive -o mul.hex
(all 65,536 operand pairs), or, when unset, generated here with the same settings.
$EMUL_LIMIT (optional) checks only every n-th vector, for quick runs. $EMUL_OUT (optional, whole
runs only): a file that receives the DUT's y per vector, one hex line each, like the $readmemh
testbench's, for `emul vectors compare`.
"""

import os
import time

import cocotb
from cocotb.triggers import Timer

import emul.vectors

SETTINGS = {"op": "mul", "fmt": "e4m3fn", "b_fmt": "e4m3fn", "out_fmt": "fp16", "rounding": "nearest_even",
            "overflow": "ieee"}


def load_vectors():
    path = os.environ.get("EMUL_VECTORS")
    vec = emul.vectors.read(path) if path else emul.vectors.generate("mul", fmt="e4m3fn", out_fmt="fp16",
                                                                      sets="exhaustive")
    wrong = {k: vec.settings.get(k) for k, v in SETTINGS.items() if vec.settings.get(k) != v}
    assert not wrong, f"vectors were made for other settings than this multiplier: {wrong}"
    return vec


@cocotb.test()
async def multiplier_matches_emul(dut):
    """Drive every (a, b) of the vector file and compare y with emul's product code."""
    t0 = time.perf_counter()
    vec = load_vectors()
    t1 = time.perf_counter()
    step = max(1, int(os.environ.get("EMUL_LIMIT", "1") or 1))
    a, b, y = (vec[name][::step].tolist() for name in ("a", "b", "y"))
    bad, out = [], []
    for i in range(len(a)):
        dut.a.value = a[i]
        dut.b.value = b[i]
        await Timer(1, unit="ns")
        got = dut.y.value.to_unsigned()
        out.append(f"{got:04x}\n")
        if got != y[i]:
            bad.append(f"a={a[i]:02x} b={b[i]:02x}: y={got:04x}, emul={y[i]:04x}")
    t2 = time.perf_counter()
    if os.environ.get("EMUL_OUT") and step == 1:
        with open(os.environ["EMUL_OUT"], "w") as fh:
            fh.writelines(out)
    dut._log.info("EMUL-COCOTB checked %d vectors, %d mismatches; load %.2f s, %.0f vectors/s",
                  len(a), len(bad), t1 - t0, len(a) / max(t2 - t1, 1e-9))
    assert not bad, f"{len(bad)} of {len(a)} products differ from emul; first: " + "; ".join(bad[:5])
