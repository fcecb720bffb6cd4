"""What a GPU user sizes a run by (FLOPs, MFU, memory in the summary), and each fast path against its naive
reference on the CPU (fp32, within 1e-5)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from rich.console import Console

from prefloop.jsonl import read_jsonl
from trainer.config import TrainConfig
from trainer.dpo import train
from trainer.metrics import peak_bf16_flops, train_flops_per_token


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFLOOP_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def pairs_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    rows = [{"id": f"p{i}", "prompt": f"Reply to message {i} about the weather.\n",
             "chosen": f"Thank you for message {i}; it is sunny today." + " Kind regards." * (i % 3),
             "rejected": f"Message {i}? Whatever, look outside." + " Go away." * (i % 2)} for i in range(24)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_flops_per_token_counts_linear_layers_and_attention(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    c = model.config
    kv = c.num_key_value_heads * (c.hidden_size // c.num_attention_heads)
    per_layer = 2 * c.hidden_size * c.hidden_size + 2 * c.hidden_size * kv + 3 * c.hidden_size * c.intermediate_size
    linear = c.num_hidden_layers * per_layer + c.vocab_size * c.hidden_size  # the LM head counts, embeddings not
    attention = 6 * c.num_hidden_layers * c.hidden_size * 50.0
    assert train_flops_per_token(model, 50.0, frozen_base=False) == 6 * linear + attention
    assert train_flops_per_token(model, 50.0, frozen_base=True) == 4 * linear + attention
    assert peak_bf16_flops(torch.device("cpu")) is None  # no data-sheet peak for a CPU: no MFU is made up


def test_run_reports_flops_memory_and_no_guessed_mfu(tiny_model_dir: Path, pairs_path: Path,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "run"
    console = Console(file=io.StringIO(), width=300)
    cfg = TrainConfig(model=str(tiny_model_dir), data=str(pairs_path), output_dir=str(out), batch_size=4,
                      max_length=64, max_steps=2, live=False, rpo_alpha=0.0, schedule="constant")
    result = train(cfg, console)
    summary = json.loads((out / "train_summary.json").read_text())
    rows = [r for r in read_jsonl(out / "metrics.jsonl") if r["split"] == "train"]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    mean_len = result.train_tokens / (2 * 4 * 2)  # 2 steps of 4 pairs, 2 sequences each
    assert rows[-1]["tokens"] == result.train_tokens
    assert summary["flops_per_token"] == pytest.approx(train_flops_per_token(model, mean_len, frozen_base=False))
    assert summary["mfu"] is None and "peak_gpu_mib" not in summary  # a CPU run: no GPU figures invented
    assert summary["peak_rss_mib"] > 50  # torch alone holds more than this
    assert "peak RSS" in console.file.getvalue()


def test_chunked_lm_head_matches_the_whole_head_values_and_gradients(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    from trainer.logps import chunked_token_logps, token_logps

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    hidden = torch.randn(23, model.config.hidden_size, requires_grad=True)
    targets = torch.randint(0, model.config.vocab_size, (23,))
    results = []
    for rows in (None, 5):  # one chunk (the reference), then 5 chunks recomputed in backward
        model.zero_grad()
        hidden.grad = None
        out = token_logps(model, hidden, targets) if rows is None else chunked_token_logps(model, hidden, targets,
                                                                                            rows)
        (out * torch.linspace(0.5, 2.0, 23)).sum().backward()
        results.append((out.detach(), hidden.grad.clone(), model.lm_head.weight.grad.clone()))
    for whole, chunked in zip(*results):
        torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-5)


def test_max_tokens_per_batch_pieces_give_the_same_steps(tiny_model_dir: Path, pairs_path: Path,
                                                         tmp_path: Path) -> None:
    """A micro-batch run in token-capped pieces is the same step: losses, metrics and weights as one forward."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.data import TrainItem
    from trainer.packing import split_by_tokens
    from trainer.tokenize import tokenize_records

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    items = [TrainItem(r["id"], r["prompt"], [r["chosen"], r["rejected"]]) for r in read_jsonl(pairs_path)]
    examples, _ = tokenize_records(tok, items, prompt_format="auto", max_length=64, max_prompt_length=None)
    rows = list(range(8))
    cap = 2 * max(examples[i].packed_length() for i in rows)
    pieces = split_by_tokens(examples, rows, cap)
    assert sorted(i for p in pieces for i in p) == rows and len(pieces) > 1
    assert all(len(p) * max(examples[i].packed_length() for i in p) <= cap for p in pieces)
    assert split_by_tokens(examples, rows, 1) == [[i] for i in sorted(rows, key=lambda i: -examples[i].packed_length())]

    runs = {}
    for name, cap in (("whole", 0), ("pieces", cap)):
        cfg = TrainConfig(model=str(tiny_model_dir), data=str(pairs_path), output_dir=str(tmp_path / name),
                          batch_size=8, max_length=64, max_steps=3, lr=1e-3, live=False, schedule="constant",
                          max_tokens_per_batch=cap)
        result = train(cfg, Console(file=io.StringIO()))
        runs[name] = ([r for r in read_jsonl(result.metrics_path) if r["split"] == "train"],
                      AutoModelForCausalLM.from_pretrained(result.final_model_dir).state_dict())
    (whole_rows, whole_w), (piece_rows, piece_w) = runs["whole"], runs["pieces"]
    for a, b in zip(whole_rows, piece_rows):
        for key in ("loss", "rewards/chosen", "rewards/margins", "logps/chosen", "nll", "grad_norm"):
            assert b[key] == pytest.approx(a[key], abs=1e-5, rel=1e-5), key
        assert b["tokens"] == a["tokens"]
    for k in whole_w:
        torch.testing.assert_close(piece_w[k], whole_w[k], rtol=0, atol=1e-5)


def test_rows_padded_to_a_multiple_score_the_same(tiny_model_dir: Path, pairs_path: Path) -> None:
    """Padding rows up to a multiple of 64 (what a GPU run does) changes no log-prob and no gradient."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.data import TrainItem
    from trainer.logps import packed_logps
    from trainer.packing import pack
    from trainer.tokenize import tokenize_records

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    items = [TrainItem(r["id"], r["prompt"], [r["chosen"], r["rejected"]]) for r in read_jsonl(pairs_path)[:6]]
    examples, _ = tokenize_records(tok, items, prompt_format="auto", max_length=64, max_prompt_length=None)
    got = []
    for multiple in (1, 64):
        batch = pack(examples, tok.pad_token_id, multiple_of=multiple)
        assert batch.input_ids.shape[1] % multiple == 0
        model.zero_grad()
        sums, counts = packed_logps(model, batch)
        sums.sum().backward()
        got.append((sums.detach(), counts, model.model.layers[0].self_attn.q_proj.weight.grad.clone()))
    assert got[0][1].tolist() == got[1][1].tolist()
    for a, b in zip(got[0][::2], got[1][::2]):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5)


@pytest.mark.parametrize("multiple", [1, 64])
def test_completions_scored_without_gradient_match_the_one_pass(tiny_model_dir: Path, pairs_path: Path,
                                                                multiple: int) -> None:
    """``no_grad_from=1`` (KTO's mismatched answers): the first completions in a forward with gradient, the others
    after it without, on the prompt's cached keys and values. Same log-probs as the one packed forward, and the
    same gradient from the first completions (the others carry none), rows of different lengths and padding
    included."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.data import TrainItem
    from trainer.logps import packed_logps
    from trainer.packing import pack
    from trainer.tokenize import tokenize_records

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    items = [TrainItem(r["id"], r["prompt"], [r["chosen"], r["rejected"]]) for r in read_jsonl(pairs_path)[:7]]
    examples, _ = tokenize_records(tok, items, prompt_format="auto", max_length=64, max_prompt_length=None)
    batch = pack(examples, tok.pad_token_id, multiple_of=multiple)
    got = []
    for split in (None, 1):
        model.zero_grad(set_to_none=True)
        sums, counts = packed_logps(model, batch, no_grad_from=split)
        (sums[:7] * torch.linspace(-1, 1, 7)).sum().backward()
        got.append((sums.detach(), counts, {n: p.grad.clone() for n, p in model.named_parameters()}))
    (one_s, one_n, one_g), (split_s, split_n, split_g) = got
    assert split_n.tolist() == one_n.tolist()
    torch.testing.assert_close(split_s, one_s, rtol=0, atol=1e-4)       # sums of ~20 log-probs
    torch.testing.assert_close(split_s / split_n, one_s / one_n, rtol=0, atol=1e-5)
    for name, g in one_g.items():
        torch.testing.assert_close(split_g[name], g, rtol=0, atol=1e-5, msg=name)


def test_flex_block_mask_scores_as_the_dense_mask(tiny_model_dir: Path, pairs_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The flex-attention block mask (a GPU run's default) gives the dense 4-D mask's log-probs and gradients, rows
    of different prompt and completion lengths and padding included; the model still scores plain rows as before.
    PyTorch refuses flex attention's backward on the CPU (its compiled kernels have none); its eager math path
    does differentiate, so the test lifts that guard to compare gradients here (a GPU compares the compiled ones:
    bench/gpu_bench.py attention)."""
    import torch.nn.attention.flex_attention as flex
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.attention import IMPLEMENTATION, block_mask, segment_mask_mod
    from trainer.data import TrainItem
    from trainer.logps import PackedLM, naive_logps
    from trainer.packing import pack, segment_mask
    from trainer.tokenize import tokenize_records

    monkeypatch.setattr(flex, "_validate_device", lambda *tensors: None)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    items = [TrainItem(r["id"], r["prompt"], [r["chosen"], r["rejected"]]) for r in read_jsonl(pairs_path)[:6]]
    examples, _ = tokenize_records(tok, items, prompt_format="auto", max_length=64, max_prompt_length=None)
    batch = pack(examples, tok.pad_token_id, multiple_of=64)  # padding in every row
    # the mask_mod is the dense mask's rule, element by element
    rows, length = batch.segment.shape
    b, q, kv = torch.meshgrid(torch.arange(rows), torch.arange(length), torch.arange(length), indexing="ij")
    assert torch.equal(segment_mask_mod(batch.segment)(b, 0, q, kv), segment_mask(batch.segment)[:, 0])
    assert block_mask(batch.segment).shape == (rows, 1, length, length)
    got = {}
    for kind in ("dense", "flex"):
        model.zero_grad(set_to_none=True)
        sums, counts = PackedLM(model, kind)(batch)
        (sums * torch.linspace(-1, 1, len(sums))).sum().backward()
        got[kind] = (sums.detach() / counts, counts, {n: p.grad.clone() for n, p in model.named_parameters()})
    assert model.config._attn_implementation == IMPLEMENTATION
    (dense_lp, dense_n, dense_g), (flex_lp, flex_n, flex_g) = got["dense"], got["flex"]
    assert flex_n.tolist() == dense_n.tolist()
    torch.testing.assert_close(flex_lp, dense_lp, rtol=0, atol=1e-5)  # per token (sums ~ 200)
    for name, g in dense_g.items():
        torch.testing.assert_close(flex_g[name], g, rtol=0, atol=1e-5, msg=name)
    with torch.no_grad():  # plain rows after the switch: SDPA with its causal mask, as before
        naive = naive_logps(model, examples)
    torch.testing.assert_close(naive[0] / naive[1], dense_lp, rtol=0, atol=1e-5)


def test_flex_attention_on_the_cpu_is_refused_before_any_work(pairs_path: Path, tmp_path: Path) -> None:
    from trainer.data import TrainError

    cfg = TrainConfig(model="no-such-model", data=str(pairs_path), output_dir=str(tmp_path / "run"), device="cpu",
                      attention="flex", live=False)
    with pytest.raises(TrainError, match="train.attention: flex cannot train on cpu"):
        train(cfg, Console(file=io.StringIO()))
    assert TrainConfig(attention="auto").attention == "auto"


def test_reference_pass_runs_in_token_capped_pieces(tiny_model_dir: Path, pairs_path: Path, tmp_path: Path) -> None:
    """max_tokens_per_batch bounds every forward of a run, the reference pass's too (it packs 16+ rows a batch),
    and the pieces give the same reference log-probs as whole batches."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.data import TrainItem
    from trainer.logps import PackedLM
    from trainer.refcache import compute_ref_logps
    from trainer.tokenize import tokenize_records

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    items = [TrainItem(r["id"], r["prompt"], [r["chosen"], r["rejected"]]) for r in read_jsonl(pairs_path)]
    examples, _ = tokenize_records(tok, items, prompt_format="auto", max_length=64, max_prompt_length=None)
    cap = 3 * max(ex.packed_length() for ex in examples)
    forwards: list[int] = []
    model.model.register_forward_pre_hook(lambda m, a, kw: forwards.append(kw["input_ids"].numel()), with_kwargs=True)
    cfg = TrainConfig(model=str(tiny_model_dir), data=str(pairs_path), output_dir=str(tmp_path / "run"),
                      batch_size=8, max_length=64, max_steps=2, live=False, max_tokens_per_batch=cap)
    train(cfg, Console(file=io.StringIO()), model=model, tokenizer=tok)
    assert len(forwards) > 2 * 3 and max(forwards) <= cap, (cap, forwards)

    whole, _ = compute_ref_logps(PackedLM(model), examples, tok.pad_token_id, batch_size=16, dtype="fp32",
                                 device=torch.device("cpu"))
    pieces, _ = compute_ref_logps(PackedLM(model), examples, tok.pad_token_id, batch_size=16, dtype="fp32",
                                  device=torch.device("cpu"), max_tokens=cap, multiple_of=64)
    assert whole.counts == pieces.counts
    for rid, sums in whole.sums.items():
        assert pieces.sums[rid] == pytest.approx(sums, abs=1e-4, rel=1e-6)


@pytest.mark.parametrize("objective", ["simpo", "kto"])
def test_a_cpu_runs_micro_batches_in_pieces_by_default(tiny_model_dir: Path, pairs_path: Path, tmp_path: Path,
                                                       objective: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU no forward of the default run packs more than CPU_PIECE_TOKENS (the same gradients, a piece's
    activations), where max_tokens_per_batch = 0 packs the whole micro-batch at once; KTO's loss reads the whole
    micro-batch (z0), so its default stays one forward."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.config import CPU_PIECE_TOKENS

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    widest = {}
    for cap in (None, 0):
        monkeypatch.setenv("PREFLOOP_CACHE", str(tmp_path / f"cache-{cap}"))  # both runs make the reference pass
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        forwards: list[int] = []
        model.model.register_forward_pre_hook(lambda m, a, kw: forwards.append(kw["input_ids"].numel()),
                                              with_kwargs=True)
        cfg = TrainConfig(model=str(tiny_model_dir), data=str(pairs_path), output_dir=str(tmp_path / f"{cap}"),
                          batch_size=8, max_length=128, max_steps=2, live=False, objective=objective,
                          rpo_alpha=0.0, **({} if cap is None else {"max_tokens_per_batch": cap}))
        train(cfg, Console(file=io.StringIO()), model=model, tokenizer=tok)
        widest[cap] = max(forwards)
    assert widest[0] > CPU_PIECE_TOKENS, widest  # the batch is wide enough to be cut
    if objective == "kto":
        assert widest[None] == widest[0]
    else:
        assert widest[None] <= CPU_PIECE_TOKENS, widest


def test_adamw_is_fused_and_steps_as_the_per_tensor_loop(tiny_model_dir: Path) -> None:
    """The optimizer takes the fused AdamW kernel on the CPU too (torch would step CPU weights one tensor at a time),
    and its steps are the per-tensor reference's, weight decay and its exemption for norms included."""
    from transformers import AutoModelForCausalLM

    from trainer.optim import make_optimizer

    models = [AutoModelForCausalLM.from_pretrained(tiny_model_dir) for _ in range(2)]
    fast = make_optimizer(models[0], 1e-3, 0.1)
    assert fast.defaults["fused"] is True
    slow = make_optimizer(models[1], 1e-3, 0.1)
    for group in slow.param_groups:
        group["fused"], group["foreach"] = False, False
    torch.manual_seed(0)
    for _ in range(3):
        grads = [torch.randn_like(p) for p in models[0].parameters()]
        for model, opt in zip(models, (fast, slow)):
            for p, g in zip(model.parameters(), grads):
                p.grad = g.clone()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
