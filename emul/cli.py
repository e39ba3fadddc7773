"""The ``emul`` command line: ``emul info FORMAT``, ``emul vectors OP ...`` (and more subcommands as they come)."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from .formats import FixedFormat, FloatFormat, format as as_format


def describe(fmt) -> list[str]:
    """Lines describing a format's parameters."""
    lines = [f"format        {fmt.name}", f"bits          {fmt.bits}"]
    if isinstance(fmt, FloatFormat):
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


def _info(args) -> int:
    try:
        fmt = as_format(args.format)
    except (ValueError, TypeError) as exc:
        print(f"emul info: {exc}", file=sys.stderr)
        return 2
    print("\n".join(describe(fmt)))
    if fmt.bits <= 8 and not args.no_table:
        print()
        print("\n".join(code_table(fmt)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emul", description="Bit-exact low-precision number formats.")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print a format's parameters (and its code table when <= 8 bits)")
    info.add_argument("format", help="a format name, e.g. e4m3fn, bf16, e5m6b10-nosub, fx<12,4>")
    info.add_argument("--no-table", action="store_true", help="omit the code table")
    info.set_defaults(run=_info)
    from .vectors._cli import add_parser as _add_vectors_parser

    _add_vectors_parser(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
