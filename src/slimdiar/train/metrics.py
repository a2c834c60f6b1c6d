"""``metrics.jsonl``: one JSON record per line, per step, per epoch, and one for the final model.

Records carry ``type`` (``"step"``, ``"epoch"``, ``"best"``) and a 1-based ``epoch``; tables,
plots and reports are generated from this file (:func:`read_metrics`), never typed by hand.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

METRICS_NAME = "metrics.jsonl"


def read_metrics(path: str | Path) -> list[dict]:
    """Records of a ``metrics.jsonl`` file (an incomplete last line is skipped)."""
    records: list[dict] = []
    path = Path(path)
    if not path.exists():
        return records
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            logger.warning("%s: skipping an incomplete line", path)
    return records


def append_record(path: Path, record: dict) -> None:
    """Append one record to ``path``."""
    with open(path, "a") as stream:
        stream.write(json.dumps(record) + "\n")


def truncate_metrics(path: Path, epochs_done: int) -> None:
    """Keep only the records of the first ``epochs_done`` epochs (drops a killed epoch).

    ``"best"`` records go too: a resumed run writes its own.
    """
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if record.get("type") != "best" and record.get("epoch", math.inf) <= epochs_done:
            kept.append(line)
    fd, tmp = tempfile.mkstemp(prefix=".metrics.", dir=path.parent)
    with os.fdopen(fd, "w") as stream:
        stream.writelines(line + "\n" for line in kept)
    os.replace(tmp, path)
