"""The model server's command line for one BertDeployment ``serving`` block, built once:
:func:`server_args` turns the block into the options of ``bertops server serve``.

Called by both serving backends of the operator (the kubernetes container's command in
:mod:`bertops.operator.deployment.server_manifests`, the local process in
:mod:`bertops.operator.deployment.local`); the options are parsed by
:mod:`bertops.server.cli`, whose defaults, like :class:`bertops.server.settings.ServerSettings`'s,
are the ``serving`` block's defaults. It lives in the API package because the
operator may not import the server and the server may not import the operator; the
serving block is what both already share.
"""

from __future__ import annotations

from bertops.api.deployment import Serving


def server_args(
    serving: Serving, *, model_uri: str, manifest_sha256: str, name: str, threads: int
) -> list[str]:
    """``bertops server serve``'s options for one model version under ``serving``; the
    caller adds where it listens and where the prediction log goes, which differ between
    a pod and a local process."""
    return [
        "--model", model_uri,
        "--expect-manifest-sha256", manifest_sha256,
        "--name", name,
        "--max-batch-size", str(serving.max_batch_size),
        "--max-batch-wait-ms", str(serving.max_batch_wait_ms),
        "--max-texts-per-request", str(serving.max_texts_per_request),
        "--max-chars", str(serving.max_chars),
        "--prediction-log", serving.prediction_log,
        "--threads", str(threads),
    ]  # fmt: skip
