"""Benchmark emul.blocks: block encoding of 16 M float32 values, and a 256^3 block-scaled matmul.

Same inputs for every contender, median of repeats (one warm-up call first):

- ``emul.blocks.encode(x, "mxfp8_e4m3")`` and ``"mxfp4"`` (floor scale, nearest_even) against
  gfloat's block encoding of the same blocks (``compute_scale_amax`` + ``encode_block``, scalar
  Python per block: timed on a sample of blocks and scaled to the whole input; its codes are
  checked against emul's on the sample) and against ml_dtypes' plain, unscaled cast of the same
  values to the element type (float8_e4m3fn, float4_e2m1fn);
- ``emul.blocks.matmul`` of 256 x 256 MXFP8 E4M3 operands into fp32 (sequential order) against
  numpy's float32 matmul of the same values.

Prints a table with ratios and writes bench/results/blocks.json with the machine's cores and load.

    python bench/blocks.py [--repeats 3] [--gfloat-blocks 2000]
"""

import argparse
import os
import sys
import time
from pathlib import Path

import ml_dtypes
import numba
import numpy as np

import emul.blocks as B

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median_time, ratio, write  # noqa: E402


def gfloat_encode(blocks, gname):
    """gfloat's block encoding of each 32-element block: [scale code, element codes...]."""
    import gfloat
    import gfloat.formats as gf

    fi = getattr(gf, f"format_info_{gname}")
    out = []
    for blk in blocks:
        scale = gfloat.compute_scale_amax(fi.etype.emax, blk)
        out.append(list(gfloat.encode_block(fi, scale, blk / scale)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=1 << 24)
    ap.add_argument("--gfloat-blocks", type=int, default=2000)
    args = ap.parse_args()
    load_before = os.getloadavg()
    rng = np.random.default_rng(0)
    x = rng.standard_normal(args.n).astype(np.float32)
    rows = []
    for name, gname, dtype in (("mxfp8_e4m3", "mxfp8_e4m3", ml_dtypes.float8_e4m3fn),
                               ("mxfp4", "mxfp4_e2m1", ml_dtypes.float4_e2m1fn)):
        t_emul = median_time(lambda: B.encode(x, name), args.repeats)
        t_ml = median_time(lambda: x.astype(dtype), args.repeats)
        nblk = min(args.gfloat_blocks, args.n // 32)
        sample = x[: nblk * 32].reshape(nblk, 32).astype(np.float64)
        t0 = time.perf_counter()
        g = gfloat_encode(sample, gname)
        t_g = (time.perf_counter() - t0) * (args.n / 32) / nblk
        s, c = B.encode(sample, name, scale_overflow="saturate")
        agree = bool(np.array_equal(np.array(g), np.concatenate([s, c], axis=1)))
        rows.append({"task": f"encode 16M float32 -> {name} (floor, RNE)", "emul_s": t_emul,
                     "gfloat_s_scaled": t_g, "gfloat_blocks_timed": nblk, "gfloat_codes_agree": agree,
                     "ml_dtypes_plain_cast_s": t_ml, "vs_gfloat": t_g / t_emul, "vs_ml_dtypes": t_ml / t_emul,
                     "goals": "vs_gfloat >= 10, vs_ml_dtypes >= 1"})
    A = rng.standard_normal((256, 256))
    Bm = rng.standard_normal((256, 256))
    ea, eb = B.encode(A, "mxfp8_e4m3"), B.encode(Bm, "mxfp8_e4m3", axis=0)
    Aq = B.quantize(A, "mxfp8_e4m3").astype(np.float32)
    Bq = B.quantize(Bm, "mxfp8_e4m3", axis=0).astype(np.float32)
    t_mm = median_time(lambda: B.matmul(ea, eb, "mxfp8_e4m3", acc="fp32"), args.repeats)
    t_np = median_time(lambda: Aq @ Bq, args.repeats)
    rows.append({"task": "matmul 256^3 mxfp8_e4m3 operands into fp32 (sequential)", "emul_s": t_mm,
                 "numpy_float32_matmul_s": t_np, "numpy_over_emul": t_np / t_mm})
    load_after = os.getloadavg()
    print(f"emul.blocks, numba threads = {numba.get_num_threads()}, cpus = {os.cpu_count()}, "
          f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    for r in rows[:2]:
        print(f"{r['task']:44s} emul {r['emul_s']:.3f} s | gfloat {r['gfloat_s_scaled']:.1f} s "
              f"(x{r['vs_gfloat']:.0f}, codes agree: {r['gfloat_codes_agree']}) | "
              f"ml_dtypes cast {r['ml_dtypes_plain_cast_s']:.3f} s (x{r['vs_ml_dtypes']:.2f})")
    r = rows[2]
    print(f"{r['task']:44s} emul {r['emul_s']:.4f} s | numpy float32 {r['numpy_float32_matmul_s']:.5f} s "
          f"(emul is {1 / r['numpy_over_emul']:.0f}x slower)")
    ratios = []
    for r in rows[:2]:
        ratios.append(ratio(f"{r['task']}: vs gfloat", r["vs_gfloat"], 10))
        ratios.append(ratio(f"{r['task']}: vs ml_dtypes plain cast", r["vs_ml_dtypes"], 1))
    ratios.append(ratio(f"{rows[2]['task']}: vs numpy float32", rows[2]["numpy_over_emul"]))
    print(f"wrote {write('blocks', {'repeats': args.repeats, 'results': rows, 'ratios': ratios}, load_before)}")


if __name__ == "__main__":
    main()
