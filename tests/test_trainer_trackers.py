"""``report_to``: the trainer's metrics under TRL's names in TensorBoard, W&B (offline) and MLflow (a local file
store), each library run for real and read back with its own reader; a resumed run continues the same tracker
run. Skipped only where a library is not installed (``pip install 'prefloop[trackers]'``)."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import pytest
from rich.console import Console

from prefloop.config import ConfigError
from prefloop.jsonl import read_jsonl
from trainer import trackers
from trainer.config import TrainConfig
from trainer.dpo import DPOObjective, train
from trainer.loop import run
from trainer.trackers import trl_names


class Crash(KeyboardInterrupt):
    pass


class CrashingDPO(DPOObjective):
    """Ctrl-C in the forward of micro-batch ``at``: the run dies after logging step ``at - 1``."""

    def __init__(self, cfg: TrainConfig, at: int) -> None:
        super().__init__(cfg)
        self.calls, self.at = 0, at

    def loss(self, policy, batch):  # noqa: ANN001, ANN201
        self.calls += 1
        if self.calls == self.at:
            raise Crash()
        return super().loss(policy, batch)


@pytest.fixture
def pairs(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Say something about {i}.\n",
                                        "chosen": f"Here is a kind note on {i}.", "rejected": f"No. {i}"}) + "\n"
                            for i in range(16)))
    return path


def config(model: Path, data: Path, out: Path, names: list[str], **kw) -> TrainConfig:  # noqa: ANN003
    base = dict(model=str(model), data=str(data), output_dir=str(out), batch_size=4, max_length=48, lr=1e-3,
                schedule="constant", max_steps=4, save_every=2, live=False, seed=3, report_to=names)
    base.update(kw)
    return TrainConfig(**base)


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def crashed_and_resumed(model: Path, data: Path, out: Path, names: list[str]) -> list[dict]:
    """Train 4 steps, die in step 4 (after step 3 was logged, checkpoint at step 2), resume; metrics.jsonl rows."""
    cfg = config(model, data, out, names)
    with pytest.raises(Crash):
        run(cfg, CrashingDPO(cfg, at=4), quiet())
    first = json.loads((out / "trackers.json").read_text())
    result = train(config(model, data, out, names, resume=True), quiet())
    assert result.complete and result.steps == 2
    assert json.loads((out / "trackers.json").read_text()) == first  # the same tracker runs, continued
    rows = [r for r in read_jsonl(out / "metrics.jsonl") if r["split"] == "train"]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    return rows


def test_metric_names_follow_trl() -> None:
    train_row = {"step": 3, "epoch": 0.5, "split": "train", "loss": 0.6, "rewards/chosen": 0.1, "grad_norm": 2.0}
    eval_row = {"step": 3, "epoch": 0.5, "split": "eval", "loss": 0.7, "rewards/accuracies": 0.75}
    assert trl_names(train_row, "tensorboard") == (3, {"train/epoch": 0.5, "train/loss": 0.6,
                                                       "train/rewards/chosen": 0.1, "train/grad_norm": 2.0})
    assert trl_names(eval_row, "wandb") == (3, {"train/epoch": 0.5, "eval/loss": 0.7, "eval/rewards/accuracies": 0.75})
    assert trl_names(eval_row, "mlflow") == (3, {"epoch": 0.5, "eval_loss": 0.7, "eval_rewards/accuracies": 0.75})


def test_unknown_or_missing_tracker_is_one_line_before_training(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(ConfigError, match="'comet' is not one of tensorboard, wandb, mlflow"):
        TrainConfig(data="x", output_dir=str(tmp_path), report_to=["comet"])
    monkeypatch.setitem(trackers.MODULES, "wandb", "wandb_is_not_installed_here")
    with pytest.raises(ConfigError) as err:
        TrainConfig(data="x", output_dir=str(tmp_path), report_to=["wandb"])
    assert str(err.value) == ("train.report_to: wandb is not installed; run: pip install 'prefloop[trackers]' "
                              "(or pip install wandb)")


def test_tensorboard_events_read_back_after_resume(tiny_model_dir: Path, pairs: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    rows = crashed_and_resumed(tiny_model_dir, pairs, out, ["tensorboard"])
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3, 4]  # the dead run's step 3 purged, the resumed one kept
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in rows], rel=1e-6)
    assert {"train/rewards/margins", "train/learning_rate", "train/grad_norm"} <= set(events.Tags()["scalars"])


def test_mlflow_file_store_continues_the_run(tiny_model_dir: Path, pairs: Path, tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    rows = crashed_and_resumed(tiny_model_dir, pairs, out, ["mlflow"])
    run_id = json.loads((out / "trackers.json").read_text())["mlflow"]
    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    history = client.get_metric_history(run_id, "loss")
    last = {}
    for m in sorted(history, key=lambda m: m.timestamp):
        last[m.step] = m.value  # step 3 twice: the dead run's, then the resumed run's
    assert sorted(last) == [1, 2, 3, 4]
    assert [last[s] for s in (1, 2, 3, 4)] == pytest.approx([r["loss"] for r in rows], rel=1e-6)
    assert client.get_run(run_id).info.status == "FINISHED"
    assert "rewards/accuracies" in client.get_run(run_id).data.metrics


def wandb_records(path: Path) -> list:
    """The records of a W&B run file (LevelDB-log framing: 7-byte header ``:W&B`` + magic + version, 32 KiB
    blocks, each record crc32 + length + type, split across blocks as FIRST/MIDDLE/LAST)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, out, part = 7, [], b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            break
        part += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            rec = pb.Record()
            rec.ParseFromString(part)
            out.append(rec)
            part = b""
    return out


def test_wandb_offline_continues_the_run(tiny_model_dir: Path, pairs: Path, tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    rows = crashed_and_resumed(tiny_model_dir, pairs, out, ["wandb"])
    run_id = json.loads((out / "trackers.json").read_text())["wandb"]
    files = sorted((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2 and all(f.name == f"run-{run_id}.wandb" for f in files)  # one run, written twice
    loss = {}
    for f in files:
        for rec in wandb_records(f):
            if rec.WhichOneof("record_type") == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
                if "train/loss" in items:
                    loss[items["_step"]] = items["train/loss"]
    assert sorted(loss) == [1, 2, 3, 4]
    assert [loss[s] for s in (1, 2, 3, 4)] == pytest.approx([r["loss"] for r in rows], rel=1e-6)


def test_only_the_process_that_writes_metrics_reports(tmp_path: Path) -> None:
    log = object()
    assert trackers.open_trackers(log, ["tensorboard"], tmp_path, resume_step=None, enabled=False,
                                  config={}) is log
    assert not (tmp_path / "trackers.json").exists()
