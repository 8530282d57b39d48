"""``bertops server serve`` (the model server) and ``bertops server gateway`` (the front
door of a deployment): the command line of the serving data plane.

Mounted by :mod:`bertops.cli.main` as ``bertops server ...``; the operator's local and
Kubernetes runtimes start these commands. Imports here stay light (no torch, no
transformers at import time): the model is loaded after the server started listening.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import typer

from bertops.server.settings import ServerSettings

app = typer.Typer(
    help="Serve a BertModel (Open Inference Protocol v2) and run the gateway.",
    no_args_is_help=True,
    add_completion=False,
)


def _run(
    asgi_app: Any,
    host: str,
    port: int,
    graceful_seconds: int,
    access_log: bool,
    limit_concurrency: int | None = None,
    keep_alive_seconds: float = 5.0,
) -> Any:
    import uvicorn

    from bertops.server.listen import uvicorn_config

    config = uvicorn_config(
        asgi_app,
        host,
        port,
        graceful_seconds=graceful_seconds,
        access_log=access_log,
        limit_concurrency=limit_concurrency,
        keep_alive_seconds=keep_alive_seconds,
    )
    return uvicorn.Server(config)


@app.command("serve")
def serve(
    model: str = typer.Option(
        ...,
        "--model",
        envvar="BERTOPS_MODEL",
        help="Model artifact URI: a folder, file://..., or an fsspec URL.",
    ),
    name: str = typer.Option(None, help="Served model name (default: the manifest's name)."),
    host: str = typer.Option("0.0.0.0", help="Address to listen on."),
    port: int = typer.Option(8080, help="Port to listen on."),
    max_batch_size: int = typer.Option(
        ServerSettings.max_batch_size, min=1, help="Most texts in one model call."
    ),
    max_batch_wait_ms: float = typer.Option(
        ServerSettings.max_batch_wait_ms, min=0, help="Longest wait to fill a batch."
    ),
    max_texts_per_request: int = typer.Option(
        ServerSettings.max_texts_per_request, min=1, help="Most texts in one request."
    ),
    max_chars: int = typer.Option(
        ServerSettings.max_chars, min=1, help="Most characters in one text."
    ),
    prediction_log: str = typer.Option(
        ServerSettings.prediction_log,
        help="What the prediction log keeps of a text: text, hash or off.",
    ),
    prediction_log_path: str = typer.Option(
        None,
        envvar="BERTOPS_PREDICTION_LOG",
        help="JSON-lines prediction log (rotated by size): a path, or a URI in an object "
        "store (kept in a local spool, shipped every 10 s); without it no log is written.",
    ),
    prediction_log_max_bytes: int = typer.Option(
        ServerSettings.prediction_log_max_bytes, help="Rotate the log at this size."
    ),
    prediction_log_backups: int = typer.Option(
        ServerSettings.prediction_log_backups, help="Rotated log files to keep."
    ),
    threads: int = typer.Option(None, help="Inference threads (default: all cores)."),
    graceful_seconds: int = typer.Option(30, help="Time to drain in-flight requests."),
    access_log: bool = typer.Option(False, help="Log every request."),
    max_body_bytes: int = typer.Option(
        ServerSettings.max_body_bytes, min=1024, help="Largest request body (413 above it)."
    ),
    request_timeout: float = typer.Option(
        ServerSettings.request_timeout_seconds,
        min=0.1,
        help="Seconds to receive a body and to wait for the model's answer (408/503 after).",
    ),
    max_queued_texts: int = typer.Option(
        None,
        min=1,
        help="Texts waiting for the model before 503 + Retry-After (default: 16 batches).",
    ),
    limit_concurrency: int = typer.Option(
        None,
        min=1,
        help="Requests and connections served at once before 503 (default: queue + 64).",
    ),
    keep_alive_seconds: float = typer.Option(
        ServerSettings.keep_alive_seconds, min=0, help="Idle keep-alive timeout."
    ),
    expect_manifest_sha256: str = typer.Option(
        None,
        envvar="BERTOPS_EXPECT_MANIFEST_SHA256",
        help="Refuse the artifact unless its manifest has this sha256 (the BertModel's "
        "status.manifestSha256): the operator pins the exact version it rolled out.",
    ),
) -> None:
    """Verify the artifact, start listening, load + warm the model, then serve it."""
    from bertops.server.app import create_app

    _log_to_stderr()
    if prediction_log not in ("text", "hash", "off"):
        raise typer.BadParameter("must be text, hash or off", param_hint="--prediction-log")
    served = _verified_model(model, name, threads, expect_manifest_sha256)
    settings = ServerSettings(
        max_batch_size=max_batch_size,
        max_batch_wait_ms=max_batch_wait_ms,
        max_texts_per_request=max_texts_per_request,
        max_chars=max_chars,
        prediction_log=prediction_log,  # type: ignore[arg-type]
        prediction_log_path=prediction_log_path,
        prediction_log_max_bytes=prediction_log_max_bytes,
        prediction_log_backups=prediction_log_backups,
        max_body_bytes=max_body_bytes,
        request_timeout_seconds=request_timeout,
        max_queued_texts=max_queued_texts,
        limit_concurrency=limit_concurrency,
        keep_alive_seconds=keep_alive_seconds,
    )
    failed: list[BaseException] = []

    def on_load_error(error: BaseException) -> None:
        failed.append(error)
        server.should_exit = True  # a server that cannot load must not linger unready

    server = _run(
        create_app(served, settings, on_load_error=on_load_error),
        host,
        port,
        graceful_seconds,
        access_log,
        settings.concurrency_limit,
        settings.keep_alive_seconds,
    )
    server.run()
    if failed:
        typer.echo(f"error: model failed to load: {failed[0]}", err=True)
        raise typer.Exit(1)


def _log_to_stderr() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _verified_model(
    model: str, name: str | None, threads: int | None, expect_manifest_sha256: str | None
) -> Any:
    """The artifact at ``model``, its files verified against its manifest (and the
    manifest against the expected sha256), not yet loaded; exits 2 when refused."""
    from bertops.server.artifact import ArtifactError
    from bertops.server.model import ServedModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    served = ServedModel(model, name=name, threads=threads)
    try:
        verified = served.verify()
    except ArtifactError as error:
        typer.echo(f"error: refusing to serve: {error}", err=True)
        raise typer.Exit(2) from error
    # Compared with the hash of the very manifest bytes that verified the files.
    if expect_manifest_sha256 and verified.manifest_sha256 != expect_manifest_sha256.lower():
        typer.echo(
            f"error: refusing to serve: manifest sha256 {verified.manifest_sha256} "
            f"is not the expected {expect_manifest_sha256}",
            err=True,
        )
        raise typer.Exit(2)
    return served


@app.command("gateway")
def gateway(
    routes: str = typer.Option(
        ...,
        "--routes",
        envvar="BERTOPS_ROUTES",
        help="Routes file (YAML/JSON) or http(s) URL, re-read on change.",
    ),
    host: str = typer.Option("0.0.0.0", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    admin_token: str = typer.Option(
        None,
        envvar="BERTOPS_GATEWAY_ADMIN_TOKEN",
        help="Bearer token for GET|PUT /admin/routes on the admin port (unset: no admin).",
    ),
    admin_port: int = typer.Option(
        8001, help="Port of the admin endpoint, always on 127.0.0.1 (with --admin-token)."
    ),
    metrics_port: int = typer.Option(
        9091, help="Port of /metrics (names the canary: keep it from clients)."
    ),
    feedback_log: str = typer.Option(
        None,
        envvar="BERTOPS_FEEDBACK_LOG",
        help="JSON-lines file (a path, or a URI in an object store: spooled, shipped every "
        "10 s) of accepted labelled feedback, one row per text with the RAW "
        "TEXT (training data for retraining; a BertDataset jsonl source with textColumn "
        "'text', labelColumn 'label'). Default: off, and no texts are remembered.",
    ),
    feedback_credentials: Path = typer.Option(
        None,
        envvar="BERTOPS_FEEDBACK_CREDENTIALS",
        help="Folder of feedback clients, one file each named after the client and holding "
        "its bearer token (a mounted Secret); re-read every few seconds.",
    ),
    feedback_anonymous: bool = typer.Option(
        False, help="Also take feedback without a credential (default: refused)."
    ),
    feedback_labels_per_minute: int = typer.Option(600, min=1, help="Per feedback client."),
    feedback_bytes_per_hour: int = typer.Option(16 << 20, min=1024, help="Per feedback client."),
    feedback_window_seconds: float = typer.Option(
        3600, min=1, help="How long an answer takes feedback (its request id is remembered)."
    ),
    feedback_max_bytes: int = typer.Option(
        64 << 20,
        min=1 << 16,
        help="Memory for remembered answers (the oldest go first), and as much again for "
        "their texts (a feedback log's rows; the oldest answers lose theirs first).",
    ),
    max_body_bytes: int | None = typer.Option(
        None,
        min=1024,
        help="Largest proxied request body (413 above it; default: what a server with the "
        "default limits accepts); the operator passes what the deployment's servers accept.",
    ),
    limit_concurrency: int = typer.Option(
        32,
        min=1,
        help="Connections and requests served at once (503 past it): with --max-body-bytes, "
        "bounds the memory bodies take.",
    ),
    expose_headers: bool = typer.Option(
        False, help="Name the variant and model version in response headers."
    ),
    poll_seconds: float = typer.Option(1.0, min=0.05, help="How often to re-read --routes."),
    graceful_seconds: int = typer.Option(30, help="Time to drain in-flight requests."),
    access_log: bool = typer.Option(False, help="Log every request."),
) -> None:
    """Route between stable and canary servers, mirror to a shadow, take feedback."""
    from pydantic import ValidationError

    from bertops.server.gateway import bodies
    from bertops.server.gateway.access import FeedbackAccess
    from bertops.server.gateway.admin import serve_gateway
    from bertops.server.gateway.app import Gateway
    from bertops.server.gateway.routes import RouteSource

    _log_to_stderr()
    source = RouteSource(routes)
    try:
        initial = source.fetch()
    except (OSError, ValueError, ValidationError) as error:
        typer.echo(f"error: cannot read routes from {routes}: {error}", err=True)
        raise typer.Exit(2) from error
    access = FeedbackAccess(
        feedback_credentials,
        anonymous=feedback_anonymous,
        labels_per_minute=feedback_labels_per_minute,
        bytes_per_hour=feedback_bytes_per_hour,
    )
    gateway = Gateway(
        initial,
        source,
        admin_token=admin_token,
        feedback_log=feedback_log,
        feedback_access=access,
        poll_seconds=poll_seconds,
        feedback_window_seconds=feedback_window_seconds,
        feedback_max_bytes=feedback_max_bytes,
        expose_headers=expose_headers,
        max_body_bytes=max_body_bytes or bodies.MAX_PROXY_BODY_BYTES,
    )
    serve_gateway(
        gateway.app,
        gateway.admin_app,
        host=host,
        port=port,
        admin_port=admin_port,
        graceful_seconds=graceful_seconds,
        access_log=access_log,
        limit_concurrency=limit_concurrency,
        metrics=gateway.metrics_app,
        metrics_port=metrics_port,
    )
