"""Tokenisation (formats, EOS, boundary, truncation), packed batches and the fast log-prob path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainer.logps import naive_logps, packed_logps
from trainer.packing import epoch_batches, pack
from trainer.data import TrainItem
from trainer.tokenize import Example, TokenizeReport, render_prompt, tokenize_example, tokenize_records


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


def one(tok, prompt, completions, max_length=256, max_prompt_length=None):
    report = TokenizeReport()
    ex = tokenize_example(tok, "x", prompt, completions, max_length=max_length,
                          max_prompt_length=max_prompt_length, report=report)
    return ex, report


def test_text_prompt_masked_and_eos_appended(tok) -> None:
    ex, report = one(tok, "The weather today is\n", ["sunny and warm.", "bad."])
    assert tok.decode(ex.prompt_ids) == "The weather today is\n"
    assert tok.decode(ex.completions[0]) == "sunny and warm." + tok.eos_token
    assert ex.completions[0][-1] == tok.eos_token_id and ex.completions[1][-1] == tok.eos_token_id
    assert report.boundary_mismatches == 0
    # the prompt is not scored: targets of a packed batch are exactly the completion tokens
    batch = pack([ex], tok.pad_token_id)
    assert batch.targets.tolist() == ex.completions[0] + ex.completions[1]


def test_boundary_follows_trl_common_prefix(tok) -> None:
    """A prompt ending in a space merges with the answer's first word: the completion starts where the
    tokenisations diverge and the mismatch is reported once."""
    prompt = "Please answer the question "
    ex, report = one(tok, prompt, ["yes indeed", "no"])
    full = tok(prompt + "yes indeed" + tok.eos_token)["input_ids"]
    assert ex.prompt_ids + ex.completions[0] == full  # the sequence trained on is the real tokenisation
    assert len(ex.prompt_ids) < len(tok(prompt)["input_ids"])
    assert report.boundary_mismatches == 1 and report.boundary_example
    assert any("not a prefix" in line for line in report.lines())


def test_chat_prompt_uses_template(tok) -> None:
    msgs = [{"role": "user", "content": "Say hi."}]
    ex, _ = one(tok, msgs, ["Hello!", "No."])
    assert tok.decode(ex.prompt_ids) == "<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n"
    assert tok.decode(ex.completions[0]).startswith("Hello!<|im_end|>")


def test_formats_auto_and_forced(tok) -> None:
    meta = {"instruction": "Add 2 and 2.", "input": "", "prompt_format": "alpaca"}
    alpaca = "Below is an instruction that describes a task.\n\n### Instruction:\nAdd 2 and 2.\n\n### Response:\n"
    assert render_prompt(alpaca, meta, "alpaca", "alpaca") == alpaca
    assert render_prompt(alpaca, meta, "alpaca", "chat") == [{"role": "user", "content": "Add 2 and 2."}]
    assert render_prompt("Hi", {}, "text", "alpaca").endswith("### Instruction:\nHi\n\n### Response:\n")
    items = [TrainItem("a", "Hi there\n", ["yo", "no"], "text"),
             TrainItem("b", [{"role": "user", "content": "Hey"}], ["yo", "no"], "chat")]
    _, report = tokenize_records(tok, items, prompt_format="auto", max_length=64, max_prompt_length=None)
    assert dict(report.formats) == {"text": 1, "chat": 1}
    _, forced = tokenize_records(tok, items, prompt_format="chat", max_length=64, max_prompt_length=None)
    assert dict(forced.formats) == {"chat": 2}
    assert "prompt format" in forced.lines()[0]


def test_alpaca_rows_train_as_one_chat_turn_for_a_model_with_a_chat_template(tok) -> None:
    from transformers import AutoTokenizer

    meta = {"instruction": "Add 2 and 2.", "input": "", "prompt_format": "alpaca"}
    alpaca = "Below is an instruction that describes a task.\n\n### Instruction:\nAdd 2 and 2.\n\n### Response:\n"
    items = [TrainItem("a", alpaca, ["4.", "5."], "alpaca", meta)]
    examples, report = tokenize_records(tok, items, prompt_format="auto", max_length=64, max_prompt_length=None)
    assert dict(report.formats) == {"chat": 1}
    assert tok.decode(examples[0].prompt_ids) == "<|im_start|>user\nAdd 2 and 2.<|im_end|>\n<|im_start|>assistant\n"
    _, raw = tokenize_records(tok, items, prompt_format="alpaca", max_length=64, max_prompt_length=None)
    assert dict(raw.formats) == {"alpaca": 1}                     # forcing the recipe's raw text still works
    plain = AutoTokenizer.from_pretrained(tok.name_or_path)
    plain.chat_template = None                                    # a model without a chat template keeps Alpaca
    _, kept = tokenize_records(plain, items, prompt_format="auto", max_length=64, max_prompt_length=None)
    assert dict(kept.formats) == {"alpaca": 1}


def test_truncation_rule(tok) -> None:
    long_prompt = "word " * 80
    ex, report = one(tok, long_prompt, ["a", "b"], max_length=32)
    assert ex is None and report.skipped["prompt longer than the limit"] == 1
    ex, report = one(tok, "Short prompt\n", ["many words " * 40, "b"], max_length=32)
    assert report.truncated == 1
    assert len(ex.prompt_ids) + len(ex.completions[0]) == 32
    assert len(ex.completions[1]) < 32 - len(ex.prompt_ids)  # the short side is untouched
    ex, report = one(tok, "Short prompt\n", ["a", "b"], max_length=32, max_prompt_length=2)
    assert ex is None and report.skipped["prompt longer than the limit"] == 1


def test_packed_mask_keeps_completions_apart(tok) -> None:
    ex = Example("x", [5, 6, 7], [[8, 9], [10, 11, 12]])
    short = Example("y", [5], [[8], [9]])
    b = pack([ex, short], tok.pad_token_id)
    m = b.attention_mask[0, 0]
    # rows: prompt 0-2, chosen 3-4, rejected 5-7
    assert m[5, :3].all() and not m[5, 3:5].any() and m[5, 5]        # rejected sees prompt + itself, not chosen
    assert m[4, :5].all() and not m[4, 5:].any()                       # chosen is causal over prompt + chosen
    assert b.position_ids[0].tolist() == [0, 1, 2, 3, 4, 3, 4, 5]       # both completions start at position 3
    # first rejected token is predicted from the last prompt token (flat index 2), not from the chosen end
    first_rej = b.targets.tolist().index(10)
    assert b.src[first_rej].item() == 2
    assert b.counted_tokens == (3 + 2) + (3 + 3) + (1 + 1) + (1 + 1)
    assert b.seq.tolist() == [0, 0, 2, 2, 2, 1, 3]


def test_fast_path_matches_naive_full_forward(tok, model) -> None:
    items = [TrainItem(str(i), f"Question number {i}: what is {i} plus {i}?\n",
                       [f"It is {2 * i}." * (1 + i % 3), f"No idea, maybe {i}."]) for i in range(6)]
    examples, _ = tokenize_records(tok, items, prompt_format="auto", max_length=128, max_prompt_length=None)
    with torch.no_grad():
        fast, counts = packed_logps(model, pack(examples, tok.pad_token_id))
    slow, slow_counts = naive_logps(model, examples)
    assert counts.tolist() == slow_counts.tolist()
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-5)


def test_fast_path_gradient_matches_naive(tok, model) -> None:
    items = [TrainItem(str(i), f"Tell me about item {i}.\n", [f"Item {i} is fine.", "Nope."]) for i in range(3)]
    examples, _ = tokenize_records(tok, items, prompt_format="auto", max_length=64, max_prompt_length=None)
    w = model.get_output_embeddings().weight
    model.zero_grad()
    packed_logps(model, pack(examples, tok.pad_token_id))[0].sum().backward()
    fast_grad = w.grad.clone()
    model.zero_grad()
    total = 0
    for j in range(2):
        for ex in examples:
            ids = torch.tensor([ex.prompt_ids + ex.completions[j]])
            lp = model(input_ids=ids).logits[0, :-1].log_softmax(-1).gather(1, ids[0, 1:, None])
            total = total + lp[-len(ex.completions[j]):].sum()
    total.backward()
    torch.testing.assert_close(fast_grad, w.grad, atol=1e-4, rtol=1e-4)
    model.zero_grad()


def test_epoch_batches_cover_everything_once_and_repeat() -> None:
    examples = [Example(str(i), [1] * (i % 7 + 1), [[2] * (i % 5 + 1), [3]]) for i in range(50)]
    a = epoch_batches(examples, 8, seed=1, epoch=0)
    assert sorted(i for b in a for i in b) == list(range(50))
    assert [len(b) for b in a] == [8] * 6 + [2]  # the short batch comes last
    lengths = [examples[i].packed_length() for i in a[0]]
    assert max(lengths) - min(lengths) <= 3  # grouped: similar lengths share a batch
    assert a == epoch_batches(examples, 8, seed=1, epoch=0)
    assert a != epoch_batches(examples, 8, seed=1, epoch=1)
    plain = epoch_batches(examples, 8, seed=1, epoch=0, group_by_length=False)
    assert sorted(i for b in plain for i in b) == list(range(50))
