"""Batches: one packed row per prompt, and the order batches are drawn in.

A row holds the prompt once followed by each of its completions: ``[prompt | chosen | rejected]``. A 4-D attention
mask (built on the device from each position's segment; on CUDA a flex-attention block mask of the same rule,
``trainer.attention``) lets every completion token see the prompt and the earlier tokens of its own completion
only, and position ids restart each completion right after the prompt, so each completion is computed exactly as if
it followed the prompt alone, while the prompt's forward (and backward) is done once instead of twice.

Only positions that predict a completion token are scored: ``src`` indexes the hidden state that predicts each
target token (the last prompt token predicts a completion's first token), so the LM head and log-softmax run on
completion positions only.

With several processes each packs its share of a micro-batch's rows; ``total_rows`` and ``total_tokens`` describe
the whole micro-batch, so a loss normalised by them adds up, over the processes, to the one-process loss.

Batches are drawn in a seeded random order; with ``group_by_length`` examples are first sorted by length inside
large random chunks so a batch needs little padding (the batch order stays random).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from trainer.tokenize import Example

MEGABATCH = 50  # batches per length-sorting chunk (TRL/HF use the same idea and size)


@dataclass
class PackedBatch:
    input_ids: torch.Tensor       # (rows, L)
    position_ids: torch.Tensor    # (rows, L)
    segment: torch.Tensor         # (rows, L): 0 prompt, k completion k, -1 padding (the mask is built from it)
    src: torch.Tensor             # (N,) flat index into rows*L of the hidden state that predicts each target
    targets: torch.Tensor         # (N,) target token ids
    seq: torch.Tensor             # (N,) sequence of each target: completion k of row i is k * rows + i
    n_rows: int
    n_completions: int
    counted_tokens: int           # prompt+completion tokens per sequence, the prompt counted per completion (TRL)
    ids: list[str]
    total_rows: int               # rows of the whole micro-batch (all processes' shares)
    total_tokens: tuple[int, ...]  # completion k's scored tokens over the whole micro-batch

    @property
    def attention_mask(self) -> torch.Tensor:
        """(rows, 1, L, L) bool, True = may attend; built where the batch is (``segment_mask``)."""
        return segment_mask(self.segment)

    @property
    def n_seqs(self) -> int:
        return self.n_rows * self.n_completions

    def to(self, device: torch.device | str) -> "PackedBatch":
        move = {name: getattr(self, name).to(device) for name in
                ("input_ids", "position_ids", "segment", "src", "targets", "seq")}
        return PackedBatch(**move, n_rows=self.n_rows, n_completions=self.n_completions,
                           counted_tokens=self.counted_tokens, ids=self.ids, total_rows=self.total_rows,
                           total_tokens=self.total_tokens)


def segment_mask(segment: torch.Tensor) -> torch.Tensor:
    """The 4-D attention mask of packed rows from their segments: causal, and a completion token sees the prompt and
    its own completion only. Built on the segments' device, so the host neither computes nor copies the L × L
    mask of every row (8 rows of 4k tokens: seconds of CPU time and 134 MB per micro-batch)."""
    length = segment.size(1)
    q = segment.unsqueeze(2)   # (rows, L, 1)
    kv = segment.unsqueeze(1)  # (rows, 1, L)
    idx = torch.arange(length, device=segment.device)
    causal = idx.unsqueeze(1) >= idx.unsqueeze(0)  # (L, L): key position <= query position
    mask = causal & ((kv == 0) | (kv == q)) & (kv >= 0)
    mask |= torch.eye(length, dtype=torch.bool, device=segment.device)  # padding queries see themselves (no NaN)
    return mask.unsqueeze(1)


def pack(examples: list[Example], pad_id: int, *, share_of: list[Example] | None = None,
         multiple_of: int = 1) -> PackedBatch:
    """Build one packed batch; every example must have the same number of completions. ``share_of``: the whole
    micro-batch these examples are one process's share of (default: they are all of it). ``multiple_of``: pad the
    row length up to a multiple of it, so that a GPU sees few distinct shapes (kernels, cuBLAS plans and
    allocator blocks are then reused from step to step; padding is masked and never scored)."""
    k = len(examples[0].completions)
    whole = examples if share_of is None else share_of
    length = max(ex.packed_length() for ex in examples)
    length = -(-length // multiple_of) * multiple_of
    rows = len(examples)
    input_ids = torch.full((rows, length), pad_id, dtype=torch.long)
    position_ids = torch.zeros((rows, length), dtype=torch.long)
    segment = torch.full((rows, length), -1, dtype=torch.long)  # 0 prompt, 1..k completions, -1 padding
    src: list[int] = []
    targets: list[int] = []
    seq: list[int] = []
    for i, ex in enumerate(examples):
        p = len(ex.prompt_ids)
        input_ids[i, :p] = torch.tensor(ex.prompt_ids)
        position_ids[i, :p] = torch.arange(p)
        segment[i, :p] = 0
        start = p
        for j, comp in enumerate(ex.completions):
            n = len(comp)
            input_ids[i, start:start + n] = torch.tensor(comp)
            position_ids[i, start:start + n] = torch.arange(p, p + n)
            segment[i, start:start + n] = j + 1
            base = i * length
            src.append(base + p - 1)
            src.extend(range(base + start, base + start + n - 1))  # t = 1..n-1 predicted at start + t - 1
            targets.extend(comp)
            seq.extend([j * rows + i] * n)
            start += n
    return PackedBatch(
        input_ids=input_ids, position_ids=position_ids, segment=segment,
        src=torch.tensor(src, dtype=torch.long), targets=torch.tensor(targets, dtype=torch.long),
        seq=torch.tensor(seq, dtype=torch.long), n_rows=rows, n_completions=k,
        counted_tokens=sum(ex.counted_tokens() for ex in examples), ids=[ex.id for ex in examples],
        total_rows=len(whole), total_tokens=tuple(sum(len(ex.completions[j]) for ex in whole) for j in range(k)),
    )


def epoch_batches(examples: list[Example], batch_size: int, *, seed: int, epoch: int, shuffle: bool = True,
                  group_by_length: bool = True) -> list[list[int]]:
    """Indices of each batch for one epoch; the same (seed, epoch) always gives the same batches."""
    n = len(examples)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=g).tolist() if shuffle else list(range(n))
    if not group_by_length:
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    chunk = batch_size * MEGABATCH
    batches: list[list[int]] = []
    for c in range(0, n, chunk):
        part = sorted(order[c:c + chunk], key=lambda i: -examples[i].packed_length())
        batches.extend(part[i:i + batch_size] for i in range(0, len(part), batch_size))
    if shuffle:
        perm = torch.randperm(len(batches), generator=g).tolist()
        batches = [batches[i] for i in perm]
    # a short batch (the end of the last chunk) goes last, as in a plain sequential split
    return [b for b in batches if len(b) == batch_size] + [b for b in batches if len(b) < batch_size]


def split_by_tokens(examples: list[Example], rows: list[int], max_tokens: int) -> list[list[int]]:
    """``rows`` (indices into ``examples``) in pieces whose packed size, pieces × their longest packed row, stays
    within ``max_tokens`` (a row longer than that is a piece alone); 0: one piece. Rows are taken longest first,
    so each piece needs little padding. Packed with ``share_of`` the whole micro-batch, the pieces' losses and
    gradients add up to the whole micro-batch's: the same step in memory that ``max_tokens`` bounds."""
    if not max_tokens:
        return [list(rows)]
    pieces: list[list[int]] = []
    for i in sorted(rows, key=lambda i: -examples[i].packed_length()):
        if pieces and (len(pieces[-1]) + 1) * examples[pieces[-1][0]].packed_length() <= max_tokens:
            pieces[-1].append(i)
        else:
            pieces.append([i])
    return pieces


def share_pieces(dist: Any, examples: list[Example], idx: list[int],
                 max_tokens: int) -> list[tuple[list[int], float]]:
    """This process's share of micro-batch ``idx`` (``dist``: a ``trainer.distributed.Dist``, or None for one
    process) in pieces of at most ``max_tokens`` packed tokens, each with its weight. Every process runs as many
    pieces (DDP broadcasts buffers and FSDP2 gathers the weights in each forward, both collectives): one with fewer
    adds weight-0 pieces of one row."""
    rows, weight = dist.share(idx) if dist is not None else (list(idx), 1.0)
    mine = [(piece, weight) for piece in split_by_tokens(examples, rows, max_tokens)]
    if max_tokens and dist is not None and dist.enabled:
        most = max(len(split_by_tokens(examples, list(idx[r::dist.world]) or list(idx[:1]), max_tokens))
                   for r in range(dist.world))
        mine += [(rows[:1], 0.0)] * (most - len(mine))
    return mine
