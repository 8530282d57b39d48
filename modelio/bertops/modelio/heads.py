"""Attention-head surgery on BERT-style models: physically remove heads from the query,
key, value and output projections, and rebuild a head-pruned model from its full-size
config before its safetensors load.

transformers 5 dropped ``prune_heads``/``config.pruned_heads`` support, so a head-pruned
artifact records the removed heads, in original numbering, as a ``pruneHeads`` load step.
Called by ``bertops.trainer.compress.prune`` (pruning) and by
:mod:`bertops.modelio.recipe` (loading, for the trainer and the model server alike).
"""

from __future__ import annotations

from typing import Any

PRUNE_HEADS_OP = "pruneHeads"


def encoder_layers(model: Any) -> Any:
    """The transformer blocks of a BERT-style classifier (``model.bert.encoder.layer``)."""
    return model.base_model.encoder.layer


def heads_per_layer(model: Any) -> list[int]:
    return [
        int(layer.attention.self.query.out_features // layer.attention.self.attention_head_size)
        for layer in encoder_layers(model)
    ]


def _keep_index(heads: list[int], total: int, size: int) -> Any:
    import torch

    keep = [h for h in range(total) if h not in set(heads)]
    # prune_linear_layer is annotated with the legacy LongTensor type; any int64 works.
    return torch.tensor([h * size + i for h in keep for i in range(size)], dtype=torch.long)


def prune_heads(model: Any, heads: dict[int, list[int]]) -> None:
    """Remove ``heads`` (layer -> head indices of the current layer) in place and record
    them, in original numbering, in ``config.pruned_heads``. Raises ValueError for a head
    that does not exist or for removing every head of a layer."""
    from transformers.pytorch_utils import prune_linear_layer

    layers = encoder_layers(model)
    recorded: dict[str, list[int]] = {
        str(k): list(v) for k, v in (getattr(model.config, "pruned_heads", None) or {}).items()
    }
    for layer_index, remove in heads.items():
        if not remove:
            continue
        if not 0 <= layer_index < len(layers):
            raise ValueError(f"layer {layer_index} does not exist ({len(layers)} layers)")
        attention = layers[layer_index].attention
        self_attn = attention.self
        size = self_attn.attention_head_size
        total = self_attn.query.out_features // size
        if any(h < 0 or h >= total for h in remove) or len(set(remove)) >= total:
            raise ValueError(f"layer {layer_index}: cannot remove heads {remove} of {total}")
        index = _keep_index(remove, total, size)
        self_attn.query = prune_linear_layer(self_attn.query, index)
        self_attn.key = prune_linear_layer(self_attn.key, index)
        self_attn.value = prune_linear_layer(self_attn.value, index)
        attention.output.dense = prune_linear_layer(attention.output.dense, index, dim=1)
        self_attn.num_attention_heads = total - len(remove)
        self_attn.all_head_size = self_attn.num_attention_heads * size
        # Record original head numbers: earlier pruning shifted the current indices.
        before = set(recorded.get(str(layer_index), []))
        original = [h for h in range(total + len(before)) if h not in before]
        recorded[str(layer_index)] = sorted(before | {original[h] for h in remove})
    model.config.pruned_heads = recorded


def rebuild_pruned_heads(model: Any, pruned: dict[str, list[int]]) -> None:
    """Shrink a freshly built (full-size) model to the recorded pruned heads, so a
    head-pruned safetensors file loads with strict shapes. Heads are in original numbering."""
    model.config.pruned_heads = {}
    prune_heads(model, {int(layer): sorted(h) for layer, h in pruned.items()})
