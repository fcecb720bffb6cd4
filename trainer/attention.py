"""How packed ``[prompt | chosen | rejected]`` rows attend: a dense mask (the reference) or a flex-attention block mask.

Each completion token may see the prompt and the earlier tokens of its own completion (``packing.segment_mask``).

- ``dense``: that rule as a 4-D boolean mask, ``rows × L × L``, handed to the model's SDPA. Simple and exact, but at
  GPU sizes the mask alone is 8 rows × 8k × 8k = 512 MB, SDPA cannot use its flash kernel with a mask, and the
  chosen↔rejected blocks (masked out) are computed anyway.
- ``flex``: the same rule as a ``mask_mod`` of PyTorch's flex attention, compressed into a ``BlockMask`` (one entry
  per 128 × 128 block): blocks no query may see (rejected → chosen, the future) are skipped, blocks every query
  sees run without a mask, and no L × L tensor exists. The model's attention is routed through
  ``packed_attention``, which takes flex attention for a ``BlockMask`` and SDPA for anything else, so the same model
  still generates and scores plain rows as before.

``auto`` takes flex on CUDA and dense elsewhere: PyTorch's flex attention has no backward on the CPU (2.13 raises
``NotImplementedError``), and on the CPU the dense mask of a 256-token row costs next to nothing. Which is faster
on a GPU is measured by ``bench/gpu_check.sh`` (both variants, side by side).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch loads lazily: trainer.config reads ATTENTIONS, and `prefloop --help` stays instant
    import torch

ATTENTIONS = ("auto", "dense", "flex")
IMPLEMENTATION = "prefloop_packed"  # the name packed_attention is registered under in transformers


def resolve(kind: str, device: torch.device) -> str:
    """``auto`` as ``dense`` everywhere for now; ``dense`` and ``flex`` as they are.

    Flex agrees with dense on the CPU (tests/test_trainer_speed.py) but has never run on a GPU: until
    ``bench/gpu_check.sh``'s attention check has measured it there (agreement, first call with its compile, steady
    speed, memory), a CUDA user gets the path that has run, and ``--attention flex`` is the opt-in."""
    del device          # the choice will depend on it once the GPU check has decided
    return "dense" if kind == "auto" else kind


def segment_mask_mod(segment: torch.Tensor) -> Any:
    """``packing.segment_mask``'s rule as a flex ``mask_mod``: causal, a completion sees the prompt (segment 0) and
    itself, padding (-1) is seen by nobody, and a padding query sees itself (so no row is empty)."""
    def mask_mod(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        sq, skv = segment[b, q], segment[b, kv]
        return ((q >= kv) & (skv >= 0) & ((skv == 0) | (skv == sq))) | (q == kv)
    return mask_mod


def block_mask(segment: torch.Tensor) -> Any:
    """The ``BlockMask`` of packed rows with these segments. On CUDA its construction is compiled, so it is built
    block by block without an L × L tensor; elsewhere (tests) it is built densely once."""
    from torch.nn.attention.flex_attention import create_block_mask

    rows, length = segment.shape
    return create_block_mask(segment_mask_mod(segment), rows, None, length, length, device=segment.device,
                             _compile=segment.device.type == "cuda")


def packed_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: flex attention for a ``BlockMask``, SDPA otherwise."""
    from torch.nn.attention.flex_attention import BlockMask
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if not isinstance(attention_mask, BlockMask):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if query.device.type == "cuda":  # transformers' compiled flex kernel (GQA, soft-capping, sinks)
        from transformers.integrations.flex_attention import flex_attention_forward

        return flex_attention_forward(module, query, key, value, attention_mask, **kwargs)
    # elsewhere flex attention runs eagerly and forward only (PyTorch has no CPU backward for it)
    import torch
    from torch.nn.attention.flex_attention import flex_attention

    if kwargs.get("dropout", 0.0) or kwargs.get("s_aux") is not None:
        raise ValueError("flex attention off CUDA supports neither attention dropout nor sinks; use dense")
    cap = kwargs.get("softcap")
    score_mod = (lambda s, b, h, q, kv: cap * torch.tanh(s / cap)) if cap else None
    out = flex_attention(query, key, value, score_mod=score_mod, block_mask=attention_mask,
                         scale=kwargs.get("scaling"), enable_gqa=query.size(1) != key.size(1))
    return out.transpose(1, 2).contiguous(), None


def use_packed_attention(model: Any) -> None:
    """Route ``model``'s attention through ``packed_attention`` (registered once with transformers; plain masks are
    built as for SDPA). The name is not saved with the model: its ``config.json`` stays as it was."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    if IMPLEMENTATION not in AttentionInterface._global_mapping:
        AttentionInterface.register(IMPLEMENTATION, packed_attention)
        ALL_MASK_ATTENTION_FUNCTIONS.register(IMPLEMENTATION, sdpa_mask)
    if model.config._attn_implementation != IMPLEMENTATION:
        model.set_attn_implementation(IMPLEMENTATION)
