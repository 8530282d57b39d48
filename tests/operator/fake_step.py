"""A stand-in for ``bertops trainer prepare`` in operator lifecycle tests: fast, stdlib
only, and scripted. The dataset's source URI names a JSON script, e.g.
``{"exits": [3, 0], "sleep": 0, "result": true}``: the n-th run of any step for that
script exits with ``exits[n]`` (the last one repeats), after sleeping, and writes a
prepare result unless ``result`` is false. Each run appends its step name to
``<script>.runs``, so a test can tell which steps ran and how often.

Run by the local runtime as ``python fake_step.py prepare --spec FILE`` (the operator
config's ``step_command``); see :data:`COMMAND`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

COMMAND = (sys.executable, str(Path(__file__).resolve()))


def write_script(path: Path, exits: list[int], sleep: float = 0, result: bool = True) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"exits": exits, "sleep": sleep, "result": result}))
    return str(path)


def runs(script: str | Path) -> list[str]:
    log = Path(f"{script}.runs")
    return log.read_text().split() if log.exists() else []


def main(argv: list[str]) -> int:
    kind = argv[1]
    spec = json.loads(Path(argv[argv.index("--spec") + 1]).read_text())
    script_path = Path(spec["dataset"]["source"]["uri"])
    script = json.loads(script_path.read_text())
    done = runs(script_path)
    with open(f"{script_path}.runs", "a") as log:
        log.write(spec["name"] + "\n")
    exits = script.get("exits") or [0]
    code = int(exits[min(len(done), len(exits) - 1)])
    print(json.dumps({"event": "start", "message": f"fake {kind}"}), flush=True)
    time.sleep(float(script.get("sleep", 0)))
    if script.get("result", True):
        result = {
            "kind": kind,
            "name": spec["name"],
            "succeeded": code == 0,
            "exitCode": code,
            "reason": "Succeeded" if code == 0 else "Scripted",
            "message": f"scripted exit {code}",
            "artifacts": {"dataset": spec["outputUri"]},
            "checksums": {"dataset": "ab" * 32},
            "details": {
                "rows": {"train": 8, "validation": 1, "test": 1, "total": 10},
                "labels": ["neg", "pos"],
                "numLabels": 2,
            },
        }
        Path(spec["resultUri"]).write_text(json.dumps(result))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
