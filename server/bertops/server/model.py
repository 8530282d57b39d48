"""The model lifecycle of the data plane: load a verified artifact (safetensors through
transformers, or ONNX through onnxruntime), apply its load-time recipe, warm it up, then
classify batches of texts.

Called by :mod:`bertops.server.app` (which loads a :class:`ServedModel` in a worker
thread at startup and reports ready only after :meth:`ServedModel.load` finished) and by
:mod:`bertops.server.batcher` (which calls :meth:`ServedModel.predict` off the event loop).
torch/transformers/onnxruntime are imported inside the functions that need them, so the
CLI and the gateway never pay for them.
"""

from __future__ import annotations

import logging
import math
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bertops.api.artifacts import ModelManifest
from bertops.modelio.recipe import load_torch, onnx_graph
from bertops.server.artifact import ArtifactError, VerifiedArtifact, verify_artifact

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """One classified text, with what drift monitoring needs of the same forward pass.

    ``embedding``: the model's own sentence embedding, the last hidden state mean-pooled
    over the attention mask (hidden-size floats); None when the model does not expose
    its hidden states (an ONNX graph exported with logits only).
    ``tokens``: tokens the model saw, special tokens included, counted in the encoding
    truncated at the manifest's ``max_length`` (a longer text counts ``max_length``),
    padding excluded; ``unknown_tokens``: how many of them are the tokenizer's unknown
    token. None from a classifier that does not report them.
    """

    label: str
    score: float
    probabilities: list[float]
    embedding: list[float] | None = None
    tokens: int | None = None
    unknown_tokens: int | None = None


class Classifier(Protocol):
    """What the batcher needs from a loaded model."""

    labels: list[str]

    def predict(self, texts: Sequence[str]) -> list[Prediction]: ...


def _to_predictions(
    labels: list[str],
    probabilities: Any,
    counts: tuple[list[int], list[int]] | None = None,
    embeddings: Any = None,
) -> list[Prediction]:
    """Rows of class probabilities (a numpy array) to predictions, with each row's token
    counts (:func:`token_counts`) and embedding (a numpy array, or None)."""
    rows: list[list[float]] = probabilities.tolist()
    vectors: list[list[float]] | list[None] = (
        embeddings.tolist() if embeddings is not None else [None] * len(rows)
    )
    tokens, unknown = counts if counts is not None else ([None] * len(rows), [None] * len(rows))
    out = []
    for row, vector, n_tokens, n_unknown in zip(rows, vectors, tokens, unknown, strict=True):
        best = max(range(len(row)), key=row.__getitem__)
        out.append(
            Prediction(
                label=labels[best],
                score=float(row[best]),
                probabilities=row,
                embedding=vector,
                tokens=n_tokens,
                unknown_tokens=n_unknown,
            )
        )
    return out


def token_counts(input_ids: Any, attention_mask: Any, unk_id: int | None) -> tuple[Any, Any]:
    """Per row of a padded encoding (torch tensors or numpy arrays alike): the real
    tokens (the attention mask's ones: special tokens in, padding out) and the unknown
    ones among them. Rows are already truncated at ``max_length``, so are the counts."""
    tokens = attention_mask.sum(-1)
    if unk_id is None:
        return tokens.tolist(), [0] * len(tokens)
    unknown = ((input_ids == unk_id) & (attention_mask != 0)).sum(-1)
    return tokens.tolist(), unknown.tolist()


def mean_pool(hidden: Any, mask: Any) -> Any:
    """The mean of the token vectors the mask keeps, per row: ``hidden`` is (batch,
    sequence, hidden), ``mask`` the attention mask (batch, sequence) already in
    ``hidden``'s float type; torch tensors or numpy arrays alike."""
    mask = mask[..., None]
    return (hidden * mask).sum(1) / mask.sum(1).clip(min=1.0)


class _Tokenizing:
    """Shared tokenization: pad to the longest text of the batch (not to max_length),
    truncate at the manifest's max_length. Sorting a batch by length and running it in
    chunks keeps short texts from paying for the padding of a long one."""

    labels: list[str]
    tokenizer: Any
    max_length: int
    chunk: int = 16

    def _order(self, texts: Sequence[str]) -> list[int]:
        return sorted(range(len(texts)), key=lambda i: len(texts[i]))

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        order = self._order(texts)
        results: list[Prediction | None] = [None] * len(texts)
        for start in range(0, len(order), self.chunk):
            indices = order[start : start + self.chunk]
            for index, prediction in zip(
                indices, self._predict_chunk([texts[i] for i in indices]), strict=True
            ):
                results[index] = prediction
        return [r for r in results if r is not None]

    def _predict_chunk(self, texts: list[str]) -> list[Prediction]:
        raise NotImplementedError


class TorchClassifier(_Tokenizing):
    """A transformers sequence classifier read from safetensors only (never a pickle)."""

    def __init__(self, artifact: VerifiedArtifact, threads: int | None = None) -> None:
        import torch
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a server log is not a terminal
        if threads:
            torch.set_num_threads(threads)
        manifest = artifact.manifest
        self.labels = list(manifest.labels)
        self.max_length = manifest.max_length
        self.tokenizer = AutoTokenizer.from_pretrained(artifact.folder, local_files_only=True)
        # The load recipe (pruneHeads, quantizeDynamic) is replayed by the loader the
        # trainer measured with; num_labels survives quantization.
        model = load_torch(artifact.folder, manifest)
        if model.config.num_labels != len(self.labels):
            raise ArtifactError(
                f"model has {model.config.num_labels} outputs, manifest lists "
                f"{len(self.labels)} labels"
            )
        self.model = model
        self._torch = torch
        # The embedding comes from the same forward pass: a hook on the encoder (the
        # base model under the classification head) keeps its last hidden state. It is
        # the tensor output_hidden_states=True returns last, without the cost of that
        # option (about 0.1-0.4 ms a call, measured: transformers records every layer).
        # A model without a separate base model falls back to that option.
        self._hidden = threading.local()
        base = model.base_model
        self._hooked = base is not model
        if self._hooked:
            base.register_forward_hook(self._keep_hidden)

    def _keep_hidden(self, _module: Any, _args: Any, output: Any) -> None:
        self._hidden.value = output[0]  # last_hidden_state, as a ModelOutput or a tuple

    def _predict_chunk(self, texts: list[str]) -> list[Prediction]:
        torch = self._torch
        encoded = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        mask = encoded["attention_mask"]
        with torch.inference_mode():
            self._hidden.value = None
            if self._hooked:
                logits = self.model(**encoded).logits
                hidden = self._hidden.value
            else:
                output = self.model(**encoded, output_hidden_states=True)
                logits, hidden = output.logits, output.hidden_states[-1]
            self._hidden.value = None  # hold no activations between calls
            probabilities = torch.softmax(logits.float(), dim=-1).numpy()
            pooled = None
            if hidden is not None and hidden.dim() == 3:
                pooled = mean_pool(hidden.float(), mask.to(torch.float32)).numpy()
        counts = token_counts(encoded["input_ids"], mask, self.tokenizer.unk_token_id)
        return _to_predictions(self.labels, probabilities, counts, pooled)


def onnx_session_options(ort: Any, threads: int | None) -> Any:
    """The session options the trainer measured its ONNX variants with
    (``bertops.trainer.compress.onnx_export.session``): all graph optimisations (an INT8
    graph needs them to fuse DynamicQuantizeLinear + MatMulInteger into one kernel), one
    operator at a time, ``threads`` intra-op threads with no inter-op pool, and worker
    threads that sleep instead of spinning between operators: on a shared or
    CPU-limited node a spinning pool fights the other processes (and the cgroup quota)
    for the cores. Measured on the 2-core machine under a load average of 9, an INT8
    MiniLM at batch 1 (sequence 128), both sessions in one interleaved run: median 53 ms
    without spinning against 110 ms with it, fastest calls 18 against 22 ms."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


class OnnxClassifier(_Tokenizing):
    """An ONNX export run by onnxruntime; a quantizeDynamic step quantizes it at load
    time with onnxruntime's own quantizer (the stored file stays the measured one)."""

    def __init__(self, artifact: VerifiedArtifact, threads: int | None = None) -> None:
        import numpy as np
        import onnxruntime as ort
        from transformers import AutoTokenizer

        manifest = artifact.manifest
        self.labels = list(manifest.labels)
        self.max_length = manifest.max_length
        self.tokenizer = AutoTokenizer.from_pretrained(artifact.folder, local_files_only=True)
        options = onnx_session_options(ort, threads)
        # onnxruntime reads the model into memory, so a quantized copy only needs to live
        # until the session exists.
        with tempfile.TemporaryDirectory(prefix="bertops-onnx-") as scratch:
            path = onnx_graph(artifact.folder, manifest, Path(scratch))
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        self._inputs = [i.name for i in self.session.get_inputs()]
        outputs = self.session.get_outputs()
        names = [o.name for o in outputs]
        self._logits = "logits" if "logits" in names else names[0]
        # The export is not changed for drift: an embedding comes only from a graph that
        # already exposes a (batch, sequence, hidden) hidden-state output.
        hidden = [
            o.name
            for o in outputs
            if o.name != self._logits and "hidden" in o.name.lower() and len(o.shape or ()) == 3
        ]
        self._hidden = hidden[-1] if hidden else None
        self._np = np

    def _predict_chunk(self, texts: list[str]) -> list[Prediction]:
        np = self._np
        encoded = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np"
        )
        feed = {name: encoded[name].astype(np.int64) for name in self._inputs if name in encoded}
        for name in self._inputs:  # e.g. token_type_ids when the tokenizer omits them
            feed.setdefault(name, np.zeros_like(encoded["input_ids"], dtype=np.int64))
        wanted = [self._logits] + ([self._hidden] if self._hidden else [])
        results = self.session.run(wanted, feed)
        logits = results[0].astype(np.float32)
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        mask = encoded["attention_mask"]
        pooled = None
        if self._hidden is not None:
            pooled = mean_pool(results[1].astype(np.float32), mask.astype(np.float32))
        counts = token_counts(encoded["input_ids"], mask, self.tokenizer.unk_token_id)
        probabilities = shifted / shifted.sum(axis=-1, keepdims=True)
        return _to_predictions(self.labels, probabilities, counts, pooled)


def load_classifier(artifact: VerifiedArtifact, threads: int | None = None) -> Classifier:
    if artifact.manifest.format == "onnx":
        return OnnxClassifier(artifact, threads)
    return TorchClassifier(artifact, threads)


WARMUP_TEXT = "warming up the model server"


class ModelOutputError(ValueError):
    """The model computes something unservable (NaN or infinite probabilities)."""


def check_finite(predictions: Sequence[Prediction]) -> None:
    """Refuse non-finite outputs at warm-up: a model with NaN weights would otherwise
    turn ready and then fail every request (NaN is not JSON)."""
    for prediction in predictions:
        values = [prediction.score, *prediction.probabilities]
        if not all(math.isfinite(value) for value in values):
            raise ModelOutputError(
                "the model's outputs are not finite (NaN or infinity) on the warm-up texts; "
                "the weights are probably broken, refusing to serve"
            )


@dataclass
class ServedModel:
    """One model version from load to ready. ``load`` blocks (run it in a thread); the
    app reports ready only when ``ready`` is set, after the warm-up batches ran."""

    uri: str
    name: str | None = None
    threads: int | None = None
    warmup_batch_sizes: tuple[int, ...] = (1, 8)
    loader: Callable[[VerifiedArtifact, int | None], Classifier] = load_classifier
    artifact: VerifiedArtifact | None = None
    classifier: Classifier | None = None
    error: str | None = None
    load_seconds: float | None = None
    ready: threading.Event = field(default_factory=threading.Event)

    def verify(self) -> VerifiedArtifact:
        if self.artifact is None:
            self.artifact = verify_artifact(self.uri)
            if self.name is None:
                self.name = self.artifact.manifest.name
        return self.artifact

    @property
    def manifest(self) -> ModelManifest:
        return self.verify().manifest

    @property
    def version(self) -> str:
        return self.verify().version

    def load(self) -> None:
        started = time.perf_counter()
        try:
            artifact = self.verify()
            classifier = self.loader(artifact, self.threads)
            artifact.release()  # the model is in memory; drop the verified copy
            for size in self.warmup_batch_sizes:
                check_finite(classifier.predict([WARMUP_TEXT] * size))
        except Exception as error:
            self.error = f"{type(error).__name__}: {error}"
            log.error("model %s failed to load: %s", self.uri, self.error)
            raise
        self.classifier = classifier
        self.load_seconds = time.perf_counter() - started
        self.ready.set()
        log.info("model %s (%s) ready in %.2fs", self.name, artifact.version, self.load_seconds)

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        if self.classifier is None:
            raise RuntimeError("model is not loaded")
        return self.classifier.predict(texts)
