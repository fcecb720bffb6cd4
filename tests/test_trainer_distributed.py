"""Two CPU processes (torchrun, gloo) train exactly as one process with the same global batch.

One torchrun launch runs every scenario below in both processes (imports are most of the cost), writing each run's
folder and one ``rank<N>.json`` per process; the tests compare those with one-process runs of the same settings.
The settings include gradient accumulation and an odd last batch (36 training pairs in batches of 5: step 4's
second micro-batch has 1 row, so one process's share is empty), so an unequal number of forwards would hang: the
process group timeout is short and the launch has a hard time limit, so a hang fails the tests instead of
blocking them.

Run as a script, this file is the worker: ``torchrun --nproc_per_node 2 tests/test_trainer_distributed.py SPEC``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_trainer import cfg_for, losses, pairs_path, quiet  # noqa: F401 - pairs_path is a fixture

ROOT = Path(__file__).resolve().parents[1]
COMMON = dict(max_steps=7, batch_size=5, grad_accum=2, eval_split=0.1, eval_every=3, lr=3e-4, schedule="linear",
              warmup_steps=2, save_every=3, dist_timeout=60.0)
SCENARIOS: dict[str, dict] = {
    "ddp": dict(rpo_alpha=0.2),                   # the RPO term is pooled over tokens: another normalisation
    "fsdp": dict(distributed="fsdp"),
    "lora_ddp": dict(lora_r=4, lr=3e-3),
    "lora_fsdp": dict(lora_r=4, lr=3e-3, distributed="fsdp"),
    "sft_ddp": dict(lr=1e-3, objective="sft"),    # SFT normalises by response tokens, not by rows
    "kto_ddp": dict(objective="kto", lr=1e-2),    # KTO's z₀ is a mean over the whole micro-batch
    "kto_fsdp": dict(objective="kto", lr=1e-2, distributed="fsdp"),  # and the mismatched answers' no-grad pass
    "pieces_fsdp": dict(distributed="fsdp", max_tokens_per_batch=90),  # token-capped pieces, unequal per rank
    "nan": dict(max_steps=5),                     # rank 1's weights turn NaN in step 3
    "bypass": dict(max_steps=2, save_every=0, eval_split=0.0),  # the log-probs called around the DDP wrapper
}


def scenario_cfg(model_dir: Path, data: Path, out: Path, name: str, **extra):
    return cfg_for(model_dir, data, out, **{**COMMON, **SCENARIOS[name], **extra})


def weights_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode() + p.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------- the worker

def worker(spec_path: str) -> None:
    from transformers import AutoModelForCausalLM

    from trainer.dpo import DPOObjective
    from trainer.logps import packed_logps
    from trainer.loop import run
    from trainer.objectives import spec as declared

    class PoisonOnRank1(DPOObjective):
        def loss(self, policy, batch):
            self.calls = getattr(self, "calls", 0) + 1
            if self.calls == 5 and policy.dist.rank == 1:  # the first micro-batch of step 3
                with torch.no_grad():
                    policy.lm.get_output_embeddings().weight[0, 0] = float("nan")
            return super().loss(policy, batch)

    class BypassDPO(DPOObjective):
        """The trap the wrapper exists for: log-probs computed on the model inside DDP, not through it."""

        def loss(self, policy, batch):
            from trainer.dpo import dpo_loss

            sums, counts = packed_logps(policy.lm, batch)
            ref = self.ref.lookup(batch.ids)[0]
            return dpo_loss(self.cfg, sums.float(), counts, ref, rows=batch.total_rows,
                            chosen_tokens=batch.total_tokens[0])

    spec = json.loads(Path(spec_path).read_text())
    rank = int(os.environ["RANK"])
    for name in spec["scenarios"]:
        cfg = scenario_cfg(Path(spec["model"]), Path(spec["data"]), Path(spec["out"]) / name, name)
        objective = ({"nan": PoisonOnRank1, "bypass": BypassDPO}[name](cfg) if name in ("nan", "bypass")
                     else declared(cfg.objective).build(cfg))
        model = AutoModelForCausalLM.from_pretrained(spec["model"])
        result = run(cfg, objective, quiet(), model=model)
        info = {"status": result.status, "reason": result.reason, "steps": result.steps,
                "digest": weights_digest(model) if "fsdp" not in name else None}
        (Path(cfg.output_dir) / f"rank{rank}.json").write_text(json.dumps(info))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    worker(sys.argv[1])
    from trainer.distributed import stop

    stop()


# -------------------------------------------------------------------------------------------- the tests

def torchrun(args: list[str], env_extra: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}", OMP_NUM_THREADS="1",
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **env_extra)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"torchrun did not end within {timeout} s (a hang?):\n{(exc.stderr or b'')[-3000:]!r}")


@pytest.fixture(scope="module")
def two_procs(tiny_model_dir: Path, pairs_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """Every scenario run once in two processes; returns the folder holding one run folder per scenario."""
    root = tmp_path_factory.mktemp("dist")
    spec = root / "spec.json"
    spec.write_text(json.dumps({"model": str(tiny_model_dir), "data": str(pairs_path), "out": str(root / "runs"),
                                "scenarios": list(SCENARIOS)}))
    proc = torchrun([str(Path(__file__)), str(spec)], {"PREFLOOP_CACHE": str(root / "cache")}, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return root / "runs"


def one_proc(tiny_model_dir: Path, pairs_path: Path, out: Path, name: str, **extra):  # noqa: F811
    from transformers import AutoModelForCausalLM

    from trainer.dpo import train
    from trainer.sft import train_sft

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    cfg = scenario_cfg(tiny_model_dir, pairs_path, out / name, name, **extra)
    result = (train_sft if name.startswith("sft") else train)(cfg, quiet(), model=model)
    return result, model


def safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def assert_same_weights(a: Path, b: Path, atol: float = 1e-5) -> None:
    wa, wb = safetensors(a), safetensors(b)
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert worst <= atol, f"max |weight difference| {worst:.2e}"


@pytest.mark.parametrize("name", ["ddp", "fsdp", "lora_ddp", "lora_fsdp", "sft_ddp", "kto_ddp", "kto_fsdp",
                                  "pieces_fsdp"])
def test_two_processes_equal_one(name: str, two_procs: Path, tiny_model_dir: Path, pairs_path: Path,  # noqa: F811
                                 tmp_path: Path) -> None:
    single, _ = one_proc(tiny_model_dir, pairs_path, tmp_path, name)
    dist_dir = two_procs / name
    assert json.loads((dist_dir / "rank0.json").read_text())["status"] == "complete"
    for split in ("train", "eval"):
        got, want = losses(dist_dir / "metrics.jsonl", split), losses(single.metrics_path, split)
        assert len(got) == len(want) == (7 if split == "train" else 3)
        assert got == pytest.approx(want, abs=1e-5)
    assert losses(single.metrics_path)[0] != pytest.approx(losses(single.metrics_path)[-1], abs=1e-3)  # it learned
    if name.startswith("lora"):  # the adapter in PEFT's format and the merged model
        assert_same_weights(dist_dir / "final" / "adapter" / "adapter_model.safetensors",
                            single.adapter_dir / "adapter_model.safetensors")
    assert_same_weights(dist_dir / "final" / "model.safetensors", single.final_model_dir / "model.safetensors")


def test_ranks_agree_and_a_bypassed_wrapper_is_caught(two_procs: Path) -> None:
    """The DDP run's two copies end equal; the same run with log-probs computed around the wrapper (no
    gradient sync, no error) ends with two different models: the check above would catch that bug."""
    ddp = [json.loads((two_procs / "ddp" / f"rank{r}.json").read_text()) for r in (0, 1)]
    bypass = [json.loads((two_procs / "bypass" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ddp[0]["digest"] == ddp[1]["digest"]
    assert bypass[0]["status"] == "complete" and bypass[0]["digest"] != bypass[1]["digest"]


def test_nan_on_one_rank_stops_both(two_procs: Path) -> None:
    ranks = [json.loads((two_procs / "nan" / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r in ranks:
        assert r["status"] == "failed" and "non-finite values at step 3" in r["reason"] and r["steps"] == 2
    assert len(losses(two_procs / "nan" / "metrics.jsonl")) == 2


def test_sharded_reference_cache_equals_one_process(two_procs: Path, tiny_model_dir: Path, pairs_path: Path,  # noqa: F811
                                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFLOOP_CACHE", str(tmp_path / "cache"))
    one_proc(tiny_model_dir, pairs_path, tmp_path, "fsdp")  # the same model, data and dtype as the sharded runs
    [single] = (tmp_path / "cache" / "refcache").iterdir()
    shared = two_procs.parent / "cache" / "refcache" / single.name
    a, b = torch.load(single, weights_only=True)["entries"], torch.load(shared, weights_only=True)["entries"]
    assert a.keys() <= b.keys() and len(a) == 40  # the launch's KTO run (same model) adds its entries to the file
    worst = max(abs(x - y) for k in a for side in (0, 1) for x, y in zip(a[k][side], b[k][side]))
    assert worst <= 1e-5


@pytest.mark.parametrize("name", ["fsdp", "ddp"])
def test_a_two_process_checkpoint_resumes_in_one_process(name: str, two_procs: Path, tiny_model_dir: Path,
                                                          pairs_path: Path, tmp_path: Path) -> None:  # noqa: F811
    """Resume the two-process run from its step-6 checkpoint (FSDP2: sharded, so DCP reshards it) in one
    process: the last step, the log and the model equal an uninterrupted one-process run."""
    cut = tmp_path / "cut" / name
    shutil.copytree(two_procs / name, cut)
    shutil.rmtree(cut / "final")
    assert sorted(p.name for p in (cut / "checkpoints").iterdir()) == ["step-000003", "step-000006"]
    resumed, _ = one_proc(tiny_model_dir, pairs_path, tmp_path / "cut", name, resume=True)
    single, _ = one_proc(tiny_model_dir, pairs_path, tmp_path / "one", name)
    assert resumed.complete and resumed.steps == 1
    assert losses(resumed.metrics_path) == pytest.approx(losses(single.metrics_path), abs=1e-5)
    assert_same_weights(resumed.final_model_dir / "model.safetensors", single.final_model_dir / "model.safetensors")


def test_prefloop_train_nproc_2_gives_the_one_process_losses(tiny_model_dir: Path, pairs_path: Path,  # noqa: F811
                                                             tmp_path: Path) -> None:
    """The command users run: ``prefloop train --nproc 2`` starts torchrun, which runs ``-m prefloop train``."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               PREFLOOP_CACHE=str(tmp_path / "cache"))
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "prefloop", "train", "--model", str(tiny_model_dir), "--data", str(pairs_path),
           "--output", str(out), "--max-steps", "3", "--batch-size", "3", "--grad-accum", "2", "--lr", "1e-3",
           "--max-length", "64", "--seed", "3", "--schedule", "constant", "--no-live", "--nproc", "2",
           "--dist-timeout", "60", "--rpo-alpha", "0"]
    tensorboard = importlib.util.find_spec("tensorboard") is not None
    if tensorboard:  # report_to from rank 0 only: one writer, one event file
        cmd += ["--report-to", "tensorboard"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 processes (ddp)" in proc.stderr
    if tensorboard:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1
        events = EventAccumulator(str(out / "tensorboard"))
        events.Reload()
        assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3]
    single, _ = one_proc(tiny_model_dir, pairs_path, tmp_path, "ddp", max_steps=3, lr=1e-3, schedule="constant",
                         warmup_steps=0, rpo_alpha=0.0, eval_split=0.0, save_every=0, batch_size=3)
    assert losses(out / "metrics.jsonl") == pytest.approx(losses(single.metrics_path), abs=1e-5)


@pytest.mark.slow
def test_two_machines_through_the_rendezvous_each_write_their_own_cache(tiny_model_dir: Path,  # noqa: F811
                                                                         pairs_path: Path, tmp_path: Path) -> None:
    """Two "machines" (torchrun --nnodes 2 on localhost, each with its own cache folder): both caches are
    written, by each machine's LOCAL_RANK 0, and the run gives the one-process losses."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "run"
    procs = []
    for node in (0, 1):
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
                   PREFLOOP_CACHE=str(tmp_path / f"cache{node}"))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
               "--node_rank", str(node), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
               "--rdzv-id", "prefloop-test", "-m", "prefloop", "train", "--model", str(tiny_model_dir), "--data",
               str(pairs_path), "--output", str(out), "--max-steps", "3", "--batch-size", "3", "--lr", "1e-3",
               "--max-length", "64", "--seed", "3", "--schedule", "constant", "--no-live", "--dist-timeout", "60",
               "--rpo-alpha", "0"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                      env=env))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    assert [len(list((tmp_path / f"cache{n}" / "refcache").iterdir())) for n in (0, 1)] == [1, 1]
    single, _ = one_proc(tiny_model_dir, pairs_path, tmp_path, "ddp", max_steps=3, lr=1e-3, schedule="constant",
                         warmup_steps=0, rpo_alpha=0.0, eval_split=0.0, save_every=0, grad_accum=1, batch_size=3)
    assert losses(out / "metrics.jsonl") == pytest.approx(losses(single.metrics_path), abs=1e-5)
