"""Pruning of BERT classifiers: unstructured magnitude pruning of the encoder's Linear
weights (global or per layer, made permanent: the zeros are in the saved weights) and
structured attention-head pruning (heads ranked by importance on validation data, then
physically removed from the query/key/value and output projections).

Called by :mod:`bertops.trainer.compress.methods` (and by
:mod:`bertops.trainer.compress.finish`, which counts parameters). The head surgery itself
(and its replay when a head-pruned artifact loads) lives in :mod:`bertops.modelio.heads`,
shared with the model server.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from bertops.modelio.heads import encoder_layers, heads_per_layer


def prunable_linears(model: Any) -> list[tuple[str, nn.Linear]]:
    """Encoder Linear layers: where the FLOPs are. Embeddings (a lookup, not a matmul),
    the pooler and the classifier head stay dense."""
    found = []
    for index, layer in enumerate(encoder_layers(model)):
        for name, module in layer.named_modules():
            if isinstance(module, nn.Linear):
                found.append((f"layer.{index}.{name}", module))
    return found


def _at_least(fraction: float, total: int) -> int:
    """Weights to zero so the target is reached, not missed by rounding down."""
    return min(total, math.ceil(fraction * total - 1e-9))


@torch.no_grad()
def magnitude_prune(model: Any, sparsity: float, scope: str) -> dict[str, torch.Tensor]:
    """Zero the smallest-magnitude weights; returns the keep-masks (for a fine-tune that
    must keep the zeros). ``global`` ranks all encoder weights together, so layers that
    matter less lose more; ``perLayer`` cuts every Linear by the same fraction."""
    linears = prunable_linears(model)
    masks: dict[str, torch.Tensor] = {}
    if scope == "global":
        magnitudes = torch.cat([m.weight.detach().abs().flatten() for _, m in linears])
        count = _at_least(sparsity, magnitudes.numel())
        threshold = torch.kthvalue(magnitudes, count).values if count else None
        for name, module in linears:
            keep = (
                module.weight.abs() > threshold
                if threshold is not None
                else torch.ones_like(module.weight, dtype=torch.bool)
            )
            masks[name] = keep
    else:
        for name, module in linears:
            flat = module.weight.detach().abs().flatten()
            count = _at_least(sparsity, flat.numel())
            if count == 0:
                masks[name] = torch.ones_like(module.weight, dtype=torch.bool)
                continue
            threshold = torch.kthvalue(flat, count).values
            masks[name] = module.weight.abs() > threshold
    apply_masks(model, masks)
    return masks


@torch.no_grad()
def apply_masks(model: Any, masks: dict[str, torch.Tensor]) -> None:
    for name, module in prunable_linears(model):
        if name in masks:
            module.weight.mul_(masks[name].to(module.weight.dtype))


def encoder_sparsity(model: Any) -> float:
    """Fraction of exact zeros over the encoder's Linear weights."""
    total = zeros = 0
    for _, module in prunable_linears(model):
        total += module.weight.numel()
        zeros += int((module.weight == 0).sum())
    return zeros / total if total else 0.0


def head_importance(
    model: Any, batches: Iterable[tuple[dict[str, torch.Tensor], torch.Tensor]]
) -> torch.Tensor:
    """Importance of every head (layers x heads): the accumulated |d loss / d gate| of a
    multiplicative gate on each head's output (Michel et al., 2019), normalised per layer.
    transformers 5 has no ``head_mask`` argument any more, so the gates are forward hooks
    on the self-attention modules."""
    layers = list(encoder_layers(model))
    counts = heads_per_layer(model)
    width = max(counts)
    gates = [torch.ones(n, requires_grad=True) for n in counts]
    scores = torch.zeros(len(layers), width)
    handles = []

    def hook(index: int) -> Any:
        def gate_output(_module: nn.Module, _inputs: Any, output: Any) -> Any:
            context, *rest = output
            shape = context.shape
            gated = context.view(*shape[:-1], counts[index], -1) * gates[index][:, None]
            return (gated.view(shape), *rest)

        return gate_output

    for index, layer in enumerate(layers):
        handles.append(layer.attention.self.register_forward_hook(hook(index)))
    was_training = model.training
    model.eval()  # no dropout: importance of the model as it will be served
    try:
        for batch, target in batches:
            logits = model(**batch).logits
            loss = torch.nn.functional.cross_entropy(logits.float(), target)
            grads = torch.autograd.grad(loss, gates)
            for index, grad in enumerate(grads):
                scores[index, : counts[index]] += grad.abs().detach()
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    norms = scores.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return scores / norms


def choose_heads(importance: torch.Tensor, count: int, counts: list[int]) -> dict[int, list[int]]:
    """The ``count`` least important heads overall, never the last head of a layer."""
    ranked = sorted(
        (float(importance[layer, head]), layer, head)
        for layer, n in enumerate(counts)
        for head in range(n)
    )
    chosen: dict[int, list[int]] = {}
    for _, layer, head in ranked:
        if sum(len(v) for v in chosen.values()) == count:
            break
        if len(chosen.get(layer, [])) >= counts[layer] - 1:
            continue
        chosen.setdefault(layer, []).append(head)
    return {layer: sorted(heads) for layer, heads in sorted(chosen.items())}


def parameter_count(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))
