"""Training metrics where TRL users already read them: TensorBoard, Weights & Biases, MLflow (``report_to``).

Every row the trainer writes to ``metrics.jsonl`` also goes to each tracker named in ``[train] report_to``, under
the names TRL's runs have there (the Hugging Face Trainer's callbacks): TensorBoard and W&B get ``train/loss``,
``train/rewards/chosen``, ..., ``eval/loss``, ``train/epoch``; MLflow gets ``loss``, ``rewards/chosen``, ...,
``eval_loss``, ``epoch``; all at the optimizer step. Nothing changes in ``metrics.jsonl``.

- Each library is an optional extra (``pip install 'prefloop[trackers]'``), imported only when named; a named one
  that is missing is a one-line ``ConfigError`` with the pip command, raised when the settings are read, so
  before any data or model is loaded (``check``).
- W&B follows its own environment (``WANDB_MODE=offline``, ``WANDB_PROJECT``, default project ``prefloop``), its
  files under the output folder; MLflow uses ``MLFLOW_TRACKING_URI`` when set, else a local ``file:`` store in
  ``OUTPUT/mlruns`` (MLflow 3 keeps that store behind ``MLFLOW_ALLOW_FILE_STORE``, which is set for it);
  TensorBoard writes event files to ``OUTPUT/tensorboard``.
- Resume continues the same tracker run: the W&B and MLflow run ids are kept in ``OUTPUT/trackers.json``; on
  resume TensorBoard purges the events after the checkpoint's step, as ``metrics.jsonl`` drops its rows.
- Only the process that writes ``metrics.jsonl`` (rank 0 under torchrun) reports.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any

from prefloop.config import ConfigError

TRACKERS = ("tensorboard", "wandb", "mlflow")
MODULES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow-skinny"}  # mlflow itself works too
IDS_FILE = "trackers.json"
# our names where TRL has its own (and where "tokens" beside "tokens/s" would collide in MLflow's file store)
RENAMED = {"tokens": "num_tokens", "tokens/s": "tokens_per_second"}


def check(names: list[str]) -> None:
    """Refuse an unknown tracker, or one whose library is not installed, in one line with the fix."""
    for name in names:
        if name not in TRACKERS:
            raise ConfigError(f"train.report_to: {name!r} is not one of {', '.join(TRACKERS)}")
        if importlib.util.find_spec(MODULES[name]) is None:
            raise ConfigError(f"train.report_to: {name} is not installed; run: pip install 'prefloop[trackers]' "
                              f"(or pip install {PACKAGES[name]})")


def trl_names(row: dict[str, Any], tracker: str) -> tuple[int, dict[str, float]]:
    """The step and the numeric metrics of one metrics row, named as TRL's runs name them in ``tracker``."""
    split = row.get("split", "train")
    out = {}
    for key, value in row.items():
        if key in ("step", "split") or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        key = RENAMED.get(key, key)
        if tracker == "mlflow":  # the HF MLflow callback logs the Trainer's keys as they are
            out[key if split == "train" or key == "epoch" else f"{split}_{key}"] = float(value)
        else:  # TensorBoard and W&B callbacks: rewrite_logs() puts eval_* under eval/, the rest under train/
            out[f"{'eval' if split == 'eval' and key != 'epoch' else 'train'}/{key}"] = float(value)
    return int(row.get("step", 0)), out


class Tracker:
    """One tracker's run: ``log(step, metrics)`` and ``close()``; ``run_id`` to resume it (None: nothing to keep)."""

    name = ""
    run_id: str | None = None

    def log(self, step: int, metrics: dict[str, float]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class TensorBoard(Tracker):
    name = "tensorboard"

    def __init__(self, out: Path, resume_step: int | None, config: dict[str, Any]):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: a resumed run's readers drop the events the interrupted run wrote after its checkpoint
        self.writer = SummaryWriter(log_dir=str(out / "tensorboard"),
                                    purge_step=resume_step + 1 if resume_step is not None else None)
        if resume_step is None:
            self.writer.add_text("config", json.dumps(config, default=str, indent=1))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class Wandb(Tracker):
    name = "wandb"

    def __init__(self, out: Path, run_id: str | None, config: dict[str, Any]):
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "prefloop"), name=out.name, dir=str(out),
                              id=run_id, resume="allow" if run_id else None, config=config)
        self.run_id = self.run.id

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


class Mlflow(Tracker):
    name = "mlflow"

    def __init__(self, out: Path, run_id: str | None, config: dict[str, Any]):
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps file: stores behind this
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI") or (out / "mlruns").resolve().as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        if run_id is None:
            experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", "prefloop")
            found = self.client.get_experiment_by_name(experiment)
            eid = found.experiment_id if found else self.client.create_experiment(experiment)
            run_id = self.client.create_run(eid, run_name=out.name).info.run_id
            for key, value in list(config.items())[:100]:
                self.client.log_param(run_id, key, str(value)[:500])
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id

    def log(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class Reporting:
    """The metrics log (``metrics.jsonl``) with the named trackers beside it: ``append(row)`` writes both."""

    def __init__(self, log: Any, trackers: list[Tracker]):
        self.log = log
        self.trackers = trackers

    def append(self, row: dict[str, Any]) -> None:
        self.log.append(row)
        for tracker in self.trackers:
            tracker.log(*trl_names(row, tracker.name))

    def __enter__(self) -> "Reporting":
        self.log.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            for tracker in self.trackers:
                tracker.close()
        finally:
            self.log.__exit__(*exc)


def open_trackers(log: Any, names: list[str], out: Path, *, resume_step: int | None, enabled: bool,
                  config: dict[str, Any]) -> Any:
    """``log`` with each tracker in ``names`` beside it (``log`` itself when none is named or this process does not
    report). ``resume_step``: the checkpoint's step when the run resumes (the trackers continue their run), else
    None (a new run, new ids)."""
    if not names or not enabled:
        return log
    check(names)
    ids_path = out / IDS_FILE
    ids = json.loads(ids_path.read_text()) if resume_step is not None and ids_path.exists() else {}
    trackers: list[Tracker] = []
    for name in names:
        if name == "tensorboard":
            trackers.append(TensorBoard(out, resume_step, config))
        elif name == "wandb":
            trackers.append(Wandb(out, ids.get("wandb"), config))
        else:
            trackers.append(Mlflow(out, ids.get("mlflow"), config))
    ids = {t.name: t.run_id for t in trackers if t.run_id}
    ids_path.write_text(json.dumps(ids, indent=1) + "\n")
    return Reporting(log, trackers)
