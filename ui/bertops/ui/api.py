"""The JSON API of the management service (``/api/...``), described by
:mod:`bertops.ui.openapi` and used by the UI's pages for downloads, actions and polling.

Each endpoint is transport only: it reads the path and query, runs one function of
:mod:`bertops.ui.service` in a worker thread (the Kubernetes client blocks) and turns its
result or its :class:`CatalogError` into a response. Auth and read-only mode are decided
before any of this, by :mod:`bertops.ui.auth`. Mounted by :mod:`bertops.ui.app`.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from bertops.api.artifacts import ArtifactError
from bertops.ui import artifacts, service
from bertops.ui.catalog import Catalog, CatalogError, ModelInUseError, check_name

TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no", "")


def catalog(request: Request) -> Catalog:
    """The catalog for this caller (its own token in pass-through mode)."""
    return request.app.state.clients.catalog(request.state.token)


def error_response(error: CatalogError) -> JSONResponse:
    body: dict[str, Any] = {"error": error.message}
    if isinstance(error, ModelInUseError):
        body["deployments"] = error.deployments
    return JSONResponse(body, status_code=error.status)


async def _json(function: Callable[..., dict[str, Any]], *args: Any) -> Response:
    try:
        return JSONResponse(await run_in_threadpool(function, *args))
    except CatalogError as error:
        return error_response(error)


def _flag(request: Request, name: str) -> bool:
    value = request.query_params.get(name, "").lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise CatalogError(422, f"{name} must be true or false")


def _name(request: Request) -> str:
    return str(request.path_params["name"])


async def list_models(request: Request) -> Response:
    return await _json(service.models, catalog(request))


async def get_model(request: Request) -> Response:
    return await _json(service.model, catalog(request), _name(request))


async def delete_model(request: Request) -> Response:
    try:
        force = _flag(request, "force")
    except CatalogError as error:
        return error_response(error)
    return await _json(service.delete_model, catalog(request), _name(request), force)


async def compare_models(request: Request) -> Response:
    a, b = request.query_params.get("a"), request.query_params.get("b")
    if not a or not b:
        return JSONResponse({"error": "give two models: ?a=NAME&b=NAME"}, status_code=422)
    return await _json(service.compare, catalog(request), a, b)


def _prepare_download(cat: Catalog, name: str) -> tuple[Path, Path, str, str]:
    """(temp folder, tar file, its sha256, the manifest's sha256) of a verified copy."""
    body = cat.get("BertModel", name)
    scratch = Path(tempfile.mkdtemp(prefix="bertops-ui-download-"))
    try:
        copy = artifacts.download(body, scratch / name)
        archive = scratch / f"{name}.tar"
        digest = artifacts.tar_folder(copy.folder, archive, name)
    except (ArtifactError, OSError) as error:
        shutil.rmtree(scratch, ignore_errors=True)
        raise CatalogError(409, f"cannot download {name}: {error}") from error
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return scratch, archive, digest, copy.manifest_sha256


async def download_model(request: Request) -> Response:
    try:
        name = check_name(_name(request), "BertModel name")
        scratch, archive, digest, manifest_sha = await run_in_threadpool(
            _prepare_download, catalog(request), name
        )
    except CatalogError as error:
        return error_response(error)
    return FileResponse(
        archive,
        media_type="application/x-tar",
        filename=f"{name}.tar",
        headers={"x-bertops-sha256": digest, "x-bertops-manifest-sha256": manifest_sha},
        background=BackgroundTask(shutil.rmtree, scratch, ignore_errors=True),
    )


async def list_datasets(request: Request) -> Response:
    return await _json(service.datasets, catalog(request))


async def get_dataset(request: Request) -> Response:
    return await _json(service.dataset, catalog(request), _name(request))


async def list_trainings(request: Request) -> Response:
    return await _json(service.trainings, catalog(request))


async def get_training(request: Request) -> Response:
    return await _json(service.training, catalog(request), _name(request))


async def list_deployments(request: Request) -> Response:
    return await _json(service.deployments, catalog(request), request.app.state.drift_log)


async def get_deployment(request: Request) -> Response:
    return await _json(
        service.deployment, catalog(request), _name(request), request.app.state.drift_log
    )


async def deployment_action(request: Request) -> Response:
    action = str(request.path_params["action"])
    return await _json(service.rollout_action, catalog(request), _name(request), action)


async def get_session(request: Request) -> Response:
    return JSONResponse(
        {
            "namespace": request.app.state.settings.namespace,
            "writes": request.app.state.settings.allow_writes,
            "auth": "pass-through" if request.app.state.settings.pass_through else "token",
        }
    )


ROUTES = [
    Route("/api/session", get_session, methods=["GET"]),
    Route("/api/models", list_models, methods=["GET"]),
    Route("/api/models/{name}", get_model, methods=["GET"]),
    Route("/api/models/{name}", delete_model, methods=["DELETE"]),
    Route("/api/models/{name}/download", download_model, methods=["GET"]),
    Route("/api/compare", compare_models, methods=["GET"]),
    Route("/api/datasets", list_datasets, methods=["GET"]),
    Route("/api/datasets/{name}", get_dataset, methods=["GET"]),
    Route("/api/trainings", list_trainings, methods=["GET"]),
    Route("/api/trainings/{name}", get_training, methods=["GET"]),
    Route("/api/deployments", list_deployments, methods=["GET"]),
    Route("/api/deployments/{name}", get_deployment, methods=["GET"]),
    Route("/api/deployments/{name}/actions/{action}", deployment_action, methods=["POST"]),
]
