"""What the catalogue commands share: their options, reaching the cluster, the exit
code of a refusal, number formatting, and :func:`print_list`, the one way
``bertops models|datasets|trainings list`` fetch, fail and print (a table, or JSON).

Used by :mod:`bertops.cli.models` and :mod:`bertops.cli.runs`. The kubernetes client
loads only when a command runs, so ``bertops --help`` stays fast.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from bertops.ui.catalog import Catalog, CatalogError

console = Console()
NamespaceOption = typer.Option(None, "--namespace", "-n", help="Default: the context's.")
KubeconfigOption = typer.Option(None, "--kubeconfig", envvar="KUBECONFIG")
JsonOption = typer.Option(False, "--json", help="Print JSON instead of tables.")

Item = dict[str, Any]
Column = tuple[str, Callable[[Item], str]]
"""A table column: its heading and how to write one item's cell."""


def connect(namespace: str | None, kubeconfig: str | None) -> Catalog:
    from bertops.ui.catalog import Catalog

    try:
        return Catalog.connect(kubeconfig, namespace)
    except Exception as error:  # no kubeconfig, unreadable file: say so, no traceback
        console.print(f"[red]error:[/] cannot reach Kubernetes: {error}")
        raise typer.Exit(2) from error


def fail(error: CatalogError) -> typer.Exit:
    console.print(f"[red]error:[/] {error.message}", highlight=False)
    return typer.Exit(2 if error.status in (404, 422) else 1)


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def readiness(condition: dict[str, Any]) -> str:
    """A condition as a cell: its reason, else its status."""
    return str(condition["reason"] or condition["status"])


def print_list(
    namespace: str | None,
    kubeconfig: str | None,
    as_json: bool,
    fetch: Callable[[Catalog], dict[str, Any]],
    kind: str,
    columns: Sequence[Column],
) -> None:
    """Fetch a list from the catalogue (``fetch``, a :mod:`bertops.ui.service` call) and
    print it: JSON as the management API returns it, or a table of ``kind`` objects."""
    from bertops.ui.catalog import CatalogError

    catalog = connect(namespace, kubeconfig)
    try:
        data = fetch(catalog)
    except CatalogError as error:
        raise fail(error) from error
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    table = Table(title=f"{kind} in {catalog.namespace}")
    for heading, _ in columns:
        table.add_column(heading)
    for item in data["items"]:
        table.add_row(*(cell(item) for _, cell in columns))
    console.print(table)
