"""``bertops datasets list|show`` and ``bertops trainings list|show|logs``: the data and
the runs behind the models, with a run's logs and progress, followed live with
``--follow`` until it succeeds or fails.

Mounted by :mod:`bertops.cli.main` beside :mod:`bertops.cli.models` (same options, same
exit codes); reads through :class:`bertops.ui.catalog.Catalog`, logs through
:mod:`bertops.ui.logs`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from bertops.cli.catalog_output import (
    Column,
    JsonOption,
    KubeconfigOption,
    NamespaceOption,
    connect,
    console,
    fail,
    fmt,
    print_list,
    readiness,
)

datasets_app = typer.Typer(help="Prepared datasets: list, show.", no_args_is_help=True)
trainings_app = typer.Typer(help="Training runs: list, show, logs.", no_args_is_help=True)


DATASET_COLUMNS: list[Column] = [
    ("dataset", lambda d: d["name"]),
    ("rows", lambda d: fmt(d["rows"].get("total"))),
    ("labels", lambda d: ", ".join(d["labels"]) or "-"),
    ("checksum", lambda d: (d["checksum"] or "-")[:12]),
    ("ready", lambda d: readiness(d["ready"])),
    ("source", lambda d: fmt(d["source"])),
]


@datasets_app.command("list")
def list_datasets(
    namespace: str = NamespaceOption, kubeconfig: str = KubeconfigOption, as_json: bool = JsonOption
) -> None:
    """The datasets with rows, labels, checksum and readiness."""
    from bertops.ui import service

    print_list(namespace, kubeconfig, as_json, service.datasets, "BertDatasets", DATASET_COLUMNS)


@datasets_app.command("show")
def show_dataset(
    name: str,
    namespace: str = NamespaceOption,
    kubeconfig: str = KubeconfigOption,
) -> None:
    """One dataset: source, split sizes, label counts, checksum, artifact."""
    from bertops.ui import service
    from bertops.ui.catalog import CatalogError

    try:
        data = service.dataset(connect(namespace, kubeconfig), name)
    except CatalogError as error:
        raise fail(error) from error
    typer.echo(json.dumps(data, indent=2))


def _training_columns() -> list[Column]:
    from bertops.ui import logs

    return [
        ("training", lambda t: t["name"]),
        ("dataset", lambda t: fmt(t["dataset"])),
        ("ranks", lambda t: fmt(t["replicas"])),
        ("progress", lambda t: logs.progress_line(t["progress"])),
        ("test accuracy", lambda t: fmt(t["testMetrics"].get("accuracy"))),
        ("model", lambda t: fmt(t["model"])),
        ("state", lambda t: readiness(t["succeeded"])),
    ]


@trainings_app.command("list")
def list_trainings(
    namespace: str = NamespaceOption, kubeconfig: str = KubeconfigOption, as_json: bool = JsonOption
) -> None:
    """The runs with progress, loss, test accuracy, model and outcome."""
    from bertops.ui import service

    columns = _training_columns()
    print_list(namespace, kubeconfig, as_json, service.trainings, "BertTrainings", columns)


@trainings_app.command("show")
def show_training(
    name: str,
    namespace: str = NamespaceOption,
    kubeconfig: str = KubeconfigOption,
) -> None:
    """One run: progress, metrics, model, step and attempts."""
    from bertops.ui import service
    from bertops.ui.catalog import CatalogError

    try:
        data = service.training(connect(namespace, kubeconfig), name)
    except CatalogError as error:
        raise fail(error) from error
    typer.echo(json.dumps(data, indent=2))


@trainings_app.command("logs")
def training_logs(
    name: str,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until it ends."),
    state_dir: Path = typer.Option(
        None, help="The local runtime's state folder (default: the operator's)."
    ),
    poll: float = typer.Option(1.0, min=0.05, help="Seconds between polls with --follow."),
    timeout: float = typer.Option(0, min=0, help="Stop following after this many seconds."),
    namespace: str = NamespaceOption,
    kubeconfig: str = KubeconfigOption,
) -> None:
    """A run's step logs and progress; with --follow, live until it succeeds or fails."""
    from bertops.ui import logs, views
    from bertops.ui.catalog import CatalogError

    catalog = connect(namespace, kubeconfig)
    try:
        body = catalog.get("BertTraining", name)
    except CatalogError as error:
        raise fail(error) from error
    reader: logs.LogReader | None = None
    deadline = time.monotonic() + timeout if timeout else None
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(name, total=None)
        while True:
            row = views.training_row(body)
            step = row["step"]
            if step and (reader is None or reader.step != step):
                reader = logs.LogReader(catalog, state_dir or logs.default_state_dir(), step)
                progress.console.print(f"step {step}: logs from {reader.where()}", highlight=False)
            for line in reader.read() if reader else []:
                progress.console.print(line, markup=False, highlight=False)
            p = row["progress"]
            progress.update(
                task,
                description=f"{name} {logs.progress_line(p)}",
                total=p.get("totalSteps") or None,
                completed=p.get("step") or 0,
            )
            over = views.finished(body) or (deadline is not None and time.monotonic() > deadline)
            if not follow or over:
                break
            time.sleep(poll)
            try:
                body = catalog.get("BertTraining", name)
            except CatalogError as error:
                raise fail(error) from error
    if reader is not None and follow:
        for line in reader.read():  # what was written between the last poll and the end
            console.print(line, markup=False, highlight=False)
    state = row["succeeded"]
    console.print(
        f"{name}: {logs.progress_line(row['progress'])}; Succeeded={state['status']} "
        f"{state['reason']} {state['message']}".rstrip(),
        highlight=False,
    )
    if state["status"] == "False":
        raise typer.Exit(1)
