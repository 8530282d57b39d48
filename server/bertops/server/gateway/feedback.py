"""Ground-truth feedback at the gateway: ``POST /feedback`` scores earlier answers per
variant, which the rollout's feedback-accuracy gate reads from the gateway's metrics.

Because those scores can roll a canary back (and become training data), only clients
:class:`~bertops.server.gateway.access.FeedbackAccess` lets in may send it, within their
budgets, and it is only taken for answers this gateway gave: every request id is issued
by the gateway itself (a random 128-bit id; a client's own x-request-id is never
trusted), remembered in :class:`~bertops.server.gateway.served.ServedStore` for a
bounded window and a bounded number of bytes, and each text of an answer is judged
once. Unknown or expired ids answer 404, labels the model does not have 422, and nothing
of a request is recorded unless all of it is valid.

With a feedback log (``bertops server gateway --feedback-log PATH``) every accepted
label is also persisted for retraining: the gateway then remembers the texts of each
answer too (counted in the store's byte budget), and :class:`FeedbackLog` appends one
row per accepted text from a background writer (never on the event loop)::

    {"time": "2026-11-28T23:05:01.123+00:00", "requestId": "4f1c...", "index": 0,
     "text": "the raw text", "label": "positive", "variant": "stable",
     "model": "sentiment-v3", "predicted": "negative", "correct": false,
     "client": "labeler-a"}

The file is a JSONL data source for ``BertDataset`` (``format: jsonl``, textColumn
``text``, labelColumn ``label``). It holds the RAW TEXTS of labelled requests whatever
the prediction log's privacy setting: they are training data by intent. It rotates into
``*.jsonl`` segments the retraining still reads, and the oldest beyond a cap are deleted
(:class:`FeedbackLog`).

Where a candidate also answered the same texts (the canary with ``routes.compare``, or
the shadow; see :mod:`~bertops.server.gateway.pairing`), its :class:`Pair` is attached
to the remembered answer and each judged text also counts whether both models, only
one, or neither got it right.

Used by :class:`bertops.server.gateway.app.Gateway`, which remembers every answered
inference here and mounts :meth:`FeedbackDesk.handle` on ``POST /feedback``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bertops.api.routes import Backend, Routes
from bertops.server.gateway.access import FeedbackAccess
from bertops.server.gateway.bodies import (
    MAX_FEEDBACK_BYTES,
    BodyRefusedError,
    BodyTooLargeError,
    read_answer,
    read_body,
)
from bertops.server.gateway.inference import metadata_labels
from bertops.server.gateway.metrics import GatewayMetrics
from bertops.server.gateway.pairs import score_pair
from bertops.server.gateway.refusal import Refusal
from bertops.server.gateway.served import Served, ServedStore
from bertops.server.jsonlog import JsonLinesLog
from bertops.server.jsonlog import segments as stamped_segments
from bertops.server.logship import LogShipper, shipped_log
from bertops.server.protocol import REQUEST_ID

MAX_LABEL_CHARS = 256
MAX_FEEDBACK_ID_CHARS = 128  # the gateway issues 32 hex digits; a client id may be longer


class LabelBook:
    """The label set of each served model: from the routes (the operator copies the
    BertModel's labels there), learned from /predict answers, or asked once of the model
    server's OIP metadata."""

    def __init__(self) -> None:
        self._known: dict[str, frozenset[str]] = {}

    def from_routes(self, routes: Routes) -> None:
        for backend in (routes.stable, routes.canary, routes.shadow):
            if backend is not None and backend.labels:
                self._known[backend.name] = frozenset(backend.labels)

    def learn(self, model: str, labels: frozenset[str] | None) -> None:
        if labels and model not in self._known:
            self._known[model] = labels

    def get(self, model: str) -> frozenset[str] | None:
        return self._known.get(model)

    async def fetch(self, backend: Backend, client: httpx.AsyncClient) -> frozenset[str] | None:
        known = self.get(backend.name)
        if known is not None:
            return known
        url = f"{backend.url.rstrip('/')}/v2/models/{backend.model or backend.name}"
        try:
            async with client.stream("GET", url, timeout=5) as answer:
                body = await read_answer(answer, MAX_FEEDBACK_BYTES)
                status = answer.status_code
        except (httpx.HTTPError, BodyTooLargeError):
            return None
        labels = metadata_labels(body) if status == 200 else None
        self.learn(backend.name, labels)
        return labels


Entry = tuple[str, int, str]  # request id, text index, true label


def entries(item: object) -> list[Entry]:
    """``{"requestId", "label"}`` (the first text), ``{"requestId", "labels": [...]}``
    (every text) or ``{"requestId", "index", "label"}``; TypeError when malformed."""
    if not isinstance(item, dict):
        raise TypeError("each feedback item must be an object")
    request_id = item.get("requestId", item.get("request_id"))
    # The gateway's ids are printable ASCII: anything else is refused here, before an
    # answer could echo it (a lone surrogate in a 404's requestIds made the encoder fail).
    if (
        not isinstance(request_id, str)
        or len(request_id) > MAX_FEEDBACK_ID_CHARS
        or not REQUEST_ID.fullmatch(request_id)
    ):
        raise TypeError(
            f"requestId (1-{MAX_FEEDBACK_ID_CHARS} printable ASCII characters) is required"
        )
    if "labels" in item:
        labels = item["labels"]
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise TypeError("labels must be a list of strings")
        return [(request_id, i, label) for i, label in enumerate(labels)]
    label, index = item.get("label"), item.get("index", 0)
    if not isinstance(label, str) or not isinstance(index, int) or index < 0:
        raise TypeError("label (a string) is required; index must be an integer >= 0")
    return [(request_id, index, label)]


class FeedbackLog(JsonLinesLog[dict[str, object]]):
    """The labelled-feedback file (rows as in the module docstring). Past ``max_bytes`` it
    is moved aside as ``<stem>.<UTC time>.jsonl`` (still a ``*.jsonl`` file of the folder a
    retraining reads) and at most ``segments`` such files are kept, the oldest deleted
    first: a writer's training data is bounded by ``(segments + 1) * max_bytes``."""

    what = "feedback log"

    def __init__(
        self,
        path: Path,
        on_drop: Callable[[int], None] | None = None,
        *,
        max_bytes: int = 64 << 20,
        segments: int = 15,
    ) -> None:
        super().__init__(
            path,
            max_bytes=max_bytes,
            backups=segments,
            queue_size=10_000,
            on_drop=on_drop,
            stamped=True,
        )

    def segments(self) -> list[Path]:
        """This writer's moved-aside files, oldest first (the UTC times sort by name)."""
        return stamped_segments(self.path)

    def line(self, record: dict[str, object]) -> str:
        return json.dumps(record, ensure_ascii=False) + "\n"


class FeedbackDesk:
    """``POST /feedback``: validates, scores per variant and, with a :class:`FeedbackLog`
    (``log``, opened by the gateway's lifespan at ``log_path``: :meth:`open_log`),
    persists the rows."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        store: ServedStore,
        labels: LabelBook,
        log_path: str | Path | None,
        client: Callable[[], httpx.AsyncClient],
        access: FeedbackAccess,
    ) -> None:
        self.access = access
        self.metrics = metrics
        self.store = store
        self.labels = labels
        self.log_path = None if log_path is None else str(log_path)
        self.log: FeedbackLog | None = None
        self._shipper: LogShipper | None = None
        self.client = client
        self._counts: dict[tuple[str, str], list[int]] = {}

    def open_log(self) -> None:
        """Open the feedback log at ``log_path``: a local file, or a URI in an object store
        (appended in a local spool, shipped there: :mod:`bertops.server.logship`)."""
        if self.log_path is not None:
            path, self._shipper = shipped_log(self.log_path, FeedbackLog.owns, "feedback log")
            self.log = FeedbackLog(path, on_drop=self.metrics.feedback_log_dropped.inc)

    def close_log(self) -> None:
        """Write what is queued and flush (blocking: run it off the event loop), then ship
        those last rows."""
        if self.log is not None:
            self.log.close()
        if self._shipper is not None:
            self._shipper.close()

    def _reject(self, refusal: Refusal) -> Response:
        self.metrics.feedback_rejected.labels(refusal.reason).inc()
        return refusal.response()

    async def handle(self, request: Request) -> Response:
        client = self.access.identify(request)
        if isinstance(client, Refusal):
            return self._reject(client)
        try:
            body = await read_body(request, MAX_FEEDBACK_BYTES)
            document = json.loads(body)
            items = document if isinstance(document, list) else [document]
            found = [entry for item in items for entry in entries(item)]
        except BodyRefusedError as error:
            return self._reject(error.refusal)
        except RecursionError:
            return self._reject(Refusal(400, "invalid", "invalid feedback: JSON nested too deeply"))
        except (ValueError, TypeError) as error:
            return self._reject(Refusal(400, "invalid", f"invalid feedback: {error}"))
        over_budget = self.access.charge(client, len(found), len(body))
        if over_budget is not None:
            return self._reject(over_budget)
        served = {request_id: self.store.get(request_id) for request_id, _, _ in found}
        unknown = sorted(rid for rid, s in served.items() if s is None)
        if unknown:
            return self._reject(
                Refusal(
                    404,
                    "unknown_id",
                    "unknown or expired request ids (feedback "
                    "is taken for ids this gateway issued, within its window)",
                    details={"requestIds": unknown[:20]},
                )
            )
        problems = await self._problems(found, served)
        if problems:
            return self._reject(Refusal(422, "invalid_label", "; ".join(problems[:20])))
        return await self._record(found, served, client)

    async def _problems(self, found: list[Entry], served: dict[str, Served | None]) -> list[str]:
        problems = []
        seen: set[tuple[str, int]] = set()
        label_sets: dict[str, frozenset[str] | None] = {}  # one metadata fetch per model
        for request_id, index, label in found:
            answer = served[request_id]
            assert answer is not None
            if index >= len(answer.labels):
                problems.append(
                    f"{request_id}: index {index} out of range ({len(answer.labels)} texts)"
                )
                continue
            name = answer.backend.name
            if name not in label_sets:
                label_sets[name] = await self.labels.fetch(answer.backend, self.client())
            known = label_sets[name]
            if known is None:
                problems.append(
                    f"{request_id}: labels of model {answer.backend.name} unknown; cannot validate"
                )
            elif label not in known:
                problems.append(
                    f"{request_id}: {label[:MAX_LABEL_CHARS]!r} is not a label of "
                    f"{answer.backend.name} ({', '.join(sorted(known)[:20])})"
                )
            if (request_id, index) in seen:
                problems.append(f"{request_id}: index {index} given twice")
            seen.add((request_id, index))
        return problems

    def _score_pair(self, request_id: str, answer: Served, index: int, truth: str) -> None:
        """Both models of a pair judged on the same text; feedback that came before the
        paired answer waits for it on the answer (:meth:`ServedStore.keep_early`)."""
        if answer.pair is None:
            if answer.expects_pair:
                self.store.keep_early(request_id, answer, index, truth)
            return
        score_pair(self.metrics, answer.pair, index, truth)

    async def _record(
        self, found: list[Entry], served: dict[str, Served | None], client: str
    ) -> Response:
        rows: list[dict[str, object]] = []
        accepted, duplicates, unwritable = 0, 0, 0
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        for request_id, index, label in found:
            answer = served[request_id]
            assert answer is not None
            if index in answer.judged:
                duplicates += 1  # judged before: counting it again would skew accuracy
                continue
            answer.judged.add(index)
            accepted += 1
            model, correct = answer.backend.name, answer.labels[index] == label
            self.metrics.feedback.labels(
                answer.variant, model, "correct" if correct else "incorrect"
            ).inc()
            counts = self._counts.setdefault((answer.variant, model), [0, 0])
            counts[0] += int(correct)
            counts[1] += 1
            self.metrics.feedback_accuracy.labels(answer.variant, model).set(counts[0] / counts[1])
            self._score_pair(request_id, answer, index, label)
            if self.log is None:
                continue
            if answer.texts is None:  # the request could not be read back: no training row
                unwritable += 1
                continue
            rows.append(
                {
                    "time": now,
                    "requestId": request_id,
                    "index": index,
                    "text": answer.texts[index],
                    "label": label,
                    "variant": answer.variant,
                    "model": model,
                    "predicted": answer.labels[index],
                    "correct": correct,
                    "client": client,
                }
            )
        if duplicates:
            self.metrics.feedback_rejected.labels("duplicate").inc(duplicates)
        if unwritable:
            self.metrics.feedback_log_dropped.inc(unwritable)
        if self.log is not None and rows:
            self.log.write(rows)  # queued for the writer thread; never waits
        return JSONResponse({"accepted": accepted, "duplicates": duplicates})
