"""What the model server records for drift monitoring: the sentence embedding from the
same forward pass (torch fp32, head-pruned + INT8 dynamic; none from a logits-only ONNX
graph), the token counts and the text descriptors, and how they land in the prediction log.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from bertops.api.artifacts import LoadStep
from bertops.server.app import ServerSettings, create_app
from bertops.server.descriptors import DESCRIPTOR_KEYS, describe
from bertops.server.model import ServedModel, TorchClassifier
from bertops.server.predictionlog import PredictionLog, PredictionRecord
from tests.server.artifacts import (
    tiny_model,
    tokenizer_source,
    write_manifest,
    write_tiny_artifact,
    write_tiny_onnx_artifact,
)
from tests.server.conftest import LiveServer, wait_ready

HIDDEN = 32  # the tiny model's hidden size
TEXTS = ["the food was great", "the food was great", "unicorns 🦄 everywhere"]


def loaded(folder: Path) -> ServedModel:
    model = ServedModel(str(folder), threads=1, warmup_batch_sizes=(1,))
    model.load()
    return model


def test_describe_keys_and_values() -> None:
    assert describe("héllo", 4, 1) == {"chars": 5, "tokens": 4, "unkRate": 0.25, "nonAscii": 0.2}
    assert describe("", 2, 0) == {"chars": 0, "tokens": 2, "unkRate": 0.0, "nonAscii": 0.0}
    assert describe("abc", 0, 0)["unkRate"] == 0.0
    assert describe("abc") == {"chars": 3, "nonAscii": 0.0}  # no token counts given
    assert tuple(describe("x", 1, 0)) == DESCRIPTOR_KEYS


def test_torch_predictions_carry_embedding_and_token_counts(tiny_artifact: Path) -> None:
    model = loaded(tiny_artifact)
    first = model.predict(TEXTS)
    again = model.predict([TEXTS[0]])[0]
    assert all(p.embedding is not None and len(p.embedding) == HIDDEN for p in first)
    # Deterministic: the same text alone or in a padded batch gives the same vector.
    assert first[0].embedding == first[1].embedding
    assert again.embedding == pytest.approx(first[0].embedding, abs=1e-5)
    assert first[0].embedding != first[2].embedding
    # [CLS] the food was great [SEP]; the emoji is not in the uncased vocabulary.
    assert (first[0].tokens, first[0].unknown_tokens) == (6, 0)
    assert first[2].unknown_tokens == 1 and first[2].tokens is not None
    long = model.predict(["word " * 400])[0]
    assert long.tokens == 128  # counted after truncation at the manifest's max_length


def test_pruned_and_quantized_torch_model_gives_embeddings(tmp_path: Path) -> None:
    import torch
    from transformers import AutoTokenizer

    from bertops.modelio.heads import prune_heads

    folder = tmp_path / "pruned-int8"
    folder.mkdir()
    model = tiny_model()
    prune_heads(model, {0: [1]})
    model.save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(tokenizer_source()).save_pretrained(folder)
    recipe = [
        LoadStep(op="pruneHeads", params={"heads": {"0": [1]}}),
        LoadStep(op="quantizeDynamic", params={"granularity": "perTensor", "backend": "torch"}),
    ]
    write_manifest(folder, "tiny-pruned-int8", recipe=recipe)
    served = loaded(folder)
    predictions = served.predict(TEXTS)
    assert all(p.embedding is not None and len(p.embedding) == HIDDEN for p in predictions)
    assert predictions[0].embedding == predictions[1].embedding
    assert predictions[0].tokens == 6
    # The hook on the encoder keeps exactly what output_hidden_states=True gives last.
    classifier = served.classifier
    assert isinstance(classifier, TorchClassifier)
    encoded = classifier.tokenizer([TEXTS[2]], return_tensors="pt")
    with torch.inference_mode():
        output = classifier.model(**encoded, output_hidden_states=True)
    expected = output.hidden_states[-1][0].mean(0).tolist()
    # Alone, as above: INT8 dynamic quantization scales activations per batch, so a
    # quantized model's outputs move slightly (~1e-4) with the batch a text rides in.
    alone = served.predict([TEXTS[2]])[0]
    assert alone.embedding == pytest.approx(expected, abs=1e-6)
    assert predictions[2].embedding == pytest.approx(expected, abs=1e-2)


def test_onnx_logits_only_graph_has_no_embedding_but_counts(tmp_path: Path) -> None:
    predictions = loaded(write_tiny_onnx_artifact(tmp_path / "onnx")).predict(TEXTS)
    assert all(p.embedding is None for p in predictions)
    assert [p.tokens for p in predictions][:2] == [6, 6]
    assert predictions[2].unknown_tokens == 1


def test_log_lines_carry_descriptors_and_rounded_embedding(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    path = tmp_path / "predictions" / "server-a.jsonl"
    app = create_app(
        ServedModel(str(tiny_artifact), threads=1),
        ServerSettings(prediction_log_path=path),  # privacy "hash" by default
    )
    server = LiveServer(app).start()
    try:
        wait_ready(server.url)
        answer = httpx.post(server.url + "/predict", json={"texts": TEXTS})
        assert answer.status_code == 200
    finally:
        server.stop()  # flushes the log
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 3
    for line, text in zip(lines, TEXTS, strict=True):
        assert "text" not in line and len(line["textSha256"]) == 64
        assert line["chars"] == len(text) and line["tokens"] >= 3
        assert 0 <= line["unkRate"] <= 1 and 0 <= line["nonAscii"] <= 1
        assert len(line["embedding"]) == HIDDEN
        assert all(round(x, 4) == x for x in line["embedding"])
        assert {"time", "model", "modelVersion", "label", "confidence"} <= set(line)
    assert lines[0]["embedding"] == lines[1]["embedding"]
    assert lines[2]["unkRate"] > 0 and lines[2]["nonAscii"] > 0


def test_a_record_without_embedding_or_counts_leaves_them_out(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    log = PredictionLog(path, "text")
    log.write([PredictionRecord(time.time(), "m", "v1", "r", 0, "é", "neutral", 0.5, 1.0)])
    log.close()
    line = json.loads(path.read_text())
    assert line["text"] == "é" and line["nonAscii"] == 1.0
    assert not {"embedding", "tokens", "unkRate"} & set(line)


def test_onnx_graph_with_a_hidden_state_output_gives_embeddings(tmp_path: Path) -> None:
    import warnings

    import torch

    folder = write_tiny_onnx_artifact(tmp_path / "onnx-hidden")

    class WithHidden(torch.nn.Module):  # what an export that keeps the encoder output gives
        def __init__(self) -> None:
            super().__init__()
            self.inner = tiny_model()

        def forward(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> object:
            out = self.inner(
                input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True
            )
            return out.logits, out.hidden_states[-1]

    ids = torch.tensor([[101, 2023, 2003, 102, 0], [101, 2204, 2154, 1012, 102]])
    names = ["input_ids", "attention_mask", "token_type_ids"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecated TorchScript exporter, as above
        torch.onnx.export(
            WithHidden(),
            (ids, (ids != 0).long(), torch.zeros_like(ids)),
            str(folder / "model.onnx"),
            input_names=names,
            output_names=["logits", "last_hidden_state"],
            opset_version=17,
            dynamo=False,
            dynamic_axes={k: {0: "batch", 1: "sequence"} for k in [*names, "last_hidden_state"]}
            | {"logits": {0: "batch"}},
        )
    write_manifest(folder, "tiny-onnx-hidden", fmt="onnx")
    onnx = loaded(folder).predict(TEXTS)
    assert all(p.embedding is not None and len(p.embedding) == HIDDEN for p in onnx)
    torch_model = loaded(write_tiny_artifact(tmp_path / "torch"))  # the same weights (seed 0)
    expected = torch_model.predict(TEXTS)
    for got, want in zip(onnx, expected, strict=True):
        assert got.embedding == pytest.approx(want.embedding, abs=1e-4)
