"""An unattended training run: interrupted, resumed, raced, refused, out of disk, fed bad files.

Each test here failed on the trainer before these fixes (issue 9, items 3, 4, 5, 9, 10, 13): Ctrl-C kept nothing,
``--resume`` took any checkpoint, two runs shared a folder, expected failures were tracebacks, a planted
``state.pt`` ran code, and the reference pass printed nothing for minutes.
"""

from __future__ import annotations

import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from rich.console import Console

from test_trainer import ROOT, cfg_for, losses, pairs_path, quiet  # noqa: F401 - pairs_path is a fixture
from trainer.data import TrainError
from trainer.dpo import DPOObjective, train
from trainer.loop import run


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFLOOP_CACHE", str(tmp_path / "cache"))


class SignalAt(DPOObjective):
    """Sends this process ``sig`` during micro-batch number ``at`` (counting from 1): a real Ctrl-C or SIGTERM."""

    def __init__(self, cfg, at: int, sig: int = signal.SIGINT) -> None:
        super().__init__(cfg)
        self.calls, self.at, self.sig = 0, at, sig

    def loss(self, policy, batch):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), self.sig)
        return super().loss(policy, batch)


KW = dict(max_steps=6, grad_accum=2, batch_size=3, schedule="linear", warmup_steps=2, eval_split=0.1, eval_every=2)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_finishes_the_step_saves_and_resume_gives_the_uninterrupted_run(
        sig: int, tiny_model_dir: Path, pairs_path: Path, tmp_path: Path) -> None:  # noqa: F811
    full = train(cfg_for(tiny_model_dir, pairs_path, tmp_path / "full", **KW), quiet())
    out = tmp_path / "cut"
    cfg = cfg_for(tiny_model_dir, pairs_path, out, **KW)
    cut = run(cfg, SignalAt(cfg, at=6, sig=sig), quiet())  # during step 3: that step completes, then it stops
    assert cut.status == "interrupted" and cut.exit_code == 130
    assert cut.last_checkpoint == out / "checkpoints" / "step-000003" and cut.last_checkpoint.exists()
    assert "--resume" in cut.reason and cut.final_model_dir is None
    assert len(losses(out / "metrics.jsonl")) == 3
    resumed = train(cfg_for(tiny_model_dir, pairs_path, out, resume=True, **KW), quiet())
    assert resumed.complete and resumed.steps == 3
    assert losses(resumed.metrics_path) == losses(full.metrics_path)
    assert losses(resumed.metrics_path, "eval") == losses(full.metrics_path, "eval")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are given back


def test_checkpoints_are_written_by_time_without_save_every(tiny_model_dir: Path, pairs_path: Path,  # noqa: F811
                                                          tmp_path: Path) -> None:
    from trainer.config import TrainConfig

    assert TrainConfig().save_every == 0 and TrainConfig().save_minutes == 10.0
    result = train(cfg_for(tiny_model_dir, pairs_path, tmp_path / "t", max_steps=3, save_minutes=1e-9), quiet())
    assert sorted(p.name for p in (tmp_path / "t" / "checkpoints").iterdir()) == ["step-000001", "step-000002"]
    assert result.complete


def test_a_fresh_run_never_overwrites_a_resumable_folder(tiny_model_dir: Path, pairs_path: Path,  # noqa: F811
                                                         tmp_path: Path) -> None:
    out = tmp_path / "r"
    cfg = cfg_for(tiny_model_dir, pairs_path, out, **KW)
    run(cfg, SignalAt(cfg, at=6), quiet())
    before = (out / "metrics.jsonl").read_bytes()
    with pytest.raises(TrainError, match=r"holds checkpoints of an earlier run \(newest: step-000003\); add "
                                         r"--resume"):
        train(cfg_for(tiny_model_dir, pairs_path, out, **KW), quiet())
    assert (out / "metrics.jsonl").read_bytes() == before


def test_resume_refuses_a_checkpoint_of_other_settings_or_data(tiny_model_dir: Path, pairs_path: Path,  # noqa: F811
                                                              tmp_path: Path) -> None:
    out = tmp_path / "r"
    cfg = cfg_for(tiny_model_dir, pairs_path, out, **KW)
    run(cfg, SignalAt(cfg, at=6), quiet())
    with pytest.raises(TrainError, match=r"other settings or data: lr 0\.001 \(now 0\.0003\).*--resume-changed"):
        train(cfg_for(tiny_model_dir, pairs_path, out, resume=True, **{**KW, "lr": 3e-4}), quiet())
    other = tmp_path / "other.jsonl"
    other.write_text(pairs_path.read_text().replace("sunny", "cloudy"))
    with pytest.raises(TrainError, match=r"data \(other content"):
        train(cfg_for(tiny_model_dir, other, out, resume=True, **KW), quiet())
    with pytest.raises(TrainError, match=r"batch_size 3 \(now 4\)"):
        train(cfg_for(tiny_model_dir, pairs_path, out, resume=True, **{**KW, "batch_size": 4}), quiet())
    # on purpose: the new learning rate applies from the resumed step (the old code kept the checkpoint's)
    changed = train(cfg_for(tiny_model_dir, pairs_path, out, resume=True, resume_changed=True,
                            **{**KW, "lr": 3e-4, "schedule": "constant", "warmup_steps": 0}), quiet())
    rows = [r for r in json.loads("[" + ",".join((out / "metrics.jsonl").read_text().split()) + "]")
            if r["split"] == "train"]
    assert changed.complete and [r["learning_rate"] for r in rows[3:]] == [3e-4] * 3


def test_a_planted_state_file_is_refused_without_running_it(tiny_model_dir: Path, pairs_path: Path,  # noqa: F811
                                                           tmp_path: Path) -> None:
    out = tmp_path / "p"
    cfg = cfg_for(tiny_model_dir, pairs_path, out, **KW)
    run(cfg, SignalAt(cfg, at=6), quiet())
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"scheduler": Payload()}, out / "checkpoints" / "step-000003" / "state.pt")
    with pytest.raises(TrainError, match=r"state.pt: holds more than tensors.*could run code"):
        train(cfg_for(tiny_model_dir, pairs_path, out, resume=True, **KW), quiet())
    assert not marker.exists()
    # the same for the index of a sharded (FSDP2) checkpoint, which torch reads with plain pickle
    ckpt = out / "checkpoints" / "step-000003"
    info = json.loads((ckpt / "run.json").read_text())
    (ckpt / "run.json").write_text(json.dumps({**info, "format": "sharded"}))
    torch.save({"rng": [], "scheduler": {}}, ckpt / "state.pt")
    (ckpt / "dcp").mkdir()
    import pickle
    (ckpt / "dcp" / ".metadata").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(TrainError, match=r"\.metadata: posix.system is not part of a checkpoint index"):
        train(cfg_for(tiny_model_dir, pairs_path, out, resume=True, **KW), quiet())
    assert not marker.exists()


def test_pickle_weights_need_allow_pickle(tiny_model_dir: Path, pairs_path: Path, tmp_path: Path) -> None:  # noqa: F811
    from safetensors.torch import load_file

    folder = tmp_path / "bin-model"
    shutil.copytree(tiny_model_dir, folder)
    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(TrainError, match=r"pickle weights \(\.bin\) only.*--allow-pickle"):
        train(cfg_for(folder, pairs_path, tmp_path / "a", max_steps=1), quiet())
    assert train(cfg_for(folder, pairs_path, tmp_path / "b", max_steps=1, allow_pickle=True), quiet()).complete


def test_a_full_disk_during_a_checkpoint_is_one_line_and_damages_nothing(tiny_model_dir: Path,
                                                                       pairs_path: Path, tmp_path: Path) -> None:  # noqa: F811
    """A real write failure: after the step-2 checkpoint, files may grow to 800 KB only, so the step-4 one's
    optimizer state (1.2 MB) cannot be written (torch: "[enforce fail at inline_container.cc...]")."""

    class DiskFillsAfter(DPOObjective):
        calls = 0

        def loss(self, policy, batch):
            self.calls += 1
            if self.calls == 5:  # the first micro-batch of step 3
                resource.setrlimit(resource.RLIMIT_FSIZE, (800_000, hard))
            return super().loss(policy, batch)

    out = tmp_path / "d"
    kw = {**KW, "save_every": 2, "eval_split": 0.0}
    cfg = cfg_for(tiny_model_dir, pairs_path, out, **kw)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
    try:
        with pytest.raises(TrainError) as err:
            run(cfg, DiskFillsAfter(cfg), quiet())
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"could not write checkpoint {out}/checkpoints/step-000004")
    assert "inline_container" not in message and "GB free there" in message and "--resume" in message
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000002"]  # no half checkpoint left
    resumed = train(cfg_for(tiny_model_dir, pairs_path, out, resume=True, **kw), quiet())
    full = train(cfg_for(tiny_model_dir, pairs_path, tmp_path / "full", **kw), quiet())
    assert losses(resumed.metrics_path) == losses(full.metrics_path)


def readonly(folder: Path) -> bool:
    """Make ``folder`` read-only even for root (chattr +i) where chmod is not enough; False when neither works."""
    folder.mkdir()
    folder.chmod(0o555)
    for attempt in ("chmod", "chattr"):
        if attempt == "chattr":
            if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode:
                return False
        try:
            (folder / "probe").write_text("x")
            (folder / "probe").unlink()
        except OSError:
            return True
    return False


def test_expected_failures_are_one_line_from_the_command(tiny_model_dir: Path, pairs_path: Path,  # noqa: F811
                                                         tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from loop.cli import main

    def train_cli(*args: str) -> tuple[int, str]:
        code = main(["train", "--data", str(pairs_path), "--max-steps", "1", "--no-live", "-q", *args])
        return code, capsys.readouterr().err.strip()

    code, err = train_cli("--model", "nonexistent-org/nonexistent-model", "--output", str(tmp_path / "h"))
    assert code == 2 and err == ("error: train.model: 'nonexistent-org/nonexistent-model' is not a model folder, "
                                 "a .gguf file or a Hub model this machine can get (HF_HUB_OFFLINE is set, so only "
                                 "models already in the Hugging Face cache load); check the name, or download it "
                                 "first")
    gguf = tmp_path / "broken.gguf"
    gguf.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x01" * 7)
    code, err = train_cli("--model", str(gguf), "--output", str(tmp_path / "g"))
    assert code == 2 and err.startswith(f"error: {gguf}: not a readable GGUF model (") and "\n" not in err
    assert not list((tmp_path / "cache").glob("models/*"))  # nothing half-converted is left in the cache
    locked = tmp_path / "ro"
    if readonly(locked):
        try:
            code, err = train_cli("--model", str(tiny_model_dir), "--output", str(locked / "run"))
        finally:
            subprocess.run(["chattr", "-i", str(locked)], capture_output=True)
            locked.chmod(0o755)
        assert code == 2 and err.startswith(f"error: {locked / 'run'}: cannot write there (") and "\n" not in err
        assert err.endswith("choose another --output or make it writable")


def test_the_reference_pass_shows_progress_with_an_eta(tiny_model_dir: Path, pairs_path: Path,  # noqa: F811
                                                       tmp_path: Path) -> None:
    console = Console(file=io.StringIO(), width=200)  # not a terminal: plain lines
    train(cfg_for(tiny_model_dir, pairs_path, tmp_path / "p", max_steps=10, batch_size=4), console)
    lines = [line for line in console.file.getvalue().splitlines() if line.startswith("reference log-probs: ")]
    assert lines[0].startswith("reference log-probs: 16/40 pairs (40%, ") and "left" in lines[0]
    assert lines[-2].startswith("reference log-probs: 40/40 pairs (100%")


def test_a_reference_pass_stopped_by_ctrl_c_keeps_what_it_computed(tiny_model_dir: Path, pairs_path: Path,  # noqa: F811
                                                                   tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    pressed: list[int] = []

    def ctrl_c_once(*_: object) -> None:  # one Ctrl-C in batch 1 (a CPU runs a batch in several pieces)
        if not pressed:
            pressed.append(1)
            os.kill(os.getpid(), signal.SIGINT)

    hook = model.model.register_forward_hook(ctrl_c_once)
    cfg = cfg_for(tiny_model_dir, pairs_path, tmp_path / "p", max_steps=10, batch_size=4)
    result = train(cfg, quiet(), model=model)
    hook.remove()
    assert result.status == "interrupted" and "16 of 40 reference log-probs computed and cached" in result.reason
    console = quiet()
    assert train(cfg, console).complete  # the same command again: no --resume needed, nothing was trained
    assert "16 read from the cache, 24 computed" in console.file.getvalue()


# ------------------------------------------------------------------------------------- real processes

def start_train(out: Path, tiny_model_dir: Path, data: Path, env: dict, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "prefloop", "train", "--model", str(tiny_model_dir), "--data", str(data),
           "--output", str(out), "--batch-size", "4", "--max-length", "64", "--lr", "1e-3", "--seed", "3",
           "--schedule", "constant", "--rpo-alpha", "0", "--no-live", "--save-minutes", "0", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)


def test_two_trains_on_one_folder_then_sigint_then_resume(tiny_model_dir: Path, pairs_path: Path,  # noqa: F811
                                                          tmp_path: Path) -> None:
    """Real processes: a second ``prefloop train`` on a busy folder is refused; Ctrl-C on the first writes a
    checkpoint and exits 130; ``--resume`` with other settings is refused; on purpose it continues to the losses
    of an uninterrupted run. The first is paused (SIGSTOP) while the second tries, so it is surely busy then, and
    it stops after a few steps."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", PREFLOOP_CACHE=str(tmp_path / "cache"))
    out = tmp_path / "run"
    first = start_train(out, tiny_model_dir, pairs_path, env, "--max-steps", "100000")
    try:
        deadline = time.monotonic() + 120
        while len(losses(out / "metrics.jsonl") if (out / "metrics.jsonl").exists() else []) < 2:
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read() if first.poll() else ""
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)
        second = start_train(out.parent / "." / out.name, tiny_model_dir, pairs_path, env, "--max-steps", "3")
        _, err2 = second.communicate(timeout=120)
        assert second.returncode == 2 and f"{out} is being written by another run (pid {first.pid})" in err2
        first.send_signal(signal.SIGINT)
        first.send_signal(signal.SIGCONT)
        _, err1 = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, err1[-2000:]
    assert "Traceback" not in err1 and "run the same command with --resume" in err1
    [ckpt] = (out / "checkpoints").iterdir()
    step = int(ckpt.name.split("-")[1])
    assert losses(out / "metrics.jsonl") and len(losses(out / "metrics.jsonl")) == step  # its log is all there
    refused = start_train(out, tiny_model_dir, pairs_path, env, "--max-steps", str(step + 3), "--resume")
    _, err3 = refused.communicate(timeout=120)
    assert refused.returncode == 2 and "max_steps 100000 (now " in err3
    resumed = start_train(out, tiny_model_dir, pairs_path, env, "--max-steps", str(step + 3), "--resume",
                          "--resume-changed")
    _, err4 = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err4[-2000:]
    single = train(cfg_for(tiny_model_dir, pairs_path, tmp_path / "one", max_steps=step + 3), quiet())
    assert losses(out / "metrics.jsonl") == pytest.approx(losses(single.metrics_path), abs=1e-6)
