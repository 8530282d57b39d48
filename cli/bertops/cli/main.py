"""The ``bertops`` command line (the ``bertops`` script): one entry point for every
component.

``cluster``, ``crds`` and ``demo`` live here; ``trainer``, ``server`` and ``operator`` are
each component's own Typer app. The wheel always ships every component's code, so a
component is mounted only when its extra's libraries are installed
(:mod:`bertops.cli.extras`); otherwise its name is still listed, and running it says
which extra to install and exits 2 instead of failing with a ModuleNotFoundError. The
component CLI modules import torch/uvicorn/kopf lazily, so ``bertops --help`` stays fast.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import rich.markup
import typer

from bertops.api import crdgen
from bertops.cli import extras
from bertops.cli.argocd import argocd_app
from bertops.cli.monitoring import monitoring_app
from bertops.cli.storage import storage_app

BAD_INPUT = 2  # the exit code for "cannot run as asked; retrying will not help"

app = typer.Typer(
    help="bertops: GitOps MLOps for BERT-family models on Kubernetes.",
    no_args_is_help=True,
    add_completion=False,
)
cluster_app = typer.Typer(
    help="The embedded control plane (real kube-apiserver + etcd).", no_args_is_help=True
)
crds_app = typer.Typer(
    help="The CustomResourceDefinitions generated from bertops.api.", no_args_is_help=True
)
app.add_typer(cluster_app, name="cluster")
cluster_app.add_typer(argocd_app, name="argocd")
cluster_app.add_typer(monitoring_app, name="monitoring")
cluster_app.add_typer(storage_app, name="storage")
app.add_typer(crds_app, name="crds")
app.add_typer(importlib.import_module("bertops.cli.images").images_app, name="images")


def _say(message: str) -> None:
    typer.echo(message, err=True)


def _require(command: str, *needed: str) -> None:
    """Exit 2 with an install hint when an extra that command needs is not installed."""
    absent = extras.missing(*needed)
    if absent:
        _say(
            f"error: `bertops {command}` needs the {' and '.join(needed)} "
            f"{'extras' if len(needed) > 1 else 'extra'} (missing here: {', '.join(absent)}). "
            f"Install with: {extras.install_hint(*needed)}"
        )
        raise typer.Exit(BAD_INPUT)


ClusterName = typer.Option("default", "--name", "-n", help="Cluster name (its own folder).")


@cluster_app.command("build")
def cluster_build(
    rebuild: bool = typer.Option(False, help="Rebuild even when cached."),
    download: bool = typer.Option(
        False, help="Fetch official release binaries instead of building (needs internet)."
    ),
    node: bool = typer.Option(
        False,
        help="Also build kubelet, kube-controller-manager, kube-scheduler, kube-proxy, "
        "kubectl and CoreDNS (always from their Go modules).",
    ),
) -> None:
    """Build kube-apiserver and etcd (and with --node the node binaries) from their Go
    modules into the cache; print the binaries' paths."""
    from bertops.cluster.controlplane import ensure_binaries

    binaries = ensure_binaries(_say, rebuild=rebuild, download=download)
    typer.echo(f"{binaries.kube_apiserver}\n{binaries.etcd}")
    if node:
        from bertops.cluster.node.build import ensure_node_binaries

        for path in ensure_node_binaries(_say, rebuild=rebuild).paths():
            typer.echo(str(path))


@cluster_app.command("up")
def cluster_up(
    name: str = ClusterName,
    monitoring: bool = typer.Option(
        False, help="Also start Prometheus (see `bertops cluster monitoring up`)."
    ),
    node: bool = typer.Option(
        False,
        help="Also start a real node: containerd, kubelet, kube-proxy and CoreDNS in their own "
        "network namespace, controllers beside the API server, the local images loaded "
        "(`bertops cluster build --node` and `bertops images build` first).",
    ),
) -> None:
    """Start (or reuse) a cluster on loopback, install the CRDs, print its kubeconfig path."""
    _require("cluster up", "operator")  # certificates (cryptography), CRDs (kubernetes)
    from bertops.cluster.controlplane import Cluster, ClusterError

    cluster = Cluster(name, progress=_say)
    try:
        cluster.up(node=node)
    except (ClusterError, RuntimeError) as error:
        _say(f"error: {error}")
        raise typer.Exit(1) from error
    if monitoring:
        from bertops.cli.monitoring import start

        start(name)
    _say(f"use it with: export KUBECONFIG={cluster.kubeconfig}")
    typer.echo(str(cluster.kubeconfig))


@cluster_app.command("down")
def cluster_down(
    name: str = ClusterName,
    purge: bool = typer.Option(False, help="Also delete the cluster's data folder."),
) -> None:
    """Stop the local-runtime processes recorded in the cluster's folder (the demo's model
    server and gateway), then its kube-apiserver and etcd, and wait until they have exited."""
    from bertops.cluster.controlplane import Cluster
    from bertops.cluster.monitoring import Monitoring
    from bertops.cluster.storage.run import Storage
    from bertops.cluster.teardown import DownError

    # Its Prometheus and S3 server first: nothing else would stop them, and purge deletes
    # their folders.
    Monitoring(Cluster(name).directory / "monitoring").down()
    from bertops.cluster.storage.node_access import withdraw

    withdraw(Cluster(name).directory / "storage")
    Storage(Cluster(name).directory / "storage").down()
    try:
        was_running = Cluster(name, progress=_say).down(purge=purge)
    except DownError as error:
        for failure in error.failures:
            _say(f"error: down: {failure}")
        _say(f"error: {len(error.failures)} stage(s) failed; every other stage ran")
        raise typer.Exit(1) from error
    if not was_running:
        _say(f"cluster {name!r} was not running")


@cluster_app.command("status")
def cluster_status(name: str = ClusterName) -> None:
    """Print the cluster's state as JSON; exit 1 when it is not running and ready."""
    from bertops.cluster.controlplane import Cluster

    status = Cluster(name).status()
    typer.echo(json.dumps(status, indent=2))
    if not status["ready"]:
        raise typer.Exit(1)


@cluster_app.command("env")
def cluster_env(name: str = ClusterName) -> None:
    """Print `export KUBECONFIG=...` for eval in a shell, and `export PATH=...` putting the
    cached kubectl (built by `bertops cluster build --node`) first when there is no kubectl
    on PATH, so `eval "$(bertops cluster env)"` gives a kubectl matching the API server."""
    import shlex
    import shutil

    from bertops.cluster.controlplane import Cluster
    from bertops.cluster.node.build import node_bin_dir

    for key, value in Cluster(name).env().items():
        typer.echo(f"export {key}={value}")
    if shutil.which("kubectl") is None and (node_bin_dir() / "kubectl").is_file():
        typer.echo(f"export PATH={shlex.quote(str(node_bin_dir()))}:$PATH")


@crds_app.command("generate")
def crds_generate(
    out: Path = typer.Option(None, help="Folder to write (default: crds/)."),
    check: bool = typer.Option(False, help="Only report stale files; exit 1 if any."),
) -> None:
    """Write crds/*.yaml from the pydantic API types."""
    directory = out or crdgen.default_crd_dir()
    if check:
        stale = crdgen.stale(directory)
        for name in stale:
            _say(f"stale: {directory / name}")
        if stale:
            raise typer.Exit(1)
        return
    for name in crdgen.write(directory):
        _say(f"wrote {directory / name}")


@crds_app.command("install")
def crds_install(kubeconfig: str = typer.Option(None, envvar="KUBECONFIG")) -> None:
    """Server-side apply the CRDs to the current cluster and wait until Established."""
    _require("crds install", "operator")
    from bertops.cluster.controlplane.crds import install

    for name in install(kubeconfig):
        _say(f"established {name}")


@app.command("demo")
def demo(
    per_label: int = typer.Option(300, help="Tweets per label in the demo corpus."),
    epochs: int = typer.Option(2, help="Fine-tuning epochs."),
    replicas: int = typer.Option(2, help="torch.distributed ranks for the fine-tune."),
    node: bool = typer.Option(
        False,
        "--node",
        help="From Git to pods: Argo CD syncs the operator and the app into the embedded "
        "cluster's real node, and the operator pod runs everything (needs root, the images "
        "and Argo CD: `make demo-node` sets them up).",
    ),
    artifacts: str = typer.Option(
        "local",
        help="The artifact store: local (a folder) or s3 (a real S3 server, VersityGW, "
        "started beside the cluster and built from its Go module if need be).",
    ),
) -> None:
    """The whole loop on this machine: control plane, operator, examples, kubectl get."""
    if artifacts not in ("local", "s3"):
        raise typer.BadParameter("must be local or s3", param_hint="--artifacts")
    if node:
        _require("demo --node", "operator")
        from bertops.cluster import demo_node

        raise typer.Exit(demo_node.run(per_label=per_label, epochs=epochs))
    _require("demo", "operator", "trainer")
    from bertops.cluster import demo as demo_module

    raise typer.Exit(
        demo_module.run(
            per_label=per_label,
            epochs=epochs,
            replicas=replicas,
            compression=extras.compression_available(),
            artifacts=artifacts,
        )
    )


def _not_installed(name: str, extra: str) -> None:
    """Mount a stand-in for a component whose extra is missing: any arguments, --help
    included, get the install hint and exit 2."""

    def stand_in() -> None:
        _require(name, extra)

    app.command(
        name,
        # Typer renders help as rich markup, where "[trainer]" would vanish as a tag.
        help=rich.markup.escape(f"(not installed here: {extras.install_hint(extra)})"),
        context_settings={
            "allow_extra_args": True,
            "ignore_unknown_options": True,
            "help_option_names": [],
        },
    )(stand_in)


# (module, command, extra): the component CLIs, mounted only where they can run.
for module_name, name, extra in (
    ("bertops.trainer.cli", "trainer", "trainer"),
    ("bertops.server.cli", "server", "server"),
    ("bertops.operator.run", "operator", "operator"),
):
    if extras.missing(extra):
        _not_installed(name, extra)
    else:
        app.add_typer(importlib.import_module(module_name).app, name=name)

# `bertops rollout` steers BertDeployment rollouts through the API server: it needs the
# kubernetes client, which comes with the operator extra.
if extras.missing("operator"):
    _not_installed("rollout", "operator")
else:
    app.add_typer(importlib.import_module("bertops.cli.rollout").rollout_app, name="rollout")

# The management service (bertops.ui; README, "Managing models"): three command groups and the
# web UI, all gated on the `ui` extra (the kubernetes client, starlette, uvicorn).
for module_name, attribute, name in (
    ("bertops.cli.models", "models_app", "models"),
    ("bertops.cli.runs", "datasets_app", "datasets"),
    ("bertops.cli.runs", "trainings_app", "trainings"),
):
    if extras.missing("ui"):
        _not_installed(name, "ui")
    else:
        app.add_typer(getattr(importlib.import_module(module_name), attribute), name=name)
if extras.missing("ui"):
    _not_installed("ui", "ui")
else:
    app.command("ui")(importlib.import_module("bertops.cli.models").serve)


def main() -> None:
    app(prog_name="bertops")


if __name__ == "__main__":
    main()
