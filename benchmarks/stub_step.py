"""Stub step for ``benchmarks/operator_bench.py`` only (not a test helper, not a trainer):
it stands in for ``bertops trainer prepare`` so the benchmark measures the operator and
not torch. It reads the step spec, writes a successful prepare result (a ``StepResult``
with ``PrepareDetails``: artifact URI, checksum, rows, labels) to the spec's
``resultUri`` at once, and exits 0. Standard library only, so each run costs one bare
interpreter start. The operator runs it through ``bertops operator --step-command``:

    python -S -I benchmarks/stub_step.py prepare --spec FILE
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def prepare_result(spec: dict[str, Any], started: datetime) -> dict[str, Any]:
    """A prepare result in the wire format (camelCase) of bertops.api.steps.StepResult."""
    checksum = hashlib.sha256(spec["name"].encode()).hexdigest()
    labels = list(spec["dataset"].get("labels") or ["negative", "positive"])
    rows = {"train": 80, "validation": 10, "test": 10, "total": 100}
    finished = datetime.now(UTC)
    return {
        "kind": "prepare",
        "name": spec["name"],
        "succeeded": True,
        "exitCode": 0,
        "reason": "Succeeded",
        "message": "stub prepare (operator benchmark)",
        "startedAt": started.isoformat(),
        "finishedAt": finished.isoformat(),
        "durationSeconds": (finished - started).total_seconds(),
        "artifacts": {"dataset": spec["outputUri"]},
        "checksums": {"dataset": checksum},
        "details": {
            "kind": "prepare",
            "artifactUri": spec["outputUri"],
            "checksum": checksum,
            "shortChecksum": checksum[:12],
            "rows": rows,
            "labels": labels,
            "numLabels": len(labels),
            "labelCounts": {label: rows["total"] // len(labels) for label in labels},
        },
    }


def main(argv: list[str]) -> int:
    started = datetime.now(UTC)
    kind = argv[1] if len(argv) > 1 else ""
    if kind != "prepare" or "--spec" not in argv:
        print(f"stub_step: only 'prepare --spec FILE', got {argv[1:]}", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[argv.index("--spec") + 1]).read_text())
    result = json.dumps(prepare_result(spec, started))
    print(json.dumps({"event": "done", "message": "stub prepare", "time": time.time()}))
    if spec.get("resultUri"):
        target = Path(spec["resultUri"])
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(result)
        tmp.replace(target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
