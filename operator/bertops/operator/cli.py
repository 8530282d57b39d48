"""The ``bertops`` command line: one entry point whose subcommands come from each
installed component.

``cluster`` and ``crds`` live here; ``trainer``, ``serve`` and ``gateway`` are added when
the trainer/server components are installed (their CLI modules must import torch lazily,
so ``bertops --help`` stays fast and works in the torch-free operator image).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path

import typer

from bertops.api import crdgen

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
app.add_typer(crds_app, name="crds")


def _say(message: str) -> None:
    typer.echo(message, err=True)


ClusterName = typer.Option("default", "--name", "-n", help="Cluster name (its own folder).")


@cluster_app.command("build")
def cluster_build(
    rebuild: bool = typer.Option(False, help="Rebuild even when cached."),
    download: bool = typer.Option(
        False, help="Fetch official release binaries instead of building (needs internet)."
    ),
) -> None:
    """Build kube-apiserver and etcd from their Go modules into the cache."""
    from bertops.operator.controlplane import ensure_binaries

    binaries = ensure_binaries(_say, rebuild=rebuild, download=download)
    typer.echo(f"{binaries.kube_apiserver}\n{binaries.etcd}")


@cluster_app.command("up")
def cluster_up(name: str = ClusterName) -> None:
    """Start (or reuse) a cluster on loopback, install the CRDs, print its kubeconfig path."""
    from bertops.operator.controlplane import Cluster, ClusterError

    cluster = Cluster(name, progress=_say)
    try:
        cluster.up()
    except (ClusterError, RuntimeError) as error:
        _say(f"error: {error}")
        raise typer.Exit(1) from error
    _say(f"use it with: export KUBECONFIG={cluster.kubeconfig}")
    typer.echo(str(cluster.kubeconfig))


@cluster_app.command("down")
def cluster_down(
    name: str = ClusterName,
    purge: bool = typer.Option(False, help="Also delete the cluster's data folder."),
) -> None:
    """Stop the cluster's kube-apiserver and etcd and wait until they have exited."""
    from bertops.operator.controlplane import Cluster

    if not Cluster(name, progress=_say).down(purge=purge):
        _say(f"cluster {name!r} was not running")


@cluster_app.command("status")
def cluster_status(name: str = ClusterName) -> None:
    """Print the cluster's state as JSON; exit 1 when it is not running and ready."""
    from bertops.operator.controlplane import Cluster

    status = Cluster(name).status()
    typer.echo(json.dumps(status, indent=2))
    if not status["ready"]:
        raise typer.Exit(1)


@cluster_app.command("env")
def cluster_env(name: str = ClusterName) -> None:
    """Print `export KUBECONFIG=...` for eval in a shell."""
    from bertops.operator.controlplane import Cluster

    for key, value in Cluster(name).env().items():
        typer.echo(f"export {key}={value}")


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
    from bertops.operator.controlplane.crds import install

    for name in install(kubeconfig):
        _say(f"established {name}")


@app.command("demo")
def demo(
    per_label: int = typer.Option(300, help="Tweets per label in the demo corpus."),
    epochs: int = typer.Option(1, help="Fine-tuning epochs."),
    replicas: int = typer.Option(2, help="torch.distributed ranks for the fine-tune."),
) -> None:
    """The whole loop on this machine: control plane, operator, examples, kubectl get."""
    from bertops.operator import demo as demo_module

    raise typer.Exit(demo_module.run(per_label=per_label, epochs=epochs, replicas=replicas))


# Component CLIs register themselves when their component is installed. Their modules
# import torch/uvicorn lazily, so this costs little and works in the operator image.
for module_name, name in (
    ("bertops.trainer.cli", "trainer"),
    ("bertops.server.cli", "server"),
    ("bertops.operator.run", "operator"),
):
    if importlib.util.find_spec(module_name) is not None:
        app.add_typer(importlib.import_module(module_name).app, name=name)


def main() -> None:
    app(prog_name="bertops")


if __name__ == "__main__":
    main()
