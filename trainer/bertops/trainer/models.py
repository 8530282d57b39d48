"""Base models and tokenizers: resolve a :class:`~bertops.api.sources.ModelSource` to a
local folder, load or train a tokenizer, and build a model for a task.

Used by prepare (which tokenizer), train (what to fine-tune), evaluate and compress (an
artifact's tokenizer; artifact weights load through :mod:`bertops.modelio.recipe`).
Never touches a model hub: ``HF_HUB_OFFLINE`` is forced before transformers is
imported, and weights are only read from safetensors (a ``pytorch_model.bin`` would be
unpickled, so it is refused).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertops.api.dataset import WordPieceTraining
from bertops.api.sources import BertConfigSpec, ModelSource
from bertops.api.training import Task
from bertops.modelio.recipe import TASK_MODEL_CLASSES  # the one task switch
from bertops.trainer.errors import BadInputError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # forked DataLoader workers

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")


def quiet_transformers() -> None:
    """No download bars or advisory logs: stdout belongs to the progress JSON lines."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def package_model_folder(package: str) -> Path:
    """The model folder an installed package ships (``get_model_path()`` or ``model/``)."""
    module_name = package.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise BadInputError(
            f"model package {package!r} is not installed (import {module_name} failed: {error})"
        ) from error
    getter = getattr(module, "get_model_path", None)
    if callable(getter):
        return Path(getter())
    file = getattr(module, "__file__", None)
    if file and (Path(file).parent / "model").is_dir():
        return Path(file).parent / "model"
    raise BadInputError(f"package {package!r} has no get_model_path() and no model/ folder")


def source_folder(source: ModelSource) -> Path | None:
    """The local folder of a path/package source; None for a fresh config.

    Remote ``path`` URIs are not fetched here: the operator mounts model stores as
    volumes, and a base model is read-only input.
    """
    if source.config is not None:
        return None
    if source.package:
        return package_model_folder(source.package)
    assert source.path is not None
    from bertops.trainer.artifacts_io import is_local, local_path

    if not is_local(source.path):
        raise BadInputError(f"base model path {source.path} must be a local folder or file:// URI")
    folder = local_path(source.path)
    if not folder.is_dir():
        raise BadInputError(f"base model folder {source.path} does not exist")
    return folder


def check_model_folder(folder: Path, what: str = "base model") -> None:
    if not (folder / "config.json").is_file():
        raise BadInputError(f"{what} folder {folder} has no config.json")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        pickled = [p.name for p in folder.glob("*.bin")]
        hint = (
            (
                f" (found {', '.join(pickled)}: pickle weights are never loaded; "
                "convert them to safetensors)"
            )
            if pickled
            else ""
        )
        raise BadInputError(f"{what} folder {folder} has no model.safetensors weights{hint}")


def tokenizer_folder(source: ModelSource) -> Path:
    """Where the tokenizer of a source lives (for config sources: its ``tokenizer``)."""
    if source.config is not None:
        if not source.tokenizer:
            raise BadInputError("a config model source needs `tokenizer` (a folder or package)")
        candidate = Path(source.tokenizer)
        if candidate.is_dir():
            return candidate
        return package_model_folder(source.tokenizer)
    folder = source_folder(source)
    assert folder is not None
    return folder


def load_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise BadInputError(f"no tokenizer in {folder} (expected tokenizer.json or vocab.txt)")
    quiet_transformers()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def is_uncased(tokenizer: PreTrainedTokenizerBase) -> bool:
    """True when the tokenizer lowercases (then cleaning lowercases too, in 'auto')."""
    upper = tokenizer("Hello World Bert", add_special_tokens=False)["input_ids"]
    lower = tokenizer("hello world bert", add_special_tokens=False)["input_ids"]
    return bool(upper == lower)


def vocab_digest(tokenizer: PreTrainedTokenizerBase) -> str:
    """sha256 of the vocabulary: two tokenizers with equal digests give equal ids."""
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()


def train_wordpiece(
    texts: list[str], spec: WordPieceTraining, max_length: int
) -> PreTrainedTokenizerBase:
    """A BERT WordPiece tokenizer trained on ``texts`` (e.g. Chinese, absent from the
    English vocabulary). Deterministic for the same texts in the same order."""
    quiet_transformers()
    from tokenizers import BertWordPieceTokenizer
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    wordpiece = BertWordPieceTokenizer(
        clean_text=True,
        handle_chinese_chars=True,
        strip_accents=None,
        lowercase=spec.lowercase,
    )
    wordpiece.train_from_iterator(
        texts,
        vocab_size=spec.vocab_size,
        min_frequency=spec.min_frequency,
        special_tokens=special,
        show_progress=False,
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=wordpiece._tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
    )


def bert_config(spec: BertConfigSpec, vocab_size: int, **extra: Any) -> Any:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        intermediate_size=spec.intermediate_size,
        max_position_embeddings=spec.max_position_embeddings,
        **extra,
    )


def build_model(
    task: Task, source: ModelSource, labels: list[str], dropout: float, vocab_size: int
) -> PreTrainedModel:
    """A task model from a pretrained folder or a fresh config, with dropout set and a
    new classification head for ``labels``."""
    class_name = TASK_MODEL_CLASSES.get(task)
    if class_name is None:
        raise BadInputError(f"task {task} is not supported by this trainer version yet")
    quiet_transformers()
    import transformers

    model_class = getattr(transformers, class_name)
    id2label = dict(enumerate(labels))
    label2id = {label: i for i, label in enumerate(labels)}
    common: dict[str, Any] = {
        "num_labels": len(labels),
        "id2label": id2label,
        "label2id": label2id,
        "hidden_dropout_prob": dropout,
        "attention_probs_dropout_prob": dropout,
        "classifier_dropout": dropout,
    }
    if source.config is not None:
        config = bert_config(source.config, vocab_size, **common)
        model: PreTrainedModel = model_class.from_config(config)
        return model
    folder = source_folder(source)
    assert folder is not None
    check_model_folder(folder)
    try:
        model = model_class.from_pretrained(
            str(folder), local_files_only=True, use_safetensors=True, **common
        )
    except (OSError, ValueError) as error:
        raise BadInputError(f"cannot load base model from {folder}: {error}") from error
    embeddings = model.get_input_embeddings()
    rows = int(getattr(embeddings, "num_embeddings", vocab_size))
    if rows < vocab_size:
        raise BadInputError(
            f"base model {source.describe()} has {rows} token embeddings but the "
            f"dataset's tokenizer has {vocab_size} tokens; prepare the dataset with this "
            "model's tokenizer"
        )
    return model
