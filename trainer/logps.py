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

from prefloop.models import kv_cache_name
from trainer.packing import PackedBatch, segment_mask
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


def packed_logps(model: Any, batch: PackedBatch, attention: str = "dense",
                 no_grad_from: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence sums of completion token log-probs and token counts, each of shape ``(n_seqs,)``.

    Sequences are ordered completion-major: all first completions (chosen), then all second ones (rejected).
    ``attention``: ``dense`` (the 4-D mask) or ``flex`` (a block mask; the model must be routed through
    ``trainer.attention.use_packed_attention`` first, as ``PackedLM`` does). ``no_grad_from``: completions from
    this index on are scored without gradient (KTO's mismatched answers, whose log-ratio z₀ is detached), after the
    forward with gradient instead of inside it (``split_logps``); their sums carry no gradient either way.
    """
    model = causal_lm(model)
    if (no_grad_from is not None and no_grad_from < batch.n_completions and torch.is_grad_enabled()
            and not checkpointed(model)):  # checkpointed layers keep no cache
        return split_logps(model, batch, attention, no_grad_from)
    out = model.base_model(input_ids=batch.input_ids, attention_mask=_mask(batch.segment, attention),
                           position_ids=batch.position_ids, use_cache=False)
    hidden = out.last_hidden_state
    picked = hidden.reshape(-1, hidden.size(-1)).index_select(0, batch.src)
    logps = chunked_token_logps(model, picked, batch.targets)
    return _sums(batch, logps)


def checkpointed(model: Any) -> bool:
    """Whether activation checkpointing is on (transformers 5 renamed ``is_gradient_checkpointing``)."""
    on = getattr(model, "is_activation_checkpointing", None)
    return bool(on if on is not None else getattr(model, "is_gradient_checkpointing", False))


def _mask(segment: torch.Tensor, attention: str) -> Any:
    if attention == "flex":
        from trainer.attention import block_mask

        return block_mask(segment)
    return segment_mask(segment)


def _sums(batch: PackedBatch, logps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    sums = logps.new_zeros(batch.n_seqs).index_add(0, batch.seq, logps)
    counts = torch.bincount(batch.seq, minlength=batch.n_seqs).to(sums.dtype)
    return sums, counts


def split_logps(model: Any, batch: PackedBatch, attention: str, g: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``packed_logps`` with completions ``g..`` scored without gradient: the same numbers, less work.

    In one packed forward the later completions would go through the trained forward and its backward (three
    passes) though nothing is learnt from them. Here the rows are cut after completion ``g``: ``[prompt |
    completions < g]`` runs with gradient and keeps its keys and values (the cache), then the later completions
    run under ``no_grad`` on that cache, each seeing the prompt's keys and its own (the same rule as the packed
    mask, ``packing.segment_mask``), with the same position ids. A completion's first token is predicted by the
    prompt's last hidden state, taken from the first pass, detached."""
    rows, length = batch.input_ids.shape
    seg = batch.segment
    late = seg > g                                          # tokens of the completions scored without gradient
    first = seg.masked_fill(late, -1)                       # the first pass: prompt and completions 1..g
    length1 = int((first >= 0).sum(1).max())                # they are each row's first tokens
    out = model.base_model(input_ids=batch.input_ids[:, :length1], attention_mask=_mask(first[:, :length1], attention),
                           position_ids=batch.position_ids[:, :length1], use_cache=True)
    hidden1 = out.last_hidden_state
    width = hidden1.size(-1)
    # each row's later completions, moved to the start of a (rows, length2) block
    start = torch.where(late.any(1), late.float().argmax(1), torch.full((rows,), length, device=seg.device))
    length2 = max(1, int(late.sum(1).max()))
    cols = start.unsqueeze(1) + torch.arange(length2, device=seg.device)
    inside = cols < length
    cols = cols.clamp(max=length - 1)
    seg2 = torch.where(inside, seg.gather(1, cols), torch.full_like(cols, -1))
    seg2 = seg2.masked_fill(seg2 <= g, -1)
    ids2 = batch.input_ids.gather(1, cols)
    pos2 = batch.position_ids.gather(1, cols)
    # mask: the cache's prompt positions, then the packed rule within the block (no segment 0 is left in it, so
    # each token sees its own completion, causally; padding queries see themselves)
    cached = (first[:, :length1] == 0).view(rows, 1, 1, length1).expand(rows, 1, length2, length1)
    mask2 = torch.cat([cached, segment_mask(seg2)], dim=3)
    # targets: flat positions in the packed rows, mapped to the first pass (rows x length1) or the second
    row, col = batch.src // length, batch.src % length
    grad = batch.seq < g * rows
    in_second = col >= start[row]
    with torch.no_grad():
        kv = kv_cache_name(model.base_model)
        hidden2 = model.base_model(input_ids=ids2, attention_mask=mask2, position_ids=pos2,
                                   use_cache=True, **{kv: getattr(out, kv)}).last_hidden_state
        both = torch.cat([hidden1.detach().reshape(-1, width), hidden2.reshape(-1, width)])
        where = torch.where(in_second, rows * length1 + row * length2 + (col - start[row]), row * length1 + col)
        late_logps = chunked_token_logps(model, both.index_select(0, where[~grad]), batch.targets[~grad])
    picked = hidden1.reshape(-1, width).index_select(0, (row * length1 + col)[grad])
    logps = chunked_token_logps(model, picked, batch.targets[grad])
    full = torch.empty(batch.targets.numel(), dtype=logps.dtype, device=logps.device)
    full = full.masked_scatter(grad, logps).masked_scatter(~grad, late_logps.to(logps.dtype))
    return _sums(batch, full)


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

    def forward(self, batch: PackedBatch, no_grad_from: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return packed_logps(self.lm, batch, self.attention, no_grad_from)


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
