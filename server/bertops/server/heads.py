"""Rebuilds a head-pruned BERT before its weights load: the ``pruneHeads`` load step.

transformers 5 no longer honours ``config.pruned_heads``, so a head-pruned artifact
(written by the trainer's compress step) records the removed heads, in original
numbering, as a load step; the server builds the full-size model from its config,
shrinks each layer's attention to the kept heads and then loads the safetensors file
with strict shapes. Called by :class:`bertops.server.model.TorchClassifier`. (The server
may not import the trainer; this mirrors ``bertops.trainer.compress.prune``.)
"""

from __future__ import annotations

from typing import Any

PRUNE_HEADS_OP = "pruneHeads"


def shrink_attention(model: Any, heads: dict[str, list[int]]) -> None:
    """Remove the given heads (layer index -> original head numbers) from a fresh model."""
    import torch
    from transformers.pytorch_utils import prune_linear_layer

    encoder = model.base_model.encoder.layer
    for layer_key, removed in heads.items():
        if not removed:
            continue
        attention = encoder[int(layer_key)].attention
        self_attn = attention.self
        size = self_attn.attention_head_size
        total = self_attn.query.out_features // size
        if any(h < 0 or h >= total for h in removed) or len(set(removed)) >= total:
            raise ValueError(f"layer {layer_key}: cannot remove heads {removed} of {total}")
        keep: Any = torch.cat([torch.arange(h * size, (h + 1) * size)
                               for h in range(total) if h not in set(removed)])
        self_attn.query = prune_linear_layer(self_attn.query, keep)
        self_attn.key = prune_linear_layer(self_attn.key, keep)
        self_attn.value = prune_linear_layer(self_attn.value, keep)
        attention.output.dense = prune_linear_layer(attention.output.dense, keep, dim=1)
        self_attn.num_attention_heads = total - len(removed)
        self_attn.all_head_size = self_attn.num_attention_heads * size
    model.config.pruned_heads = {str(k): sorted(v) for k, v in heads.items()}
