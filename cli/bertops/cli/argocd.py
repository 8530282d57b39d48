"""``bertops cluster argocd build|up|down``: a real Argo CD (built from its Go module at a
pinned version, see :mod:`bertops.cluster.argocd`) beside an embedded cluster, so Git can
drive bertops the way it does on a real cluster. Mounted under ``bertops cluster`` by
:mod:`bertops.cli.main`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from bertops.cluster.argocd.run import ArgoCD

argocd_app = typer.Typer(
    help="A real Argo CD (application controller + repo-server) on the embedded cluster.",
    no_args_is_help=True,
)
ClusterName = typer.Option("default", "--name", "-n", help="The embedded cluster's name.")


def _say(message: str) -> None:
    typer.echo(message, err=True)


@argocd_app.command("build")
def argocd_build(rebuild: bool = typer.Option(False, help="Build even when cached.")) -> None:
    """Build argocd from its Go module into the cache (about 8 minutes on 2 cores)."""
    from bertops.cluster.argocd.build import ensure_argocd

    try:
        typer.echo(str(ensure_argocd(_say, rebuild=rebuild)))
    except RuntimeError as error:
        _say(f"error: {error}")
        raise typer.Exit(1) from error


def _argocd(name: str) -> ArgoCD:
    from bertops.cluster.argocd.run import ArgoCD
    from bertops.cluster.controlplane import Cluster

    cluster = Cluster(name)
    return ArgoCD(kubeconfig=cluster.kubeconfig, directory=cluster.directory / "argocd")


@argocd_app.command("up")
def argocd_up(name: str = ClusterName) -> None:
    """Install Argo CD's CRDs and our health Lua, start redis, repo-server and controller."""
    argocd = _argocd(name)
    try:
        argocd.up()
    except RuntimeError as error:
        _say(f"error: {error}")
        raise typer.Exit(1) from error
    _say(f"Argo CD is running (logs in {argocd.directory}); create Applications in 'argocd'")


@argocd_app.command("down")
def argocd_down(name: str = ClusterName) -> None:
    """Stop the Argo CD processes of this cluster."""
    _argocd(name).down()
