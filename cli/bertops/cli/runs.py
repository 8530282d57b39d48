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
from rich.table import Table

from bertops.cli.models import (
    JsonOption,
    KubeconfigOption,
    NamespaceOption,
    connect,
    console,
    fail,
    fmt,
)

datasets_app = typer.Typer(help="Prepared datasets: list, show.", no_args_is_help=True)
trainings_app = typer.Typer(help="Training runs: list, show, logs.", no_args_is_help=True)


@datasets_app.command("list")
def list_datasets(
    namespace: str = NamespaceOption, kubeconfig: str = KubeconfigOption, as_json: bool = JsonOption
) -> None:
    """The datasets with rows, labels, checksum and readiness."""
    from bertops.ui import service
    from bertops.ui.catalog import CatalogError

    catalog = connect(namespace, kubeconfig)
    try:
        data = service.datasets(catalog)
    except CatalogError as error:
        raise fail(error) from error
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    table = Table(title=f"BertDatasets in {catalog.namespace}")
    for column in ("dataset", "rows", "labels", "checksum", "ready", "source"):
        table.add_column(column)
    for d in data["items"]:
        table.add_row(
            d["name"],
            fmt(d["rows"].get("total")),
            ", ".join(d["labels"]) or "-",
            (d["checksum"] or "-")[:12],
            d["ready"]["reason"] or d["ready"]["status"],
            fmt(d["source"]),
        )
    console.print(table)


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


@trainings_app.command("list")
def list_trainings(
    namespace: str = NamespaceOption, kubeconfig: str = KubeconfigOption, as_json: bool = JsonOption
) -> None:
    """The runs with progress, loss, test accuracy, model and outcome."""
    from bertops.ui import logs, service
    from bertops.ui.catalog import CatalogError

    catalog = connect(namespace, kubeconfig)
    try:
        data = service.trainings(catalog)
    except CatalogError as error:
        raise fail(error) from error
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    table = Table(title=f"BertTrainings in {catalog.namespace}")
    for column in ("training", "dataset", "ranks", "progress", "test accuracy", "model", "state"):
        table.add_column(column)
    for t in data["items"]:
        table.add_row(
            t["name"],
            fmt(t["dataset"]),
            fmt(t["replicas"]),
            logs.progress_line(t["progress"]),
            fmt(t["testMetrics"].get("accuracy")),
            fmt(t["model"]),
            t["succeeded"]["reason"] or t["succeeded"]["status"],
        )
    console.print(table)


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
