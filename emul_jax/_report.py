"""What ``emul train`` and ``emul ptq`` share: the machine record, writing a study's JSON and PNG, and
the command-line wrapper that turns bad input into one error line and exit status 2."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import jax


def machine() -> dict:
    """Where a study ran: platform, Python, CPU count, load average (None where unknown), JAX and its backend."""
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "load_avg": load, "jax": jax.__version__, "backend": jax.default_backend()}


def write(record: dict, out, stem: str, table, plot) -> int:
    """Write ``out/stem.json`` and ``out/stem.png`` (``plot(record, path)``), print ``table(record)`` and
    both paths; returns 0 (the command's exit status)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(record, indent=1))
    png = plot(record, out / f"{stem}.png")
    print(table(record))
    print(f"record: {out / (stem + '.json')}\nplot:   {png}")
    return 0


def cli(prog: str, build_parser, run, argv=None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and ``run(args, argv)``; a ValueError or RuntimeError
    becomes ``prog: error: ...`` on stderr and exit status 2 (argparse's own errors exit 2 as well)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        return run(args, argv)
    except (ValueError, RuntimeError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
