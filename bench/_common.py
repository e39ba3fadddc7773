"""What every bench shares: a timer, the machine record and the JSON writer.

Each bench writes ``bench/results/<name>.json`` holding its own rows plus ``machine`` (cores, CPU
model, Numba threads, load average before and after) and ``ratios``: a list of
``{"name", "ratio", "target"}`` (``target`` the figure an issue asks for, or ``None``), which
``bench/summary.py`` (run last by ``make bench``) collects into one table.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def median_time(fn, repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fn`` after one untimed warm-up call."""
    fn()  # compilation, page faults
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(load_before=None) -> dict:
    """The machine a figure was measured on; pass ``os.getloadavg()`` taken before the timings."""
    try:
        import numba
        threads = numba.get_num_threads()
    except ImportError:  # pragma: no cover
        threads = None
    return {"cores": os.cpu_count(), "cpu": cpu_model(), "numba_threads": threads,
            "load_avg_before": list(load_before) if load_before is not None else None,
            "load_avg_after": list(os.getloadavg()), "python": platform.python_version()}


def ratio(name: str, value: float, target: float | None = None) -> dict:
    """One summary row: ``value`` is emul's speed over the peer's (higher is better)."""
    return {"name": name, "ratio": float(value), "target": None if target is None else float(target)}


def write(name: str, record: dict, load_before=None) -> Path:
    """Write ``record`` (with ``machine`` added) to ``bench/results/<name>.json``; return the path."""
    record = dict(record)
    record.setdefault("machine", machine(load_before))
    record.setdefault("ratios", [])
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(record, indent=1, default=float))
    return path
