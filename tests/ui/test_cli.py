"""``bertops models|datasets|trainings`` against the real API server, with objects in
several states (ready, failed verification, served as stable or canary, named in a
deployment's spec, a finished and a running training) and a real artifact folder."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bertops.api.artifacts import MODEL_MANIFEST, ModelManifest
from tests.integration import manifests as m
from tests.ui.conftest import World, condition

pytestmark = pytest.mark.integration


@pytest.fixture
def bertops(cluster: Any, namespace: str) -> Iterator[Any]:
    """Run ``bertops ARGS... --kubeconfig K -n NS``; returns the click Result."""
    from bertops.cli import models as cli
    from bertops.cli.main import app

    width = cli.console.width
    cli.console.width = 220  # tables unabridged: the tests read names in them
    runner = CliRunner()

    def run(*args: str) -> Any:
        where = ["--kubeconfig", str(cluster.kubeconfig), "-n", namespace]
        return runner.invoke(app, [*args, *where], catch_exceptions=False)

    yield run
    cli.console.width = width


def test_models_list_shows_each_state_and_who_serves(world: World, bertops: Any) -> None:
    table = bertops("models", "list")
    assert table.exit_code == 0, table.output
    for text in ("run-1-int8", "VerificationFailed", "Verified", "23.0MB", "sentiment"):
        assert text in table.output
    rows = {r["name"]: r for r in json.loads(bertops("models", "list", "--json").stdout)["items"]}
    assert rows["run-1"]["servedBy"] == ["sentiment"]
    assert rows["run-1-int8"]["servedBy"] == ["sentiment"]
    assert rows["broken"]["servedBy"] == []
    assert rows["broken"]["ready"]["status"] == "False"


def test_show_prints_lineage_metrics_and_curves(world: World, bertops: Any) -> None:
    shown = bertops("models", "show", "run-1-int8")
    assert shown.exit_code == 0, shown.output
    lineage = next(line for line in shown.output.splitlines() if line.startswith("lineage:"))
    # dataset checksum → training → base → parent model → compression, in that order
    order = [
        "dataset tweets (sha256 abababababab)",
        "training run-1-train-g1-a1",
        "parent model run-1",
        "compression quantize:perChannel",
        "model run-1-int8",
    ]
    positions = [lineage.index(part) for part in order]
    assert positions == sorted(positions), lineage
    assert "metrics.accuracy" in shown.output and "0.79" in shown.output
    trained = bertops("models", "show", "run-1")
    # the per-epoch history comes from the artifact's metrics.json
    assert "per epoch" in trained.output and "validation accuracy" in trained.output
    assert bertops("models", "show", "nope").exit_code == 2


def test_compare_lines_up_metrics_size_and_latency(world: World, bertops: Any) -> None:
    result = bertops("models", "compare", "run-1", "run-1-int8", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["metric"]: r for r in json.loads(result.stdout)["rows"]}
    assert rows["accuracy"]["better"] == "a"
    assert rows["bytes on disk"]["better"] == "b"
    assert rows["p50 latency batch 1 (ms)"]["better"] == "b"
    assert rows["bytes on disk"]["delta"] == 23_000_000 - 92_000_000
    assert "run-1 vs run-1-int8" in bertops("models", "compare", "run-1", "run-1-int8").output


def test_download_verifies_every_file(world: World, bertops: Any, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    result = bertops("models", "download", "run-1", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert world.manifest_sha256 in result.output
    raw = (out / MODEL_MANIFEST).read_bytes()
    assert hashlib.sha256(raw).hexdigest() == world.manifest_sha256
    for entry in ModelManifest.model_validate_json(raw).files:
        assert hashlib.sha256((out / entry.path).read_bytes()).hexdigest() == entry.sha256
    # A file changed after registration: nothing is written.
    with (world.artifact / "config.json").open("a") as handle:
        handle.write(" ")
    refused = bertops("models", "download", "run-1", "--out", str(tmp_path / "again"))
    assert refused.exit_code == 1
    assert "sha256 mismatch for config.json" in refused.output
    assert not (tmp_path / "again").exists()
    assert not list(tmp_path.glob(".again.*"))  # no staging folder left behind


def test_download_refuses_a_manifest_changed_since_registration(
    world: World, bertops: Any, tmp_path: Path
) -> None:
    world.objects.status("BertModel", "run-1", {"manifestSha256": "0" * 64})
    refused = bertops("models", "download", "run-1", "--out", str(tmp_path / "x"))
    assert refused.exit_code == 1
    assert "not the registered" in refused.output


def test_delete_refuses_a_served_model_unless_forced(world: World, bertops: Any) -> None:
    refused = bertops("models", "delete", "run-1-int8", "--yes")
    assert refused.exit_code == 1
    assert "served by BertDeployment sentiment" in refused.output
    assert world.objects.get("BertModel", "run-1-int8") is not None
    # A deployment that names the model in its spec protects it too.
    world.objects.create(m.deployment("pinned", model={"ref": {"name": "broken"}}))
    assert "BertDeployment pinned" in bertops("models", "delete", "broken", "--yes").output
    forced = bertops("models", "delete", "run-1-int8", "--yes", "--force")
    assert forced.exit_code == 0, forced.output
    assert "it was served by sentiment" in forced.output
    assert world.objects.get("BertModel", "run-1-int8") is None
    assert bertops("models", "delete", "run-1-int8", "--yes").exit_code == 2  # gone


def test_datasets_and_trainings_list_and_show(world: World, bertops: Any) -> None:
    datasets = bertops("datasets", "list")
    assert "tweets" in datasets.output and "abababababab" in datasets.output
    assert json.loads(bertops("datasets", "show", "tweets").stdout)["rows"]["total"] == 900
    trainings = bertops("trainings", "list")
    assert "Completed" in trainings.output and "step 30/90" in trainings.output
    assert json.loads(bertops("trainings", "show", "run-2").stdout)["succeeded"]["reason"] == (
        "Training"
    )


def _step_folder(state: Path, namespace: str, step: str) -> Path:
    folder = state / "steps" / namespace / step
    folder.mkdir(parents=True)
    return folder


def test_training_logs_follow_until_the_run_ends(
    world: World, bertops: Any, namespace: str, tmp_path: Path
) -> None:
    folder = _step_folder(tmp_path, namespace, "run-2-train-g1-a1")
    lines = [
        {"event": "start", "epoch": 1, "totalEpochs": 2, "step": 0, "totalSteps": 90},
        {
            "event": "epoch",
            "epoch": 1,
            "totalEpochs": 2,
            "step": 45,
            "totalSteps": 90,
            "loss": 0.61,
            "validation": {"accuracy": 0.7},
        },
    ]
    (folder / "stdout.log").write_text("".join(json.dumps(x) + "\n" for x in lines))
    once = bertops("trainings", "logs", "run-2", "--state-dir", str(tmp_path))
    assert once.exit_code == 0, once.output
    assert "[epoch] epoch 1/2 step 45/90 loss 0.6100 val accuracy 0.7000" in once.output
    assert "Succeeded=Unknown Training" in once.output

    def finish() -> None:
        time.sleep(1.5)
        with (folder / "stdout.log").open("a") as handle:
            handle.write(json.dumps({"event": "done", "message": "model written"}) + "\n")
        world.objects.status(
            "BertTraining",
            "run-2",
            {
                "progress": {"epoch": 2, "totalEpochs": 2, "step": 90, "totalSteps": 90},
                "conditions": [condition("Succeeded", "True", "Completed")],
            },
        )

    writer = threading.Thread(target=finish)
    writer.start()
    followed = bertops(
        "trainings",
        "logs",
        "run-2",
        "--state-dir",
        str(tmp_path),
        "--follow",
        "--poll",
        "0.2",
        "--timeout",
        "30",
    )
    writer.join()
    assert followed.exit_code == 0, followed.output
    assert "[done] model written" in followed.output
    last = followed.output.strip().splitlines()[-1]
    assert last.startswith("run-2: epoch 2/2 · step 90/90"), last
    assert last.endswith("Succeeded=True Completed"), last
