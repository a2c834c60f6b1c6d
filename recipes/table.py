#!/usr/bin/env python3
"""The DER table of the runs of recipes/paper.sh, from their score files.

Usage: python recipes/table.py EXP_ROOT [--json FILE]

The DER table of a set of runs of recipes/paper.sh, generated from their score files: one row
per run directory EXP_ROOT/<model>/<run>/ holding der/<test-set>.json (written by stage 4 of
recipes/run.sh), one column per test set (DER %, collar 0, overlap scored) and the macro
average over the test sets. Prints Markdown; --json also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def collect(exp_root: Path) -> list[dict]:
    """One record per run directory: model, run, and DER per test set (fractions)."""
    rows = []
    for der_dir in sorted(exp_root.glob("*/*/der")):
        scores = {}
        for path in sorted(der_dir.glob("*.json")):
            try:
                scores[path.stem] = float(json.loads(path.read_text())["total"]["der"])
            except (OSError, ValueError, KeyError, TypeError) as error:
                raise SystemExit(f"table.py: error: {path}: not a score file ({error})") from None
        if scores:
            run_dir = der_dir.parent
            rows.append({"model": run_dir.parent.name, "run": run_dir.name, "der": scores})
    return rows


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table (DER in %, macro average over the test sets)."""
    test_sets = sorted({name for row in rows for name in row["der"]})
    lines = ["| model | run | " + " | ".join(test_sets) + " | macro |",
             "|---|---|" + "---|" * (len(test_sets) + 1)]
    for row in rows:
        cells = [f"{100 * row['der'][t]:.1f}" if t in row["der"] else "–" for t in test_sets]
        complete = len(row["der"]) == len(test_sets)
        macro = 100 * sum(row["der"].values()) / len(row["der"])
        cells.append(f"{macro:.1f}" if complete else "–")
        lines.append(f"| {row['model']} | {row['run']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 2)[2],
                                     usage="python recipes/table.py EXP_ROOT [--json FILE]")
    parser.add_argument("exp_root", type=Path, metavar="EXP_ROOT")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    rows = collect(args.exp_root)
    if not rows:
        print(f"table.py: error: no EXP_ROOT/<model>/<run>/der/*.json under {args.exp_root}",
              file=sys.stderr)
        return 1
    sys.stdout.write(markdown(rows))
    if args.json:
        tmp = args.json.with_name(f".{args.json.name}.tmp")
        tmp.write_text(json.dumps(rows, indent=1) + "\n")
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
