"""``bertops operator``: runs the kopf operator with the chosen runtime.

Builds the config, the API layer, the runtime, the reconcilers and the metrics endpoint,
waits to lead (a coordination.k8s.io Lease, see :mod:`bertops.operator.leader`), then
hands the registry to kopf. The CLI module imports kopf lazily, so ``bertops --help``
stays fast.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import threading
from pathlib import Path
from typing import Any

import typer

from bertops.operator.config import OperatorConfig

app = typer.Typer(
    help="Run the bertops operator (kopf).", no_args_is_help=False, invoke_without_command=True
)


def run_operator(
    config: OperatorConfig,
    kubeconfig: str | None = None,
    stop_flag: threading.Event | None = None,
    ready_flag: threading.Event | None = None,
) -> None:
    """Run until stop_flag is set (or forever). Used by the CLI and the tests."""
    import kopf

    from bertops.operator.handlers import build_registry
    from bertops.operator.kube import Kube
    from bertops.operator.metrics import OperatorMetrics
    from bertops.operator.reconcile import Reconciler
    from bertops.operator.runtime import make_runtime
    from bertops.operator.runtime.argo import ArgoRuntime

    kube = Kube.from_kubeconfig(kubeconfig)
    metrics = OperatorMetrics()
    stop_metrics = (
        metrics.serve(config.metrics_port, config.metrics_address) if config.metrics_port else None
    )
    # Both runtimes share the API layer: the native one for most objects, Argo's for
    # those with spec.engine 'argo' (it needs no Argo at start-up, only when used).
    reconciler = Reconciler(
        kube, make_runtime(config, kube), config, metrics, argo_runtime=ArgoRuntime(config, kube)
    )
    registry = build_registry(reconciler, config.poll_seconds)

    @kopf.on.login(registry=registry)
    def login(**_: object) -> kopf.ConnectionInfo:
        # The same credentials as our API layer (in-cluster or the given kubeconfig), not
        # kopf's guess from the process-wide default kubeconfig.
        return connection_info(kube.api_client.configuration)

    try:
        if config.leader_election:
            _lead(kube.api_client, registry, config, stop_flag or threading.Event(), ready_flag)
        else:
            _run_kopf(registry, config, stop_flag, ready_flag)
    finally:
        if stop_metrics:
            stop_metrics()
        kube.api_client.close()


def _lead(
    api_client: Any,
    registry: Any,
    config: OperatorConfig,
    stop_flag: threading.Event,
    ready_flag: threading.Event | None,
) -> None:
    """Stand by until this replica holds the Lease, then run kopf until stopped or the
    Lease is lost (then raise, so the process exits and is restarted as a standby)."""
    from bertops.operator.leader import LeaderElector, LeadershipLostError

    elector = LeaderElector(api_client, config)
    if not elector.acquire(stop_flag):
        return  # stopped while standing by
    kopf_stop = threading.Event()
    elector.keep(stop_flag, kopf_stop)
    try:
        _run_kopf(registry, config, kopf_stop, ready_flag)
    finally:
        elector.release()
    if elector.lost.is_set():
        raise LeadershipLostError(f"lost lease {elector.namespace}/{elector.name}")


def _run_kopf(
    registry: Any,
    config: OperatorConfig,
    stop_flag: threading.Event | None,
    ready_flag: threading.Event | None,
) -> None:
    import kopf

    async def operate() -> None:
        try:
            await kopf.operator(
                registry=registry,
                # No kopf peering: the Lease already makes this the only active replica.
                standalone=True,
                clusterwide=not config.namespaces,
                namespaces=list(config.namespaces),
                stop_flag=stop_flag,
                ready_flag=ready_flag,
            )
        finally:
            if stop_flag is not None:
                # kopf waits for a thread flag in a worker thread of the loop's default
                # executor. Ended by a signal, it leaves that wait pending, and asyncio.run
                # then waits for the thread for ever (an operator that never exits on
                # SIGTERM with leader election on): the operator has stopped, so say so.
                stop_flag.set()
            await _drain_transports()

    asyncio.run(operate())


async def _drain_transports(grace: float = 2.0) -> None:
    """Let the loop finish closing its connections before asyncio.run closes it.

    kopf closes its aiohttp sessions on exit, but a watch stream cut off mid-response is
    closed with a TLS shutdown (close_notify, then the peer's answer) that nobody awaits.
    Closing the loop before that ends abandons the transport and its socket, which warn
    as unclosed when garbage-collected, at some random later point (in the tests: in
    another test). So wait, bounded, for them, then abort what is left.
    """
    loop = asyncio.get_running_loop()
    # The selector loop's registry of its open transports (no public equivalent).
    transports = getattr(loop, "_transports", None)
    if transports is None:
        return

    def still_open() -> list[Any]:
        # A transport drops its socket once closed; closing ones (the TLS shutdown) still
        # hold it.
        return [t for t in list(transports.values()) if getattr(t, "_sock", None) is not None]

    for _ in range(int(grace / 0.02)):  # polled: closing transports signal nothing
        if not still_open():
            return
        await asyncio.sleep(0.02)
    for transport in still_open():
        transport.abort()
    await asyncio.sleep(0)  # abort() closes the socket in the next loop iteration


def connection_info(configuration: Any) -> Any:
    """kopf credentials from a kubernetes-client Configuration."""
    import kopf

    header = configuration.get_api_key_with_prefix(
        "BearerToken"
    ) or configuration.get_api_key_with_prefix("authorization")
    parts = header.split(" ", 1) if header else []
    scheme, token = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0] if parts else None)
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


@app.callback()
def main(
    runtime: str = typer.Option("local", help="Where steps run: local | kubernetes."),
    namespace: list[str] = typer.Option([], "--namespace", "-n", help="Watch only these."),
    kubeconfig: str = typer.Option(None, envvar="KUBECONFIG", help="Default: in-cluster."),
    artifact_root: str = typer.Option(None, envvar="BERTOPS_ARTIFACT_ROOT"),
    state_dir: Path = typer.Option(None, help="Local runtime: step folders."),
    poll: float = typer.Option(2.0, help="Seconds between polls of running steps."),
    metrics_port: int = typer.Option(8081, help="Prometheus port (0: off)."),
    metrics_address: str = typer.Option(
        "127.0.0.1", help="Address /metrics listens on (0.0.0.0 in-cluster, for Prometheus)."
    ),
    image: str = typer.Option(OperatorConfig.image, help="Kubernetes runtime: step image."),
    allow_uri_prefix: list[str] = typer.Option(
        [],
        "--allow-uri-prefix",
        help="A path or URI prefix specs may read/write besides the artifact root (repeatable).",
    ),
    allow_uri_scheme: list[str] = typer.Option(
        list(OperatorConfig.allowed_uri_schemes),
        "--allow-uri-scheme",
        help="Remote URI schemes specs may use (repeatable; replaces the default list).",
    ),
    allow_loopback_http: bool = typer.Option(
        False, help="Let http(s) URIs name loopback hosts (a single-machine setup)."
    ),
    max_attempts: int = typer.Option(
        OperatorConfig.step_max_attempts, help="Attempts per step (exit codes 1 and 3 retry)."
    ),
    leader_elect: bool = typer.Option(
        True, help="Act only while holding the Lease (one active replica of several)."
    ),
    lease_namespace: str = typer.Option(
        "", help="Namespace of the Lease (default: first --namespace, else the pod's own)."
    ),
    prometheus_url: str = typer.Option(
        "", help="Rollout analysis from this Prometheus (default: scrape each gateway)."
    ),
    serving_image: str = typer.Option(
        OperatorConfig.serving_image, help="Kubernetes runtime: model server/gateway image."
    ),
    step_command: str = typer.Option(
        "",
        "--step-command",
        help="Local runtime: the command that runs a step, split as a shell line "
        "(default: bertops trainer). For benchmarks and tests, e.g. a stub step.",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Reconcile BertDataset, BertTraining, BertModel and BertDeployment objects."""
    if runtime not in ("local", "kubernetes"):
        raise typer.BadParameter("runtime must be local or kubernetes")
    _configure_logging(verbose)
    overrides = _path_overrides(runtime, artifact_root, state_dir, step_command)
    config = OperatorConfig(
        runtime=runtime,  # type: ignore[arg-type]
        namespaces=tuple(namespace),
        poll_seconds=poll,
        metrics_port=metrics_port,
        metrics_address=metrics_address,
        image=image,
        allowed_uri_prefixes=tuple(allow_uri_prefix),
        allowed_uri_schemes=tuple(s.lower() for s in allow_uri_scheme),
        allow_loopback_http=allow_loopback_http,
        step_max_attempts=max_attempts,
        leader_election=leader_elect,
        lease_namespace=lease_namespace,
        prometheus_url=prometheus_url,
        serving_image=serving_image,
        **overrides,  # type: ignore[arg-type]
    )
    run_operator(config, kubeconfig=kubeconfig)


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        # kopf logs two lines per watch event and object ("Handler 'track' succeeded"): at
        # a few hundred objects that is most of the log and a real share of the CPU. The
        # reconcilers log each meaningful transition themselves; kopf's warnings stay.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        # httpx logs every request at INFO: the rollout analysis scrapes each gateway's
        # /metrics every few seconds, which buried the reconcilers' lines in `kubectl logs`.
        logging.getLogger("httpx").setLevel(logging.WARNING)


def _path_overrides(
    runtime: str, artifact_root: str | None, state_dir: Path | None, step_command: str
) -> dict[str, object]:
    """The config fields whose default depends on the runtime or that are only set when
    given: where artifacts and step folders live, and the local step command."""
    overrides: dict[str, object] = {}
    if artifact_root:
        overrides["artifact_root"] = artifact_root
    elif runtime == "kubernetes":
        # Steps see the artifact volume at its mount path; the operator pod mounts the
        # same volume there (read-only) to verify model manifests.
        overrides["artifact_root"] = OperatorConfig.artifact_mount
    if state_dir:
        overrides["state_dir"] = state_dir
    if step_command:
        overrides["step_command"] = tuple(shlex.split(step_command))
    return overrides
