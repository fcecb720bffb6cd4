"""Completion log-probabilities: the fast packed path used in training, and the plain one it must agree with.

Fast path: run the backbone (``model.base_model``) on packed rows, take the hidden states at the positions that
predict completion tokens, and apply the LM head and log-softmax there only. A completion of 20 tokens after a
60-token prompt costs 20 LM-head rows instead of 80, and the prompt's layers run once for both completions.

The trainer calls it through ``PackedLM``, the one module that DDP or FSDP2 wrap: DDP arms its gradient all-reduce
only inside its own ``forward``, so calling the backbone from outside the wrapper would train each process on its
own gradients without an error (and FSDP2 would fail on unsharded weights).

``naive_logps`` runs the whole model on ``prompt + completion`` for each sequence separately, exactly as TRL scores
it; tests check both give the same numbers.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch

from trainer.packing import PackedBatch
from trainer.tokenize import Example


def autocast(dtype: str, device: torch.device) -> Any:
    """bf16 autocast on the model's device, or nothing for fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16" else nullcontext()


def resolve_device(name: str) -> torch.device:
    """``auto``: the first CUDA GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX). Without them torch's bf16 matmuls fall
    back to a slow path: 0.8 GFLOP/s against 56 in fp32 on a 2-core VM here, so bf16 there is a trap."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = fh.read()
    except OSError:
        return True  # not Linux: cannot tell, do not warn
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _head_logits(model: Any, hidden: torch.Tensor) -> torch.Tensor:
    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)  # Gemma 2/3
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


# fp32 logits the LM head may hold at once; above this, completion positions go through it in chunks
HEAD_CHUNK_ELEMENTS = 2**26  # 256 MiB of fp32 logits: 512 positions of a 128k vocabulary


def token_logps(model: Any, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) at each hidden state, all at once: the reference for ``chunked_token_logps``."""
    logits = _head_logits(model, hidden).float()
    return -torch.nn.functional.cross_entropy(logits, targets, reduction="none")


def chunked_token_logps(model: Any, hidden: torch.Tensor, targets: torch.Tensor,
                        rows: int | None = None) -> torch.Tensor:
    """``token_logps`` over chunks of ``rows`` positions (default: what fits ``HEAD_CHUNK_ELEMENTS``), each one
    recomputed in backward rather than kept: an 8k-token batch with a 128k vocabulary holds one chunk's logits
    (and their log-softmax) at a time instead of 4 GiB of each. The recomputation costs one extra LM-head matmul
    per scored token; below the threshold there is a single chunk and nothing is recomputed."""
    vocab = model.get_output_embeddings().weight.shape[0]
    rows = rows or max(1, HEAD_CHUNK_ELEMENTS // vocab)
    if hidden.size(0) <= rows:
        return token_logps(model, hidden, targets)
    from torch.utils.checkpoint import checkpoint

    grad = torch.is_grad_enabled() and hidden.requires_grad
    return torch.cat([checkpoint(token_logps, model, hidden[i:i + rows], targets[i:i + rows], use_reentrant=False)
                      if grad else token_logps(model, hidden[i:i + rows], targets[i:i + rows])
                      for i in range(0, hidden.size(0), rows)])


def causal_lm(model: Any) -> Any:
    """The transformers causal LM inside a PEFT model (its LoRA layers injected in place), or ``model`` itself.
    ``PeftModel.base_model`` is PEFT's tuner, not the backbone, so the fast path must unwrap first."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def packed_logps(model: Any, batch: PackedBatch, attention: str = "dense") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence sums of completion token log-probs and token counts, each of shape ``(n_seqs,)``.

    Sequences are ordered completion-major: all first completions (chosen), then all second ones (rejected).
    ``attention``: ``dense`` (the 4-D mask) or ``flex`` (a block mask; the model must be routed through
    ``trainer.attention.use_packed_attention`` first, as ``PackedLM`` does).
    """
    model = causal_lm(model)
    if attention == "flex":
        from trainer.attention import block_mask

        mask = block_mask(batch.segment)
    else:
        mask = batch.attention_mask
    out = model.base_model(input_ids=batch.input_ids, attention_mask=mask, position_ids=batch.position_ids,
                           use_cache=False)
    hidden = out.last_hidden_state
    picked = hidden.reshape(-1, hidden.size(-1)).index_select(0, batch.src)
    logps = chunked_token_logps(model, picked, batch.targets)
    sums = logps.new_zeros(batch.n_seqs).index_add(0, batch.seq, logps)
    counts = torch.bincount(batch.seq, minlength=batch.n_seqs).to(sums.dtype)
    return sums, counts


class PackedLM(torch.nn.Module):
    """``forward(batch)`` is ``packed_logps(lm, batch, attention)``: the module the trainer wraps (DDP, FSDP2) and
    calls. ``attention``: ``dense`` or ``flex`` (``trainer.attention``; resolve ``auto`` first)."""

    def __init__(self, lm: Any, attention: str = "dense") -> None:
        super().__init__()
        self.lm = lm
        self.attention = attention
        if attention == "flex":
            from trainer.attention import use_packed_attention

            use_packed_attention(causal_lm(lm))

    def forward(self, batch: PackedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return packed_logps(self.lm, batch, self.attention)


@torch.no_grad()
def naive_logps(model: Any, examples: list[Example]) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference computation: one full forward per ``prompt + completion``, log-softmax over every position,
    completion tokens gathered. Same ordering as ``packed_logps``."""
    k = len(examples[0].completions)
    sums, counts = [], []
    for j in range(k):
        for ex in examples:
            ids = torch.tensor([ex.prompt_ids + ex.completions[j]])
            logits = model(input_ids=ids).logits[0, :-1].float()
            logps = logits.log_softmax(-1).gather(1, ids[0, 1:, None]).squeeze(1)
            n = len(ex.completions[j])
            sums.append(logps[-n:].sum())
            counts.append(float(n))
    return torch.stack(sums), torch.tensor(counts)
