"""Objectives beyond DPO (SimPO, ORPO, KTO): TRL parity on a tiny model, their declarations, and the loop.

Parity: the same batch through our packed path and loss, and through TRL 1.16's own functions (log-probs from a
plain padded forward, TRL's loss code): loss and gradient agree to 1e-5 in fp32. Skipped only without trl.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from rich.console import Console

from prefloop.jsonl import read_jsonl
from trainer.config import TrainConfig
from trainer.data import TrainItem
from trainer.objectives import OBJECTIVES, settings_not_for, spec
from trainer.packing import pack
from trainer.tokenize import tokenize_records
from trainer.train import train


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFLOOP_CACHE", str(tmp_path / "cache"))


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def pair_rows(n: int = 12) -> list[dict]:
    return [{"id": f"p{i}", "prompt": f"Reply to message {i} about the weather.\n",
             "chosen": f"Thank you for message {i}; it is sunny today." + " Kind regards." * (i % 3),
             "rejected": f"Message {i}? Whatever, look outside." + " Go away." * (i % 2)} for i in range(n)]


@pytest.fixture(scope="module")
def pairs_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in pair_rows(16)))
    return path


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return model, tok


def examples_for(tok, rows: list[dict]) -> list:
    items = [TrainItem(r["id"], r["prompt"], [r["chosen"], r["rejected"]]) for r in rows]
    examples, _ = tokenize_records(tok, items, prompt_format="text", max_length=64, max_prompt_length=None)
    assert len(examples) == len(rows)
    return examples


def trl_logps(model, examples, k: int, *, average: bool) -> torch.Tensor:
    """Completion k's log-probs the TRL way: one right-padded forward, prompt labels -100, TRL's get_batch_logps."""
    from trl.experimental.cpo import CPOTrainer

    seqs = [ex.prompt_ids + ex.completions[k] for ex in examples]
    width = max(map(len, seqs))
    ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    labels = torch.tensor([[-100] * len(ex.prompt_ids) + ex.completions[k] + [-100] * (width - len(s))
                           for ex, s in zip(examples, seqs)])
    logits = model(input_ids=ids, attention_mask=mask).logits
    return CPOTrainer.get_batch_logps(logits, labels, average_log_prob=average), logits, labels


def grads_of(model, loss: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]


def assert_same(ours: tuple, theirs: tuple) -> None:
    (loss_a, grads_a), (loss_b, grads_b) = ours, theirs
    assert loss_a.item() == pytest.approx(loss_b.item(), abs=1e-5)
    assert len(grads_a) == len(grads_b)
    worst = max((a - b).abs().max().item() for a, b in zip(grads_a, grads_b))
    assert worst < 1e-5


def ours(objective_name: str, model, tok, examples, **cfg) -> tuple:
    from trainer.logps import packed_logps

    objective = spec(objective_name).build(TrainConfig(objective=objective_name, **cfg))
    batch = pack(examples, tok.pad_token_id)
    loss, metrics = objective.loss(lambda b: packed_logps(model, b), batch)
    return (loss, grads_of(model, loss)), metrics


def test_simpo_matches_trl_cpo_simpo(tiny) -> None:
    pytest.importorskip("trl")
    from trl.experimental.cpo import CPOTrainer

    model, tok = tiny
    examples = examples_for(tok, pair_rows(5))
    beta, gamma = 2.0, 0.7
    mine, metrics = ours("simpo", model, tok, examples, beta=beta, simpo_gamma=gamma)
    chosen, _, _ = trl_logps(model, examples, 0, average=True)
    rejected, _, _ = trl_logps(model, examples, 1, average=True)
    fake = SimpleNamespace(alpha=0.0, beta=beta, simpo_gamma=gamma, label_smoothing=0.0, loss_type="simpo",
                           accelerator=SimpleNamespace(device="cpu"))
    losses, r_w, r_l = CPOTrainer.cpo_loss(fake, chosen, rejected)
    loss = losses.mean()  # cpo_alpha = 0: pure SimPO
    assert_same(mine, (loss, grads_of(model, loss)))
    assert metrics["rewards/chosen"] == pytest.approx(r_w.mean().item(), abs=1e-5)
    assert metrics["rewards/margins"] == pytest.approx((r_w - r_l).mean().item(), abs=1e-5)


def test_orpo_matches_trl_odds_ratio_and_nll(tiny) -> None:
    """TRL's odds-ratio term exactly; the NLL is on the chosen answer's tokens (TRL 1.16's ORPOTrainer also counts
    the prompt's tokens in it; we keep SFT's response-only NLL, so the NLL here masks the prompt)."""
    pytest.importorskip("trl")
    from trl.experimental.orpo import ORPOTrainer

    model, tok = tiny
    examples = examples_for(tok, pair_rows(5))
    beta = 0.25
    mine, metrics = ours("orpo", model, tok, examples, beta=beta)
    chosen, logits, labels = trl_logps(model, examples, 0, average=True)
    rejected, _, _ = trl_logps(model, examples, 1, average=True)
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1))
    fake = SimpleNamespace(beta=beta, accelerator=SimpleNamespace(device="cpu"))
    losses, _, _, log_odds_ratio, log_odds_chosen = ORPOTrainer.odds_ratio_loss(fake, chosen, rejected)
    loss = nll - losses.mean()
    assert_same(mine, (loss, grads_of(model, loss)))
    assert metrics["nll_loss"] == pytest.approx(nll.item(), abs=1e-5)
    assert metrics["log_odds_ratio"] == pytest.approx(log_odds_ratio.item(), abs=1e-5)
    assert metrics["log_odds_chosen"] == pytest.approx(log_odds_chosen.item(), abs=1e-5)


def test_declarations_are_complete() -> None:
    fields = set(TrainConfig.__dataclass_fields__)
    for s in OBJECTIVES.values():
        assert set(s.settings) <= fields, s.name
    assert not spec("simpo").reference and not spec("orpo").reference and spec("dpo").reference
    # the sft command hides every other objective's settings; simpo's own stay visible to it
    assert {"beta", "loss_type", "reference", "simpo_gamma"} <= set(settings_not_for("sft"))
    assert "simpo_gamma" not in settings_not_for("simpo") and "loss_type" in settings_not_for("simpo")
    with pytest.raises(Exception, match="objective"):
        TrainConfig(objective="nope")


@pytest.mark.parametrize("name", ["simpo", "orpo"])
def test_reference_free_objectives_run_no_reference_forward(name: str, tiny_model_dir: Path, pairs_path: Path,
                                                             tmp_path: Path) -> None:
    """Count the decoder's forwards: one per micro-batch (DPO with an in-memory reference: two), and no cache."""
    from transformers import AutoModelForCausalLM

    counts = {}
    for objective in (name, "dpo"):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        calls = []
        model.get_input_embeddings().register_forward_hook(lambda *_: calls.append(1))
        cfg = TrainConfig(model=str(tiny_model_dir), data=str(pairs_path), output_dir=str(tmp_path / objective),
                          objective=objective, batch_size=4, max_length=64, lr=1e-3, max_steps=3, live=False,
                          reference="model")
        result = train(cfg, quiet(), model=model)
        assert result.complete
        counts[objective] = len(calls)
        rows = [r for r in read_jsonl(result.metrics_path) if r["split"] == "train"]
        assert len(rows) == 3 and all("rewards/accuracies" in r for r in rows)
    assert counts[name] == 3 and counts["dpo"] == 6
    assert not (tmp_path / "cache").exists()
    summary = json.loads((tmp_path / name / "train_summary.json").read_text())
    assert summary["objective"] == name


def test_simpo_learns_the_preference(tiny_model_dir: Path, pairs_path: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(model=str(tiny_model_dir), data=str(pairs_path), output_dir=str(tmp_path / "s"),
                      objective="simpo", beta=2.0, simpo_gamma=0.5, batch_size=4, max_length=64, lr=3e-3,
                      schedule="constant", max_steps=12, live=False)
    result = train(cfg, quiet())
    rows = [r for r in read_jsonl(result.metrics_path) if r["split"] == "train"]
    first, last = rows[0], rows[-1]
    assert last["rewards/margins"] > first["rewards/margins"] and last["loss"] < first["loss"]
