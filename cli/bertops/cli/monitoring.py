"""``bertops cluster monitoring up|down``: a real Prometheus beside an embedded cluster
(see :mod:`bertops.cluster.monitoring`), scraping the operator, gateways and model servers
on loopback. Mounted under ``bertops cluster`` by :mod:`bertops.cli.main`, which also
calls :func:`start` for ``bertops cluster up --monitoring``."""

from __future__ import annotations

import typer

monitoring_app = typer.Typer(
    help="A real Prometheus scraping the operator, gateways and servers on loopback.",
    no_args_is_help=True,
)
ClusterName = typer.Option("default", "--name", "-n", help="The embedded cluster's name.")
Operator = typer.Option(
    "127.0.0.1:8081", help="The operator's metrics endpoint (host:port; empty: none)."
)


def _say(message: str) -> None:
    typer.echo(message, err=True)


def start(name: str, operator: str = "127.0.0.1:8081", scrape_seconds: float = 5.0) -> str:
    """Start (or reuse) the cluster's Prometheus with the operator as a target; its URL."""
    from bertops.cluster.controlplane import Cluster
    from bertops.cluster.monitoring import Monitoring, MonitoringError, write_targets

    monitoring = Monitoring(Cluster(name).directory / "monitoring", scrape_seconds)
    write_targets(monitoring.directory, "bertops-operator", [operator] if operator else [])
    try:
        url = monitoring.up()
    except MonitoringError as error:
        _say(f"error: {error}")
        raise typer.Exit(1) from error
    _say(
        f"Prometheus at {url}; add gateways/servers to "
        f"{monitoring.directory / 'targets'}/bertops-{{gateway,server}}.json"
    )
    return url


@monitoring_app.command("up")
def monitoring_up(
    name: str = ClusterName,
    operator: str = Operator,
    scrape_seconds: float = typer.Option(5.0, min=1.0, help="Scrape interval."),
) -> None:
    """Start Prometheus on a free loopback port; print its URL."""
    typer.echo(start(name, operator, scrape_seconds))


@monitoring_app.command("down")
def monitoring_down(name: str = ClusterName) -> None:
    """Stop the cluster's Prometheus (its data stays in the cluster's folder)."""
    from bertops.cluster.controlplane import Cluster
    from bertops.cluster.monitoring import Monitoring

    if not Monitoring(Cluster(name).directory / "monitoring").down():
        _say(f"no Prometheus was running for cluster {name!r}")
