"""The model server's transport: a Starlette ASGI app speaking the Open Inference
Protocol v2 REST dialect and a plain ``POST /predict``, with ``/metrics`` for Prometheus.

Built by :func:`create_app` (called by ``bertops server serve`` in :mod:`bertops.server.cli`
and by the tests). The data plane stays in its own modules: :class:`ServedModel` (load,
warm up, predict), :class:`DynamicBatcher` (grouping), :class:`PredictionLog`; this module
only parses, validates, routes and answers. The model loads after startup on the
batcher's inference thread (the one that runs every batch), so liveness answers at once
and readiness turns true only once it is warm.
Shutdown (uvicorn first lets in-flight requests finish) drains the batcher and flushes
the prediction log. Readiness also requires a live inference worker.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bertops.server import binary
from bertops.server.batcher import BatcherUnavailableError, BatchResult, DynamicBatcher
from bertops.server.logship import LogShipper, shipped_log, shipped_rotation
from bertops.server.metrics import RequestMetricsMiddleware, ServerMetrics
from bertops.server.model import Prediction, ServedModel
from bertops.server.predictionlog import (
    RETENTION_SECONDS,
    PredictionLog,
    PredictionRecord,
    is_log_file,
)
from bertops.server.protocol import (
    Limits,
    ProtocolError,
    check_request_id,
    infer_response,
    model_metadata,
    parse_infer_body,
    parse_json,
    parse_predict,
    predict_response,
)
from bertops.server.settings import ServerSettings

__all__ = ["ModelServer", "ServerSettings", "create_app"]

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
VARIANT_HEADER = "x-bertops-variant"


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The OIP v2 error shape."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def read_body(request: Request, limit: int, time_limit: float | None = None) -> bytes:
    """The body, refused with 413 as soon as it exceeds ``limit`` (never buffered whole)
    and with 408 when it takes longer than ``time_limit`` seconds (a slow sender holds a
    connection slot)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ProtocolError(413, f"request body of {declared} bytes exceeds {limit}")
    chunks = []
    total = 0
    try:
        async with asyncio.timeout(time_limit):
            async for chunk in request.stream():
                total += len(chunk)
                if total > limit:
                    raise ProtocolError(413, f"request body exceeds {limit} bytes")
                chunks.append(chunk)
    except TimeoutError as error:
        raise ProtocolError(408, f"request body not received within {time_limit:g}s") from error
    return b"".join(chunks)


def request_id_header(request: Request) -> str:
    """The caller's ``x-request-id`` (validated: it is echoed and logged), or a new one."""
    return (
        check_request_id(request.headers.get(REQUEST_ID_HEADER), REQUEST_ID_HEADER)
        or uuid.uuid4().hex
    )


class ModelServer:
    """One served model: its batcher, metrics, prediction log and HTTP routes."""

    def __init__(
        self,
        model: ServedModel,
        settings: ServerSettings | None = None,
        registry: CollectorRegistry | None = None,
        on_load_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.model = model
        self.settings = settings or ServerSettings()
        artifact = model.verify()  # refuses a tampered artifact before anything listens
        self.name = model.name or artifact.manifest.name
        self.version = artifact.version
        self.labels = list(artifact.manifest.labels)
        self.limits = Limits(
            self.settings.max_texts_per_request,
            self.settings.max_chars,
            self.settings.max_body_bytes,
        )
        self.metrics = ServerMetrics(registry)
        self.metrics.model.info(
            {
                "name": self.name,
                "version": self.version,
                "format": artifact.manifest.format,
                "digest": artifact.digest[:16],
                "recipe": ",".join(step.op for step in artifact.manifest.load_recipe) or "none",
            }
        )
        self.batcher: DynamicBatcher[Prediction] = DynamicBatcher(
            model.predict,
            self.settings.max_batch_size,
            self.settings.max_batch_wait_ms / 1000.0,
            on_batch=self.metrics.observe_batch,
            max_queued_texts=self.settings.queue_limit,
            timeout=self.settings.request_timeout_seconds,
        )
        self.prediction_log: PredictionLog | None = None
        self._log_shipper: LogShipper | None = None
        self._on_load_error = on_load_error
        self._load_task: asyncio.Task[None] | None = None
        self.app = self._build()

    # -- lifecycle ---------------------------------------------------------------------

    @asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        settings = self.settings
        if settings.prediction_log != "off" and settings.prediction_log_path is not None:
            self._open_prediction_log(str(settings.prediction_log_path))
        self.batcher.start()
        self._load_task = asyncio.create_task(self._load(), name="model-load")
        try:
            yield
        finally:
            self.metrics.ready.set(0)
            await self.batcher.close()
            if self.prediction_log is not None:
                await asyncio.to_thread(self.prediction_log.close)
            if self._log_shipper is not None:
                await asyncio.to_thread(self._log_shipper.close)

    def _open_prediction_log(self, location: str) -> None:
        """The prediction log, appended in place or, for an object-store URI, in a local
        spool shipped there (:mod:`bertops.server.logship`), other writers' files of that
        folder swept after the same retention as a local folder's."""
        settings = self.settings
        stale = (is_log_file, RETENTION_SECONDS)
        path, self._log_shipper = shipped_log(location, PredictionLog.owns, "prediction log", stale)
        max_bytes, backups = settings.prediction_log_max_bytes, settings.prediction_log_backups
        if self._log_shipper is not None:
            max_bytes, backups = shipped_rotation(max_bytes, backups)
        self.prediction_log = PredictionLog(
            path,
            settings.prediction_log,
            max_bytes=max_bytes,
            backups=backups,
            on_drop=self.metrics.log_dropped.inc,
            # Shipped: segments whose names never change, each put once (not renumbered).
            stamped=self._log_shipper is not None,
        )

    async def _load(self) -> None:
        try:
            # On the inference thread: see DynamicBatcher.run_on_inference_thread.
            await self.batcher.run_on_inference_thread(self.model.load)
        except Exception as error:
            if self._on_load_error is not None:
                self._on_load_error(error)
            return
        self.metrics.ready.set(1)
        self.metrics.load_seconds.set(self.model.load_seconds or 0.0)

    @property
    def ready(self) -> bool:
        """Loaded, warmed up, and the inference worker is alive."""
        return self.model.ready.is_set() and self.batcher.alive

    # -- routes ------------------------------------------------------------------------

    def _build(self) -> Starlette:
        routes = [
            Route("/v2", self.server_metadata, methods=["GET"]),
            Route("/v2/health/live", self.live, methods=["GET"]),
            Route("/v2/health/ready", self.server_ready, methods=["GET"]),
            Route("/v2/models/{name}", self.metadata, methods=["GET"]),
            Route("/v2/models/{name}/versions/{version}", self.metadata, methods=["GET"]),
            Route("/v2/models/{name}/ready", self.model_ready, methods=["GET"]),
            Route("/v2/models/{name}/versions/{version}/ready", self.model_ready, methods=["GET"]),
            Route("/v2/models/{name}/infer", self.infer, methods=["POST"]),
            Route("/v2/models/{name}/versions/{version}/infer", self.infer, methods=["POST"]),
            Route("/predict", self.predict, methods=["POST"]),
            Route("/metrics", self.metrics_endpoint, methods=["GET"]),
        ]
        app = Starlette(
            routes=routes,
            lifespan=self.lifespan,
            exception_handlers={HTTPException: self._http_error},
        )
        app.add_middleware(RequestMetricsMiddleware, metrics=self.metrics)
        return app

    async def _http_error(self, _request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error_response(exc.status_code, str(exc.detail), exc.headers)

    def _check_model(self, request: Request) -> None:
        name = request.path_params["name"]
        version = request.path_params.get("version")
        if name != self.name or (version is not None and version != self.version):
            served = f"{self.name} version {self.version}"
            raise ProtocolError(404, f"model {name!r} not found; this server serves {served}")

    async def server_metadata(self, _request: Request) -> Response:
        return JSONResponse(
            {
                "name": "bertops-model-server",
                "version": "1",
                "extensions": [binary.EXTENSION, "metrics", "predict"],
            }
        )

    async def live(self, _request: Request) -> Response:
        return JSONResponse({"live": True})

    async def server_ready(self, _request: Request) -> Response:
        return self._readiness()

    def _readiness(self) -> Response:
        if self.ready:
            return JSONResponse({"ready": True})
        body: dict[str, Any] = {"ready": False}
        if self.model.error:
            body["error"] = self.model.error
        elif self.batcher.failed:
            body["error"] = f"inference worker stopped: {self.batcher.failed}"
        return JSONResponse(body, status_code=503)

    async def model_ready(self, request: Request) -> Response:
        try:
            self._check_model(request)
        except ProtocolError as error:
            return error_response(error.status, error.message)
        return self._readiness()

    async def metadata(self, request: Request) -> Response:
        try:
            self._check_model(request)
        except ProtocolError as error:
            return error_response(error.status, error.message)
        manifest = self.model.manifest
        platform = "onnxruntime_onnx" if manifest.format == "onnx" else "pytorch"
        return JSONResponse(model_metadata(self.name, self.version, platform, self.labels))

    async def metrics_endpoint(self, _request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def _raw_body(self, request: Request) -> bytes:
        return await read_body(
            request, self.limits.max_body_bytes, self.settings.request_timeout_seconds
        )

    async def _body(self, request: Request) -> Any:
        return parse_json(await self._raw_body(request))

    async def infer(self, request: Request) -> Response:
        started = time.perf_counter()
        request_id = ""
        try:
            request_id = request_id_header(request)
            self._check_model(request)
            # The binary tensor data extension's header says where the JSON part ends.
            header = request.headers.getlist(binary.HEADER)
            parsed = parse_infer_body(await self._raw_body(request), header, self.limits)
            result = await self._run(parsed.texts)
        except ProtocolError as error:
            return self._error(error, request_id)
        # One request id: x-request-id (behind the gateway, the one it issued and takes
        # feedback for) is logged and answered; the OIP body's "id" is only the client's
        # correlation id, echoed in the body as the protocol says.
        self._record(parsed.texts, result, request_id, started, request)
        body = infer_response(self.name, self.version, parsed, request_id, result.results)
        headers = {REQUEST_ID_HEADER: request_id}
        if not parsed.binary_outputs:
            return JSONResponse(body, headers=headers)
        content, length = binary.encode_outputs(body, parsed.binary_outputs)
        headers[binary.HEADER] = str(length)
        return Response(content, media_type=binary.CONTENT_TYPE, headers=headers)

    async def predict(self, request: Request) -> Response:
        started = time.perf_counter()
        request_id = ""
        try:
            request_id = request_id_header(request)
            texts = parse_predict(await self._body(request), self.limits)
            result = await self._run(texts)
        except ProtocolError as error:
            return self._error(error, request_id)
        self._record(texts, result, request_id, started, request)
        body = predict_response(self.name, self.version, request_id, self.labels, result.results)
        return JSONResponse(body, headers={REQUEST_ID_HEADER: request_id})

    @staticmethod
    def _error(error: ProtocolError, request_id: str) -> Response:
        headers = dict(error.headers)
        if request_id:  # empty when the caller's own id was the problem
            headers[REQUEST_ID_HEADER] = request_id
        return error_response(error.status, error.message, headers)

    async def _run(self, texts: list[str]) -> BatchResult[Prediction]:
        if not self.ready:
            raise ProtocolError(503, f"model {self.name} is not ready")
        try:
            return await self.batcher.submit(texts)
        except BatcherUnavailableError as error:
            headers = {}
            if error.retry_after is not None:
                headers["retry-after"] = str(max(1, math.ceil(error.retry_after)))
            raise ProtocolError(503, str(error), headers) from error
        except Exception as error:
            log.exception("inference failed")
            raise ProtocolError(
                500, f"inference failed: {type(error).__name__}: {error}"
            ) from error

    def _record(
        self,
        texts: list[str],
        result: BatchResult[Prediction],
        request_id: str,
        started: float,
        request: Request,
    ) -> None:
        metrics = self.metrics
        metrics.queue_latency.observe(result.queue_seconds)
        for prediction in result.results:
            metrics.predictions.labels(prediction.label).inc()
            metrics.confidence.observe(prediction.score)
        if self.prediction_log is None:
            return
        now = time.time()
        latency_ms = (time.perf_counter() - started) * 1000.0
        variant = request.headers.get(VARIANT_HEADER)
        self.prediction_log.write(
            [
                PredictionRecord(
                    now,
                    self.name,
                    self.version,
                    request_id,
                    index,
                    text,
                    prediction.label,
                    prediction.score,
                    latency_ms,
                    variant,
                    prediction.tokens,
                    prediction.unknown_tokens,
                    prediction.embedding,
                )
                for index, (text, prediction) in enumerate(zip(texts, result.results, strict=True))
            ]
        )


def create_app(
    model: ServedModel,
    settings: ServerSettings | None = None,
    registry: CollectorRegistry | None = None,
    on_load_error: Callable[[BaseException], None] | None = None,
) -> Starlette:
    """The ASGI app for one model (verifies the artifact now; loads it after startup)."""
    return ModelServer(model, settings, registry, on_load_error).app
