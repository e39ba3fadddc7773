"""The ``emul`` command line: ``emul info FORMAT``, ``emul vectors OP ...``, ``emul train ...`` (and more
subcommands as they come)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

import numpy as np

from .formats import ExpFormat, FixedFormat, FloatFormat, format as as_format


def describe(fmt) -> list[str]:
    """Lines describing a format's parameters."""
    lines = [f"format        {fmt.name}", f"bits          {fmt.bits}"]
    if isinstance(fmt, ExpFormat):
        lines += [
            f"exp_bits      {fmt.exp_bits}",
            f"bias          {fmt.bias}",
            "kind          unsigned, exponent only: code c means 2**(c - bias); no sign, zero or inf",
            f"nan           {fmt.nan_code:#x}",
            f"max           {fmt.max!r} (2**{fmt.emax})",
            f"min           {fmt.min_normal!r} (2**{fmt.emin})",
        ]
    elif isinstance(fmt, FloatFormat):
        lines += [
            f"exp_bits      {fmt.exp_bits}",
            f"man_bits      {fmt.man_bits}",
            f"bias          {fmt.bias}",
            f"subnormals    {fmt.subnormals}",
            f"specials      {fmt.specials}",
            f"max           {fmt.max!r}",
            f"min_normal    {fmt.min_normal!r}",
            f"min_subnormal {fmt.min_subnormal!r}",
            f"eps           {fmt.eps!r}",
        ]
    else:
        lines += [
            f"frac          {fmt.frac}",
            f"signed        {fmt.signed}",
            f"min           {fmt.min!r}",
            f"max           {fmt.max!r}",
            f"lsb           {fmt.lsb!r}",
        ]
    return lines


def code_table(fmt) -> list[str]:
    """One line per code (for formats of at most 8 bits): code in hex and binary, and its value."""
    from .quantize import decode

    digits = (fmt.bits + 3) // 4
    lines = [f"{'code':>{digits + 2}}  {'bits':>{fmt.bits}}  value"]
    for code in range(1 << fmt.bits):
        try:
            value = repr(float(decode(np.uint64(code), fmt)))
        except ValueError:
            value = "(invalid: subnormal pattern without subnormals)"
        lines.append(f"{code:#0{digits + 2}x}  {code:0{fmt.bits}b}  {value}")
    return lines


def describe_block(bfmt) -> list[str]:
    """Lines describing a block format (emul.blocks)."""
    el, sc = bfmt.element, bfmt.scale
    k = bfmt.block
    lines = [f"block format  {bfmt.name}",
             f"element       {el.name} ({el.bits} bits, max {el.max!r}, emax_elem {bfmt.emax_elem})",
             f"scale         {sc.name} ({sc.bits} bits, {sc.min_subnormal!r} ... {sc.max!r})",
             f"block         {'the whole axis' if k is None else k}",
             f"bits/element  {el.bits}" + ("" if k is None else f" + {sc.bits}/{k} = {el.bits + sc.bits / k:g}"),
             f"tensor scale  {'float32, per tensor' if bfmt.tensor_scale else 'none'}"]
    if bfmt.power_of_two:
        lines.append("scale rules   floor (default), ceil, even, rceil; scale_overflow nan (default) or saturate")
    else:
        lines.append("scale         amax / (element max * s_t), nearest_even, saturating, at least scale_min")
    return lines


def _info(args) -> int:
    try:
        fmt = as_format(args.format)
    except (ValueError, TypeError) as exc:
        from . import blocks

        try:
            bfmt = blocks.format(args.format)
        except (ValueError, TypeError):
            print(f"emul info: {exc}", file=sys.stderr)
            return 2
        print("\n".join(describe_block(bfmt)))
        if bfmt.element.bits <= 8 and not args.no_table:
            print()
            print(f"element codes ({bfmt.element.name}):")
            print("\n".join(code_table(bfmt.element)))
        return 0
    print("\n".join(describe(fmt)))
    if fmt.bits <= 8 and not args.no_table:
        print()
        print("\n".join(code_table(fmt)))
    return 0


def _warmup_groups():
    from .warmup import GROUPS

    return list(GROUPS)


def _warmup(args) -> int:
    from .warmup import GROUPS, warmup

    unknown = [g for g in args.groups if g not in GROUPS]
    if unknown:
        print(f"emul warmup: unknown group(s) {unknown}: choose from {list(GROUPS)}", file=sys.stderr)
        return 2
    total = 0.0
    for group in args.groups or GROUPS:
        print(f"{group:<11}", end=" ", flush=True)
        (_, seconds), = warmup([group])
        total += seconds
        print(f"{seconds:7.2f} s", flush=True)
    print(f"{'total':<11} {total:7.2f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emul", description="Bit-exact low-precision number formats.")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print a format's parameters (and its code table when <= 8 bits)")
    info.add_argument("format", help="a format name, e.g. e4m3fn, bf16, e5m6b10-nosub, fx<12,4>, e8m0, or a "
                                     "block format: mxfp4, nvfp4, e4m3fn/e8m0/32")
    info.add_argument("--no-table", action="store_true", help="omit the code table")
    info.set_defaults(run=_info)
    from .vectors._cli import add_parser as _add_vectors_parser

    _add_vectors_parser(sub)
    warm = sub.add_parser("warmup", help="compile emul's kernels into Numba's on-disk cache now, so later "
                                         "processes start warm (seconds per group, once per install)")
    warm.add_argument("groups", nargs="*", metavar="GROUP",
                      help="groups to compile (default: all): " + ", ".join(_warmup_groups()))
    warm.set_defaults(run=_warmup)
    sub.add_parser("train", add_help=False,
                   help="train small networks with emulated arithmetic, one run per recipe (JAX; `emul train --help`)")
    sub.add_parser("ptq", add_help=False,
                   help="post-training quantization of a trained model: AdaQuant, bit allocation, BN/bias tuning "
                        "(JAX; `emul ptq --help`)")
    return parser


def _devices(argv) -> int:
    for i, a in enumerate(argv):
        value = a.split("=", 1)[1] if a.startswith("--devices=") else argv[i + 1] if a == "--devices" and \
            i + 1 < len(argv) else None
        if value is not None:
            return int(value) if value.isdigit() else 1
    return 1


_NEEDS = {"train": "JAX, Flax, optax, tqdm, matplotlib and scikit-learn",
          "ptq": "JAX, Flax, optax, scipy, tqdm and matplotlib"}


def _jax_command(name, argv) -> int:
    """``emul NAME ...``: the ``main`` of the emul_jax module ``name``, imported only now (``import emul``
    stays JAX-free)."""
    try:
        module = importlib.import_module(f"emul_jax.{name}")
    except ImportError as e:
        print(f"emul {name}: error: {e}; it needs {_NEEDS[name]}: pip install 'emul[train]'", file=sys.stderr)
        return 2
    return module.main(argv)


def train(argv) -> int:
    """``emul train ...``. With ``--devices N`` and JAX not yet imported, asks XLA for N host (CPU)
    devices first, so data parallelism runs on one machine."""
    devices = _devices(argv)
    if devices > 1 and "jax" not in sys.modules:
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_force_host_platform_device_count" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    return _jax_command("train", argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        return train(argv[1:])
    if argv[:1] == ["ptq"]:
        return _jax_command("ptq", argv[1:])
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
