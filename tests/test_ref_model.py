"""``ref_model``: DPO's reference is a named model, not the starting one (rounds anchored to the SFT model).

A tiny policy folder and a different tiny reference folder (same tokenizer, other weights): the cached reference
log-probs are the reference folder's, the cache is keyed by its digest, and the in-memory path (LoRA included,
whose adapter-off shortcut would give the policy's own base) uses it too.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch
from rich.console import Console

from conftest import seed_texts
from trainer.config import TrainConfig
from trainer.data import TrainError, TrainItem
from trainer.dpo import train
from trainer.logps import PackedLM, naive_logps
from trainer.refcache import cache_path, default_cache_root, load_or_compute, model_digest
from trainer.tokenize import tokenize_records


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFLOOP_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def ref_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same shape and tokenizer as ``tiny_model_dir``, other weights (seed 1)."""
    from prefloop.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("ref") / "model", seed_texts(), seed=1)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    rows = [{"id": f"p{i}", "prompt": f"Reply to message {i} about the weather.\n",
             "chosen": f"Thank you for message {i}; it is sunny today.",
             "rejected": f"Message {i}? Whatever, look outside."} for i in range(8)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cfg_for(model: Path, data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(model=str(model), data=str(data), output_dir=str(out), batch_size=4, max_length=64, lr=1e-3,
                schedule="constant", max_steps=2, live=False, seed=3, rpo_alpha=0.0, shuffle=False)
    base.update(kw)
    return TrainConfig(**base)


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def first_loss(result) -> float:
    return [json.loads(line) for line in result.metrics_path.read_text().splitlines()
            if json.loads(line).get("split") == "train"][0]["loss"]


def test_cached_reference_is_the_named_model(tiny_model_dir: Path, ref_dir: Path, pairs: Path,
                                             tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    res = train(cfg_for(tiny_model_dir, pairs, tmp_path / "out", ref_model=str(ref_dir)), quiet())
    assert res.status == "complete"
    # policy ≠ reference at step 0, so the margin is not 0 and the loss is not ln 2 (it is with the policy as its own)
    assert first_loss(res) != pytest.approx(math.log(2), abs=1e-4)

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ref = AutoModelForCausalLM.from_pretrained(ref_dir)
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    items = [TrainItem(r["id"], r["prompt"], [r["chosen"], r["rejected"]]) for r in rows]
    examples, _ = tokenize_records(tok, items, prompt_format="auto", max_length=64, max_prompt_length=None)

    root = default_cache_root()
    # keyed by the reference model's digest; nothing was cached under the policy's
    assert cache_path(root, model_digest(ref), "fp32").exists()
    assert not cache_path(root, model_digest(policy), "fp32").exists()
    cached, computed, _ = load_or_compute(PackedLM(ref), examples, tok.pad_token_id, batch_size=4, dtype="fp32",
                                          model_hash=model_digest(ref), device=torch.device("cpu"))
    assert computed == 0  # every example was cached by the run
    sums, _ = cached.lookup([e.id for e in examples])
    torch.testing.assert_close(sums, naive_logps(ref, examples)[0], atol=1e-4, rtol=1e-5)
    assert not torch.allclose(sums, naive_logps(policy, examples)[0], atol=1e-2)


@pytest.mark.parametrize("lora_r", [0, 4])
def test_in_memory_reference_is_the_named_model(tiny_model_dir: Path, ref_dir: Path, pairs: Path, tmp_path: Path,
                                                lora_r: int) -> None:
    """reference = "model" holds the named model (with LoRA, not the adapter-off base): the same losses as the
    cached path."""
    kw = dict(ref_model=str(ref_dir), lora_r=lora_r)
    a = train(cfg_for(tiny_model_dir, pairs, tmp_path / "a", **kw), quiet())
    b = train(cfg_for(tiny_model_dir, pairs, tmp_path / "b", reference="model", **kw), quiet())
    la = [json.loads(x)["loss"] for x in a.metrics_path.read_text().splitlines() if '"train"' in x]
    lb = [json.loads(x)["loss"] for x in b.metrics_path.read_text().splitlines() if '"train"' in x]
    assert la[0] != pytest.approx(math.log(2), abs=1e-4)
    assert la == pytest.approx(lb, abs=1e-4)


def test_reference_with_another_vocabulary_is_refused(tiny_model_dir: Path, pairs: Path, tmp_path: Path) -> None:
    from prefloop.tiny import TinyShape, build_tiny_llama

    other = build_tiny_llama(tmp_path / "other", seed_texts(), TinyShape(vocab_size=300))
    with pytest.raises(TrainError, match="ref_model.*vocabulary"):
        train(cfg_for(tiny_model_dir, pairs, tmp_path / "out", ref_model=str(other)), quiet())
    with pytest.raises(TrainError, match="ref_model"):
        train(cfg_for(tiny_model_dir, pairs, tmp_path / "out2", ref_model=str(tmp_path / "missing")), quiet())
