"""``bertops operator``: runs the kopf operator with the chosen runtime.

Builds the config, the API layer, the runtime, the reconcilers and the metrics endpoint,
then hands the registry to kopf. The CLI module imports kopf lazily, so ``bertops --help``
stays fast.
"""

from __future__ import annotations

import asyncio
import logging
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

    kube = Kube.from_kubeconfig(kubeconfig)
    metrics = OperatorMetrics()
    stop_metrics = metrics.serve(config.metrics_port) if config.metrics_port else None
    reconciler = Reconciler(kube, make_runtime(config, kube), config, metrics)
    registry = build_registry(reconciler, config.poll_seconds)

    @kopf.on.login(registry=registry)
    def login(**_: object) -> kopf.ConnectionInfo:
        # The same credentials as our API layer (in-cluster or the given kubeconfig), not
        # kopf's guess from the process-wide default kubeconfig.
        return connection_info(kube.api_client.configuration)

    try:
        asyncio.run(
            kopf.operator(
                registry=registry,
                standalone=True,
                clusterwide=not config.namespaces,
                namespaces=list(config.namespaces),
                stop_flag=stop_flag,
                ready_flag=ready_flag,
            )
        )
    finally:
        if stop_metrics:
            stop_metrics()
        kube.api_client.close()


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
    image: str = typer.Option(OperatorConfig.image, help="Kubernetes runtime: step image."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Reconcile BertDataset, BertTraining and BertModel objects."""
    if runtime not in ("local", "kubernetes"):
        raise typer.BadParameter("runtime must be local or kubernetes")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    overrides: dict[str, object] = {}
    if artifact_root:
        overrides["artifact_root"] = artifact_root
    elif runtime == "kubernetes":
        # Steps see the artifact volume at its mount path; the operator pod mounts the
        # same volume there (read-only) to verify model manifests.
        overrides["artifact_root"] = OperatorConfig.artifact_mount
    if state_dir:
        overrides["state_dir"] = state_dir
    config = OperatorConfig(
        runtime=runtime,  # type: ignore[arg-type]
        namespaces=tuple(namespace),
        poll_seconds=poll,
        metrics_port=metrics_port,
        image=image,
        **overrides,  # type: ignore[arg-type]
    )
    run_operator(config, kubeconfig=kubeconfig)
