"""``bertops cluster storage build|up|down|env``: a real S3 server (VersityGW, built from its
Go module, see :mod:`bertops.cluster.storage`) beside an embedded cluster, for an artifact
root of ``s3://bertops/...``. ``up`` also hands the credentials to the cluster as the
Secret ``bertops-artifacts-s3`` and the endpoint as the ConfigMap of the same name (the
names the gitops ``artifacts-object-store`` component reads). Mounted under
``bertops cluster`` by :mod:`bertops.cli.main`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from bertops.cluster.storage.run import Storage

storage_app = typer.Typer(
    help="A real S3 server (VersityGW) for the embedded cluster's artifacts.",
    no_args_is_help=True,
)
ClusterName = typer.Option("default", "--name", "-n", help="The embedded cluster's name.")
NamespaceOption = typer.Option(
    "bertops-system", "--namespace", help="Where the Secret and ConfigMap go."
)


def _say(message: str) -> None:
    typer.echo(message, err=True)


def _storage(name: str) -> Storage:
    from bertops.cluster.controlplane import Cluster
    from bertops.cluster.storage.run import Storage

    return Storage(Cluster(name).directory / "storage")


@storage_app.command("build")
def storage_build(rebuild: bool = typer.Option(False, help="Build even when cached.")) -> None:
    """Build versitygw from its Go module into the cache (a few minutes on 2 cores)."""
    from bertops.cluster.storage.build import ensure_versitygw

    try:
        typer.echo(str(ensure_versitygw(_say, rebuild=rebuild)))
    except RuntimeError as error:
        _say(f"error: {error}")
        raise typer.Exit(1) from error


@storage_app.command("up")
def storage_up(name: str = ClusterName, namespace: str = NamespaceOption) -> None:
    """Start the S3 server on loopback, create the bucket, hand the credentials over."""
    from bertops.cluster.controlplane import Cluster
    from bertops.cluster.storage.cluster_objects import hand_over
    from bertops.cluster.storage.run import BUCKET

    storage = _storage(name)
    try:
        endpoint = storage.up()
    except RuntimeError as error:
        _say(f"error: {error}")
        raise typer.Exit(1) from error
    cluster = Cluster(name)
    if cluster.status()["ready"]:
        client_env = storage.client_env()
        if cluster.state().node:  # pods reach it through the Service bertops-s3
            from bertops.cluster.storage.node_access import expose, pod_client_env

            port = int(endpoint.rsplit(":", 1)[1])
            expose(cluster.kubeconfig, name, port, storage.directory)
            client_env = pod_client_env(client_env, port)
            _say(f"pods reach it at {client_env['AWS_ENDPOINT_URL_S3']}")
        hand_over(cluster.kubeconfig, namespace, client_env)
        _say(f"Secret and ConfigMap {namespace}/bertops-artifacts-s3 hold the credentials")
    _say(
        f"S3 at {endpoint}, bucket s3://{BUCKET}; a client's environment: "
        f'eval "$(bertops cluster storage env --name {name})"'
    )


@storage_app.command("tenant")
def storage_tenant(
    tenant_namespace: str = typer.Argument(..., help="The tenant namespace."),
    prefix: str = typer.Option(
        "artifacts", help="The artifact root's prefix in the bucket (s3://bertops/PREFIX)."
    ),
    name: str = ClusterName,
) -> None:
    """Give a namespace its own key, allowed only s3://bertops/PREFIX/NAMESPACE/, handed
    to its pods as the Secret and ConfigMap bertops-artifacts-s3 of that namespace."""
    from bertops.cluster.controlplane import Cluster
    from bertops.cluster.storage.cluster_objects import hand_over
    from bertops.cluster.storage.node_access import pod_client_env
    from bertops.cluster.storage.run import BUCKET
    from bertops.cluster.storage.tenants import Tenants, tenant_prefix

    storage = _storage(name)
    cluster = Cluster(name)
    try:
        client_env = Tenants(storage).client_env(tenant_namespace, prefix)
    except RuntimeError as error:
        _say(f"error: {error}")
        raise typer.Exit(1) from error
    if cluster.state().node:
        port = int(client_env["AWS_ENDPOINT_URL_S3"].rsplit(":", 1)[1])
        client_env = pod_client_env(client_env, port)
    hand_over(cluster.kubeconfig, tenant_namespace, client_env)
    _say(
        f"{tenant_namespace}: its own key, allowed only "
        f"s3://{BUCKET}/{tenant_prefix(prefix, tenant_namespace)}/, in the Secret "
        f"{tenant_namespace}/bertops-artifacts-s3"
    )


@storage_app.command("env")
def storage_env(name: str = ClusterName) -> None:
    """Print the `export AWS_...` lines an S3 client of this server needs."""
    import shlex

    try:
        env = _storage(name).client_env()
    except RuntimeError as error:
        _say(f"error: {error}")
        raise typer.Exit(1) from error
    for key, value in env.items():
        typer.echo(f"export {key}={shlex.quote(value)}")


@storage_app.command("down")
def storage_down(name: str = ClusterName) -> None:
    """Stop the S3 server (its data stays in the cluster's folder)."""
    _storage(name).down()
