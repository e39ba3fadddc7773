"""One table of every emul/peer ratio the benches recorded (run last by ``make bench``).

Reads ``bench/results/*.json`` (each bench's ``ratios``: ``{name, ratio, target}``, emul's speed
over the peer's, higher is better), prints one row per ratio with its target and whether it is met,
and writes ``bench/results/summary.json``.

    .venv/bin/python bench/summary.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write  # noqa: E402


def collect(results_dir: Path = RESULTS) -> list[dict]:
    """Every ratio row of every bench record, with the bench's name and machine load."""
    rows = []
    for path in sorted(results_dir.glob("*.json")):
        if path.stem == "summary":
            continue
        record = json.loads(path.read_text())
        load = (record.get("machine") or {}).get("load_avg_before")
        for row in record.get("ratios", []):
            name = row.get("name") or f"{row['work']}  vs  {row['against']}"
            rows.append({"bench": path.stem, "name": name, "ratio": float(row["ratio"]),
                         "target": row.get("target"), "load": load[0] if load else None})
    return rows


def main() -> int:
    rows = collect()
    if not rows:
        print("no ratios recorded: run the benches first (make bench)")
        return 1
    width = max(36, max(len(r["name"]) for r in rows))
    print(f"{'bench':<14} {'ratio (emul over peer, or as named)':<{width}} {'value':>10} {'target':>8}  met")
    for r in rows:
        target = r.get("target")
        met = "" if target is None else ("yes" if r["ratio"] >= target else "NO")
        t = "" if target is None else f"{target:.2f}"
        print(f"{r['bench']:<14} {r['name']:<{width}} {r['ratio']:>10.2f} {t:>8}  {met}")
    missed = [r for r in rows if r.get("target") is not None and r["ratio"] < r["target"]]
    print(f"\n{len(rows)} ratios, {len(rows) - len(missed)} at or above target where one is set; "
          f"{len(missed)} below")
    write("summary", {"rows": rows, "missed": [r["name"] for r in missed]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
