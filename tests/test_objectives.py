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
    assert spec("kto").reference and spec("kto").data == "labelled" and spec("sft").data == "text"
    assert spec("simpo").averages(TrainConfig()) and not spec("kto").averages(TrainConfig(logp_average=True))
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


def test_kto_matches_trl_kto_trainer(tiny, tmp_path: Path) -> None:
    """TRL's own KTOTrainer._compute_loss on the same tokens: answers, mismatched answers (the KL term), labels."""
    pytest.importorskip("trl")
    import copy

    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer
    from trl.trainer.kto_trainer import DataCollatorForUnpairedPreference

    from trainer.distributed import Dist
    from trainer.kto import KTOObjective
    from trainer.logps import PackedLM
    from trainer.loop import Policy

    base, tok = tiny
    policy_model = copy.deepcopy(base)
    reference = copy.deepcopy(base)
    torch.manual_seed(0)
    with torch.no_grad():  # a reference the policy differs from: a noisier model, so z₀ (clamped at 0) is > 0
        for p in reference.parameters():
            p.add_(0.05 * torch.randn_like(p))
    rows = pair_rows(6)
    labels = [True, False, False, True, False, False]
    answers = [r["chosen"] if good else r["rejected"] for r, good in zip(rows, labels)]
    # TRL's mismatched answers: the batch's completions shifted by one
    items = [TrainItem(r["id"], r["prompt"], [answers[i], answers[i - 1]], label=labels[i]) for i, r in enumerate(rows)]
    examples, _ = tokenize_records(tok, items, prompt_format="text", max_length=96, max_prompt_length=None)
    assert len(examples) == len(rows)
    beta, w_d, w_u = 0.5, 1.0, 1.7

    cfg = TrainConfig(objective="kto", beta=beta, desirable_weight=w_d, undesirable_weight=w_u, reference="model")
    ours_model = copy.deepcopy(policy_model)
    objective = KTOObjective(cfg, ref_model=copy.deepcopy(reference))
    objective.reference.start(ours_model, Dist())
    objective.labels = {it.id: it.label for it in items}
    loss, metrics = objective.loss(Policy(PackedLM(ours_model), ours_model, Dist()), pack(examples, tok.pad_token_id))
    mine = (loss, grads_of(ours_model, loss))

    trl_model = copy.deepcopy(policy_model)
    args = KTOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=len(rows), beta=beta,
                     desirable_weight=w_d, undesirable_weight=w_u, report_to="none", use_cpu=True,
                     train_sampling_strategy="sequential", gradient_checkpointing=False, bf16=False)
    dummy = Dataset.from_list([{"prompt": r["prompt"], "completion": a, "label": g}
                               for r, a, g in zip(rows, answers, labels)])
    trainer = KTOTrainer(model=trl_model, ref_model=copy.deepcopy(reference), args=args, train_dataset=dummy,
                         processing_class=tok)
    batch = DataCollatorForUnpairedPreference(pad_token_id=tok.pad_token_id)(
        [{"prompt_ids": ex.prompt_ids, "completion_ids": ex.completions[0], "KL_completion_ids": ex.completions[1],
          "label": it.label} for ex, it in zip(examples, items)])
    theirs_loss = trainer._compute_loss(trainer.model, batch, False)
    assert_same(mine, (theirs_loss, grads_of(trainer.model, theirs_loss)))
    logged = {k: v[-1] for k, v in trainer._metrics["eval"].items()}
    # z0 is a difference of log-prob sums of ~-200: fp32's rounding of such sums (~2e-5) is the tolerance, as for
    # the other metrics below (the chunked log-softmax sums in another order than TRL's full one)
    assert metrics["kl"] == pytest.approx(logged["kl"], abs=1e-4) and logged["kl"] > 0
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"):
        assert metrics[key] == pytest.approx(logged[key], abs=1e-4), key


def test_kto_scores_the_mismatched_answers_without_gradient(tiny) -> None:
    """z₀ is detached (TRL computes its KL log-probs under no_grad), so the mismatched answers must not go through
    the trained forward and backward: the policy's only forward with gradient holds the prompts and the labelled
    answers, and the mismatched answers run after it without gradient (on the prompts' cached keys and values)."""
    import copy

    from trainer.distributed import Dist
    from trainer.kto import KTOObjective
    from trainer.logps import PackedLM
    from trainer.loop import Policy

    base, tok = tiny
    model = copy.deepcopy(base)
    rows = pair_rows(6)
    items = [TrainItem(r["id"], r["prompt"], [r["chosen"], rows[i - 1]["rejected"]], label=i % 2 == 0)
             for i, r in enumerate(rows)]
    examples, _ = tokenize_records(tok, items, prompt_format="text", max_length=96, max_prompt_length=None)
    objective = KTOObjective(TrainConfig(objective="kto", reference="model"), ref_model=copy.deepcopy(base))
    objective.reference.start(model, Dist())
    objective.labels = {it.id: it.label for it in items}
    seen: list[tuple[int, bool]] = []
    model.get_input_embeddings().register_forward_hook(
        lambda m, args, out: seen.append((args[0].shape[1], torch.is_grad_enabled())))
    loss, _ = objective.loss(Policy(PackedLM(model), model, Dist()), pack(examples, tok.pad_token_id))
    loss.backward()
    labelled = max(len(ex.prompt_ids) + len(ex.completions[0]) for ex in examples)
    mismatched = max(len(ex.completions[1]) for ex in examples)
    assert [width for width, grad in seen if grad] == [labelled]
    assert [width for width, grad in seen if not grad] == [mismatched]
    assert all(p.grad is not None for p in model.parameters())


def labelled_rows() -> list[dict]:
    rows = []
    for i in range(8):
        r = pair_rows(8)[i]
        rows.append({"prompt": r["prompt"], "completion": r["chosen"], "label": True})
        if i % 2:
            rows.append({"prompt": r["prompt"], "completion": r["rejected"], "label": False})
    return rows


def test_kto_reads_labelled_rows_and_pairs(tmp_path: Path) -> None:
    from trainer.data import load_labelled_items
    from trainer.kto import with_mismatched

    unpaired = tmp_path / "labelled.jsonl"
    unpaired.write_text("".join(json.dumps(r) + "\n" for r in labelled_rows()))
    items, notes = load_labelled_items(str(unpaired))
    assert len(items) == 12 and sum(it.label for it in items) == 8 and "8 desirable, 4 undesirable" in notes[0]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in pair_rows(3)))
    items, _ = load_labelled_items(str(pairs))
    assert [(it.id, it.label) for it in items] == [("p0/chosen", True), ("p0/rejected", False), ("p1/chosen", True),
                                                   ("p1/rejected", False), ("p2/chosen", True), ("p2/rejected", False)]
    assert items[0].completions == [pair_rows(3)[0]["chosen"]]
    # the mismatched answer always comes from another prompt, also when a pair's two rows sit side by side
    for it in with_mismatched(items):
        assert it.completions[1] not in (pair_rows(3)[int(it.id[1])]["chosen"], pair_rows(3)[int(it.id[1])]["rejected"])


@pytest.mark.parametrize("row, field, why", [
    ({"prompt": "hi", "completion": "yo"}, "label", "missing"),
    ({"prompt": "hi", "completion": "yo", "label": "yes"}, "label", "expected true or false"),
    ({"prompt": "hi", "label": True}, "completion", "missing"),
])
def test_bad_labelled_rows_name_line_and_field(tmp_path: Path, row: dict, field: str, why: str) -> None:
    from trainer.data import TrainError, load_labelled_items

    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "ok", "completion": "fine", "label": True}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(TrainError, match=rf"bad.jsonl:2: field '{field}' {why}"):
        load_labelled_items(str(path))


def test_kto_trains_on_labelled_rows_with_cached_reference_and_resumes(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "labelled.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in labelled_rows()))
    base = dict(model=str(tiny_model_dir), data=str(data), objective="kto", batch_size=4, max_length=96, lr=3e-3,
                schedule="constant", max_steps=6, live=False, undesirable_weight=2.0)
    whole = train(TrainConfig(output_dir=str(tmp_path / "whole"), **base), quiet())
    assert whole.complete and whole.prepare_seconds > 0
    rows = [r for r in read_jsonl(whole.metrics_path) if r["split"] == "train"]
    assert {"kl", "rewards/chosen", "rewards/rejected", "rewards/margins"} <= set(rows[0])
    assert rows[-1]["rewards/margins"] > rows[0]["rewards/margins"]
    assert (tmp_path / "cache").exists()  # KTO declares a reference: its log-probs are cached
    from prefloop.report import Report
    from trainer.report import add_training_section

    report = Report("run")
    add_training_section(report, whole.output_dir, tmp_path / "plots")
    text = report.to_markdown()
    assert "KTO loss" in text and "| objective | kto |" in text.replace("`", "") and "| kl |" in text

    class Stop(KeyboardInterrupt):
        pass

    from trainer.kto import KTOObjective
    from trainer.loop import run

    class StopAt(KTOObjective):
        calls = 0

        def loss(self, policy, batch):
            type(self).calls += 1
            if type(self).calls == 4 and policy.module.training:
                raise Stop
            return super().loss(policy, batch)

    cfg = TrainConfig(output_dir=str(tmp_path / "resumed"), save_every=1, **base)
    with pytest.raises(Stop):
        run(cfg, StopAt(cfg), quiet())
    resumed = train(TrainConfig(output_dir=str(tmp_path / "resumed"), save_every=1, resume=True, **base), quiet())
    assert resumed.complete
    again = [r["loss"] for r in read_jsonl(resumed.metrics_path) if r["split"] == "train"]
    assert again == pytest.approx([r["loss"] for r in rows], abs=1e-6)


@pytest.mark.parametrize("name, reference", [("simpo", "cached"), ("kto", "model"), ("kto", "cached")])
def test_new_objectives_with_lora(name: str, reference: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    """LoRA trains only the adapter; KTO's reference is the same model with the adapter off (or its cache)."""
    pytest.importorskip("peft")
    data = tmp_path / "labelled.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in labelled_rows()))
    cfg = TrainConfig(model=str(tiny_model_dir), data=str(data if name == "kto" else ""), output_dir=str(tmp_path / "o"),
                      objective=name, lora_r=4, batch_size=4, max_length=96, lr=1e-2, schedule="constant",
                      max_steps=4, live=False, reference=reference)
    if name == "simpo":
        pairs = tmp_path / "pairs.jsonl"
        pairs.write_text("".join(json.dumps(r) + "\n" for r in pair_rows(8)))
        cfg = TrainConfig(**{**vars(cfg), "data": str(pairs)})
    result = train(cfg, quiet())
    assert result.complete and result.adapter_dir is not None and (result.adapter_dir / "adapter_config.json").exists()
    rows = [r for r in read_jsonl(result.metrics_path) if r["split"] == "train"]
    assert rows[-1]["rewards/margins"] != rows[0]["rewards/margins"]
    if name == "kto":
        assert abs(rows[0]["rewards/chosen"]) < 1e-6  # step 1: adapter B = 0, so policy = reference exactly
    assert (tmp_path / "cache").exists() == (reference == "cached" and name == "kto")


def test_cli_objective_flag_and_sft_hides_other_objectives(tiny_model_dir: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    from loop.cli import main

    data = tmp_path / "labelled.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in labelled_rows()))
    out = tmp_path / "kto"
    rc = main(["train", "--objective", "kto", "--model", str(tiny_model_dir), "--data", str(data), "--output",
               str(out), "--max-steps", "2", "--batch-size", "4", "--undesirable-weight", "2", "--no-live"])
    assert rc == 0 and capsys.readouterr().out.strip() == str(out / "final")
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["objective"] == "kto" and summary["config"]["undesirable_weight"] == 2.0
    # `prefloop sft` has no flag of another objective
    with pytest.raises(SystemExit):
        main(["sft", "--simpo-gamma", "1", "--data", str(data)])
    assert "unrecognized arguments: --simpo-gamma" in capsys.readouterr().err
    # a label that is not true/false stops before any model is loaded, naming file, line and field
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "completion": "c", "label": 1}) + "\n")
    assert main(["train", "--objective", "kto", "--data", str(bad), "--output", str(tmp_path / "b"),
                 "--model", str(tiny_model_dir)]) == 2
    assert "bad.jsonl:1: field 'label' expected true or false, got 1" in capsys.readouterr().err


def test_a_whole_batch_objective_refuses_token_capped_pieces() -> None:
    """KTO's z₀ is a mean over the whole micro-batch: run in token-capped pieces, each piece would estimate its
    own (and divide by the whole batch's rows), so the two settings together are refused before any work."""
    with pytest.raises(ValueError, match="max_tokens_per_batch"):
        TrainConfig(model="m", data="d.jsonl", objective="kto", max_tokens_per_batch=512)
    TrainConfig(model="m", data="d.jsonl", objective="dpo", max_tokens_per_batch=512)  # pieces sum exactly
    assert [s.name for s in OBJECTIVES.values() if s.whole_batch] == ["kto"]


def test_kto_counts_the_labelled_answers_tokens_as_trl_does(tiny_model_dir: Path, tmp_path: Path) -> None:
    """tokens/s counts prompt + labelled answer per item (TRL's KTOTrainer: its main batch's attention mask), not
    the mismatched answer that only estimates z₀: counting it would inflate KTO's speed against TRL's."""
    from trainer.kto import KTOObjective
    from trainer.loop import run

    data = tmp_path / "labelled.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in labelled_rows()))
    seen: list[int] = []

    class Counting(KTOObjective):
        def loss(self, policy, batch):
            if policy.module.training:  # prompt (segment 0) and the labelled answer (segment 1) of each row
                seen.append(int(((batch.segment == 0) | (batch.segment == 1)).sum()))
            return super().loss(policy, batch)

    cfg = TrainConfig(model=str(tiny_model_dir), data=str(data), objective="kto", batch_size=4, max_length=96,
                      schedule="constant", max_steps=3, live=False, output_dir=str(tmp_path / "run"))
    result = run(cfg, Counting(cfg), quiet())
    assert len(seen) == 3 and result.train_tokens == sum(seen)
    assert result.train_sequences == 3 * 4
