"""``bertops models list|show|compare|download|delete`` and ``bertops ui``.

Mounted by :mod:`bertops.cli.main` when the ``ui`` extra is installed (with
``bertops datasets`` and ``bertops trainings`` from :mod:`bertops.cli.runs`). Reads and
changes go through :class:`bertops.ui.catalog.Catalog`, the layer the web UI uses too, and
what is printed comes from :mod:`bertops.ui.views`. Exit codes: 0 ok, 1 refused or failed
(a served model, an artifact that does not verify), 2 bad input (no such object).
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

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

models_app = typer.Typer(
    help="The model catalogue: list, show, compare, download, delete.", no_args_is_help=True
)


def lineage_text(chain: list[dict[str, Any]]) -> str:
    return " → ".join(
        f"{step['label']} {step['value']}" + (f" ({step['detail']})" if step["detail"] else "")
        for step in chain
    )


MODEL_COLUMNS: list[Column] = [
    ("model", lambda m: m["name"]),
    ("family", lambda m: fmt(m["family"])),
    ("format", lambda m: fmt(m["format"])),
    ("ready", lambda m: readiness(m["ready"])),
    ("accuracy", lambda m: fmt(m["metrics"].get("accuracy"))),
    ("macro F1", lambda m: fmt(m["metrics"].get("macroF1"))),
    ("size", lambda m: fmt(m["size"].get("display"))),
    ("p50 ms", lambda m: fmt(m["latency"].get("p50Batch1Ms"), 3)),
    ("parent", lambda m: fmt(m["parent"])),
    ("served by", lambda m: ", ".join(m["servedBy"]) or "-"),
]


@models_app.command("list")
def list_models(
    namespace: str = NamespaceOption, kubeconfig: str = KubeconfigOption, as_json: bool = JsonOption
) -> None:
    """The models with readiness, metrics, size, latency, parent and deployments."""
    from bertops.ui import service

    print_list(namespace, kubeconfig, as_json, service.models, "BertModels", MODEL_COLUMNS)


@models_app.command("show")
def show_model(
    name: str,
    namespace: str = NamespaceOption,
    kubeconfig: str = KubeconfigOption,
    as_json: bool = JsonOption,
) -> None:
    """One model: lineage (dataset checksum → training → parent → compression), metrics,
    size, latency, per-epoch curves and the deployments that serve it."""
    from bertops.ui import service
    from bertops.ui.catalog import CatalogError

    try:
        data = service.model(connect(namespace, kubeconfig), name)
    except CatalogError as error:
        raise fail(error) from error
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    ready = data["ready"]
    console.print(
        f"[bold]{name}[/] {ready['status']} {ready['reason']}: {ready['message']}", highlight=False
    )
    console.print(f"lineage: {lineage_text(data['lineage'])}", highlight=False)
    console.print(f"served by: {', '.join(data['servedBy']) or '-'}")
    console.print(
        f"artifact: {data['artifactUri'] or '-'}  manifest sha256: {data['manifestSha256'] or '-'}",
        highlight=False,
    )
    table = Table(title="metrics, size and latency")
    table.add_column("measure")
    table.add_column("value")
    for group in ("metrics", "size", "latency", "qualityDelta"):
        for key, value in data[group].items():
            table.add_row(f"{group}.{key}", fmt(value))
    console.print(table)
    curves = data["plots"]["curves"]
    if curves:
        epochs = sorted({x for points in curves.values() for x, _ in points})
        history = Table(title="per epoch")
        history.add_column("epoch")
        for series in curves:
            history.add_column(series)
        for epoch in epochs:
            values = [dict(points).get(epoch) for points in curves.values()]
            history.add_row(fmt(epoch), *(fmt(v) for v in values))
        console.print(history)


@models_app.command("compare")
def compare_models(
    a: str,
    b: str,
    namespace: str = NamespaceOption,
    kubeconfig: str = KubeconfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Two models side by side: metrics, size and latency (the better one in bold)."""
    from bertops.ui import service
    from bertops.ui.catalog import CatalogError

    try:
        data = service.compare(connect(namespace, kubeconfig), a, b)
    except CatalogError as error:
        raise fail(error) from error
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    table = Table(title=f"{a} vs {b}")
    for column in ("", a, b, "b - a"):
        table.add_column(column)
    for row in data["rows"]:
        left, right = fmt(row["a"]), fmt(row["b"])
        left = f"[bold green]{left}[/]" if row["better"] == "a" else left
        right = f"[bold green]{right}[/]" if row["better"] == "b" else right
        table.add_row(row["metric"], left, right, fmt(row["delta"]))
    console.print(table)


@models_app.command("download")
def download_model(
    name: str,
    out: Path = typer.Option(None, "--out", "-o", help="Folder to create (default: ./NAME)."),
    namespace: str = NamespaceOption,
    kubeconfig: str = KubeconfigOption,
) -> None:
    """Copy a model's artifact, verifying every file's sha256 as it is written."""
    from bertops.api.artifacts import ArtifactError
    from bertops.ui import artifacts
    from bertops.ui.catalog import CatalogError

    target = (out or Path(name)).absolute()
    try:
        body = connect(namespace, kubeconfig).get("BertModel", name)
    except CatalogError as error:
        raise fail(error) from error
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["done"] = artifacts.download(body, target)
        except (ArtifactError, OSError) as error:
            outcome["error"] = error

    total = sum(int(f.get("bytes", 0)) for f in _listed_files(body))
    worker = threading.Thread(target=work, name="download", daemon=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"verifying {name}", total=total or None)
        worker.start()
        while worker.is_alive():
            progress.update(task, completed=artifacts.staged_bytes(target.parent, target.name))
            time.sleep(0.1)
        progress.update(task, completed=total)
    if "error" in outcome:
        console.print(f"[red]error:[/] {outcome['error']}", highlight=False)
        raise typer.Exit(1)
    done = outcome["done"]
    console.print(
        f"{name}: {len(done.manifest.files)} files, {done.total_bytes} bytes verified "
        f"→ {done.folder}\nmanifest sha256 {done.manifest_sha256}",
        highlight=False,
    )


def _listed_files(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest's file list for the progress bar's total (best effort)."""
    from bertops.api.artifacts import MODEL_MANIFEST, ArtifactError, ModelManifest, read_manifest
    from bertops.ui import artifacts

    try:
        with artifacts.artifact_source(body, only=(MODEL_MANIFEST,)) as folder:
            manifest, _ = read_manifest(folder, ModelManifest)
    except (ArtifactError, OSError):
        return []
    return [{"bytes": f.bytes} for f in manifest.files]


@models_app.command("delete")
def delete_model(
    name: str,
    force: bool = typer.Option(False, "--force", help="Delete even while a deployment serves it."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
    namespace: str = NamespaceOption,
    kubeconfig: str = KubeconfigOption,
) -> None:
    """Delete a model; refused while a BertDeployment serves it, unless --force."""
    from bertops.ui.catalog import CatalogError

    catalog = connect(namespace, kubeconfig)
    if not yes:
        typer.confirm(f"Delete BertModel {catalog.namespace}/{name}?", abort=True)
    try:
        served = catalog.delete_model(name, force=force)
    except CatalogError as error:
        raise fail(error) from error
    note = f" (it was served by {', '.join(served)})" if served else ""
    console.print(f"deleted BertModel {catalog.namespace}/{name}{note}", highlight=False)


def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8090),
    namespace: str = NamespaceOption,
    kubeconfig: str = KubeconfigOption,
    token_file: Path = typer.Option(
        None,
        help="File holding the bearer token (else $BERTOPS_UI_TOKEN, else a new one is printed).",
    ),
    pass_through_token: bool = typer.Option(
        False, help="Callers sign in with their own Kubernetes token; RBAC decides."
    ),
    allow_writes: bool = typer.Option(False, help="Enable delete, promote, abort."),
    secure_cookie: bool = typer.Option(
        False, help="Mark the session cookie Secure (when served behind TLS)."
    ),
) -> None:
    """The web UI and JSON API (OpenAPI at /openapi.json); read-only by default."""
    import uvicorn

    from bertops.ui.app import create_app
    from bertops.ui.service import Settings

    catalog = connect(namespace, kubeconfig)
    token = None
    if not pass_through_token:
        token = (
            token_file.read_text().strip()
            if token_file
            else os.environ.get("BERTOPS_UI_TOKEN") or None
        )
        if token is None:
            token = secrets.token_urlsafe(24)
            typer.echo(f"bertops ui token (sign in with it): {token}", err=True)
    settings = Settings(
        namespace=catalog.namespace,
        token=token,
        pass_through=pass_through_token,
        allow_writes=allow_writes,
        secure_cookie=secure_cookie,
    )
    typer.echo(
        f"bertops ui on http://{host}:{port}/ (namespace {catalog.namespace}, "
        f"{'writes enabled' if allow_writes else 'read-only'})",
        err=True,
    )
    uvicorn.run(create_app(settings, catalog), host=host, port=port, log_level="warning")
