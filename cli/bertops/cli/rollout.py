"""``bertops rollout status|promote|abort|pause|resume|retry NAME [-n NAMESPACE]``: watch
and steer the canary rollout of a BertDeployment, like ``kubectl argo rollouts``.

Mounted by :mod:`bertops.cli.main` when the ``operator`` extra (the kubernetes client) is
installed. The actions write the ``bertops.io/rollout-action=<action>/<nonce>``
annotation with a fresh nonce (:mod:`bertops.operator.rollout.actions` says why an
annotation: the spec is Git's, status is the operator's) and, with ``--wait``, wait
until the operator lists the value in ``status.handledActions``. ``status`` prints the
rollout and exits with a code CI can gate on (:mod:`bertops.cli.rollout_view`):

- 0 healthy: serving a stable model, no canary, nothing rolled back;
- 1 degraded: the last canary was rolled back (or aborted) and is still selected, or
  nothing is served; for an action: the operator refused it;
- 2 not done: a canary in progress, paused or awaiting promotion, or not reconciled
  yet (with ``--timeout``: still so when the time ran out); for an action: ``--wait``
  timed out. Typer's own usage errors exit 2 too;
- 3 no such BertDeployment;
- 4 the API server could not be reached or refused the request.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from bertops.cli import rollout_view as view

if TYPE_CHECKING:  # the kubernetes client loads only when a command runs (fast --help)
    from bertops.cli.rollout_client import RolloutClient

console = Console()
rollout_app = typer.Typer(
    help="Canary rollouts of a BertDeployment: status (exit codes for CI), promote, abort, "
    "pause, resume, retry.",
    no_args_is_help=True,
)
NameArgument = typer.Argument(..., help="The BertDeployment's name.")
NamespaceOption = typer.Option(None, "--namespace", "-n", help="Default: the context's.")
KubeconfigOption = typer.Option(None, "--kubeconfig", envvar="KUBECONFIG")
POLL_SECONDS = 0.5
WATCH_TIMEOUT = 600.0  # --watch without --timeout still ends


def _connect(namespace: str | None, kubeconfig: str | None) -> RolloutClient:
    from bertops.cli.rollout_client import RolloutClient, RolloutClientError

    try:
        return RolloutClient.connect(kubeconfig, namespace)
    except RolloutClientError as error:
        console.print(f"[red]error:[/] {error}", highlight=False)
        raise typer.Exit(view.UNREACHABLE) from error


def _read(client: RolloutClient, name: str) -> dict[str, Any] | None:
    from bertops.cli.rollout_client import RolloutClientError

    try:
        return client.get(name)
    except RolloutClientError as error:
        console.print(f"[red]error:[/] {error}", highlight=False)
        raise typer.Exit(view.UNREACHABLE) from error


def _not_found(client: RolloutClient, name: str) -> typer.Exit:
    console.print(f"[red]error:[/] BertDeployment {client.namespace}/{name} not found")
    return typer.Exit(view.NOT_FOUND)


@rollout_app.command("status")
def status(
    name: str = NameArgument,
    namespace: str = NamespaceOption,
    kubeconfig: str = KubeconfigOption,
    watch: bool = typer.Option(
        False, "--watch", "-w", help="A live view of weight, gates and counts until done."
    ),
    timeout: float = typer.Option(
        None,
        min=0,
        help="Wait this long for a healthy or degraded end (paused and awaiting promotion "
        f"end the wait too); exit 2 if still in progress. --watch default: {WATCH_TIMEOUT:.0f}.",
    ),
    counts: bool = typer.Option(True, help="Read request counts from the gateway's /metrics."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """The rollout: stable, canary, weight, step, last analysis, counts, history.

    Exit: 0 healthy, 1 degraded/rolled back, 2 in progress/paused, 3 not found, 4 no API.
    """
    client = _connect(namespace, kubeconfig)
    if watch:
        raise typer.Exit(
            _watch(client, name, WATCH_TIMEOUT if timeout is None else timeout, counts)
        )
    deadline = time.monotonic() + (timeout or 0)
    body = _read(client, name)
    result = view.verdict(body)
    while not result.final and time.monotonic() < deadline:
        time.sleep(min(POLL_SECONDS * 4, max(0.0, deadline - time.monotonic())))
        body = _read(client, name)
        result = view.verdict(body)
    if body is None:
        raise _not_found(client, name)
    if as_json:
        document = {"phase": result.phase, "code": result.code, "message": result.message}
        typer.echo(json.dumps({**document, "status": body.get("status") or {}}, indent=2))
        raise typer.Exit(result.code)
    observations, why = _counts(body, client) if counts else (None, "not read (--no-counts)")
    console.print(view.render(body, result, observations, why))
    raise typer.Exit(result.code)


def _counts(body: dict[str, Any], client: RolloutClient) -> tuple[Any, str | None]:
    from bertops.cli.rollout_client import counts_or_reason

    return counts_or_reason(body, client.kube)


def _watch(client: RolloutClient, name: str, timeout: float, counts: bool) -> int:
    """Redraw the rollout every couple of seconds until it is final or the time is up."""
    from rich.live import Live

    deadline = time.monotonic() + timeout
    body = _read(client, name)
    if body is None:
        raise _not_found(client, name)
    result = view.verdict(body)
    with Live(view.render(body, result), console=console, refresh_per_second=4) as live:
        while True:
            observations, why = (
                _counts(body, client) if counts else (None, "not read (--no-counts)")
            )
            live.update(view.render(body, result, observations, why))
            if result.final or time.monotonic() >= deadline:
                break
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
            fresh = _read(client, name)
            if fresh is None:
                live.stop()
                raise _not_found(client, name)
            body, result = fresh, view.verdict(fresh)
    return result.code


def act(
    action: str,
    name: str,
    namespace: str | None,
    kubeconfig: str | None,
    wait: bool,
    timeout: float,
) -> int:
    """Write ``<action>/<nonce>`` and, with wait, report what the operator made of it."""
    from bertops.cli.rollout_client import RolloutClientError, new_value
    from bertops.operator.rollout.actions import ANNOTATION

    client = _connect(namespace, kubeconfig)
    body = _read(client, name)
    if body is None:
        raise _not_found(client, name)
    st = view.parse_status(body)
    if action in ("promote", "abort") and st.canary_model is None:
        console.print(f"[yellow]note:[/] no canary in progress now; {action} acts only on one")
    value = new_value(action)
    try:
        client.annotate(name, value)
    except RolloutClientError as error:
        console.print(f"[red]error:[/] {error}", highlight=False)
        return view.UNREACHABLE
    console.print(f"{client.namespace}/{name}: {ANNOTATION}={value}", highlight=False)
    if not wait:
        return 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            handled = client.handled(name, value)
        except RolloutClientError as error:
            console.print(f"[red]error:[/] {error}", highlight=False)
            return view.UNREACHABLE
        if handled is not None:
            if handled.refusal:
                console.print(f"[red]refused:[/] {handled.refusal}", highlight=False)
                return view.DEGRADED
            after = _read(client, name) or body
            result = view.verdict(after)
            console.print(f"applied: {result.phase} ({result.message})", highlight=False)
            return 0
        time.sleep(POLL_SECONDS)
    console.print(
        f"[yellow]not applied within {timeout:g}s:[/] is the operator running and "
        f"watching namespace {client.namespace}?"
    )
    return view.NOT_DONE


_HELP = {
    "promote": "Make the canary stable now, whatever its remaining steps and gates.",
    "abort": "Roll the canary back now; it is not rolled out again until the selection moves.",
    "pause": "Hold the rollout at its step (analysis, and a rollback, still run).",
    "resume": "Continue a rollout paused by `bertops rollout pause`.",
    "retry": "Allow a rolled-back or aborted model to be rolled out again.",
}


def _register(action: str, help_text: str) -> None:
    def command(
        name: str = NameArgument,
        namespace: str = NamespaceOption,
        kubeconfig: str = KubeconfigOption,
        wait: bool = typer.Option(
            False, "--wait", help="Wait until the operator has applied it (exit 1 if refused)."
        ),
        timeout: float = typer.Option(60.0, min=0, help="How long --wait waits (exit 2)."),
    ) -> None:
        raise typer.Exit(act(action, name, namespace, kubeconfig, wait, timeout))

    rollout_app.command(action, help=help_text)(command)


for _action, _text in _HELP.items():
    _register(_action, _text)
