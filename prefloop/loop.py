"""``prefloop run CONFIG.toml``: the whole loop from one config, in one run folder.

    generate -> split -> preflight -> train -> judge -> report

Every stage writes under ``[run] out_dir`` and is fingerprinted (``prefloop.fingerprint``): a stage whose
outputs are complete for the same inputs and settings is skipped, a killed one resumes (the generator and judge
skip finished ids, the trainer continues from its newest checkpoint), and a changed setting reruns that stage
and what depends on it, not what comes before.

The split holds out whole prompts, chosen by a hash of the prompt's text, so a held-out prompt never reaches
training, whatever ids the pairs carry. The held-out prompts are what the judge scores: the method card's point
is to judge on prompts the model has not seen, never on the training loss.

Preflight is the seed recipe's first step ("check that the model can already do the task"): the judge scores
the SFT model's answers to a few held-out prompts (0-100) next to the dataset's own answers, and the loop warns,
with the numbers, when the model looks like it cannot do the task yet. DPO shapes style; it does not teach.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from prefloop.config import ConfigError, apply_overrides, build, load_toml, to_dict
from prefloop.fingerprint import RunState, file_hash, fingerprint, model_identity

SECTIONS = ("run", "data", "generate", "split", "preflight", "train", "judge")
STAGES = ("generate", "split", "preflight", "train", "judge")

# Settings that change how a stage runs, not what it writes: left out of fingerprints so that, say, more
# workers or a quieter console resume the same outputs instead of starting over.
RUNTIME_ONLY = {
    "generate": {"source", "output", "concurrency", "max_attempts", "backoff_s", "abort_after", "timeout_s",
                 "fsync", "quiet"},
    "train": {"data", "output_dir", "eval_data", "resume", "live", "threads", "extra", "save_every",
              "keep_checkpoints", "log_every", "stuck_steps"},
    "judge": {"out_dir", "concurrency", "quiet", "live", "max_attempts", "backoff_s", "abort_after",
              "timeout_s", "fsync", "threads"},
}

HOW_TO_SCALE_UP = (
    "To use Ollama and a stronger judge, edit the config: [generate] model = \"ollama:llama3.1:70b\" (or any "
    "model `ollama list` shows), [judge] judges = [\"ollama:llama3.1:8b\"] (or \"openai:MODEL@URL\"), and point "
    "[data] prompts at your own prompt set; data/reference-recipe.toml is the full-size recipe.")


# Bumped when the preflight's warning rules change, so a finished preflight is judged again by the new rules.
PREFLIGHT_RULES = 2

# ------------------------------------------------------------------------------------------------ settings

@dataclass
class RunSection:
    name: str = ""                  # shown in the report; default: the config file's name
    out_dir: str = ""               # run folder; default: runs/<config name> (relative to the current folder)
    threads: int = 0                # torch threads for local models and training (0: torch's default)


@dataclass
class DataSection:
    prompts: str = "data/prompts/quickstart.json"   # Alpaca JSON/JSONL, JSONL with "prompt", .txt or a dataset
    limit: int = 0                  # first N prompts only (0: all)
    skip_bad: bool = False          # skip malformed prompt rows (counted) instead of stopping


@dataclass
class SplitSection:
    heldout_fraction: float = 0.2   # share of prompts held out for judging; they never reach training
    heldout_min: int = 4            # at least this many held-out prompts (when there are enough prompts)
    heldout_max: int = 200          # at most this many (judging costs grow with it); 0: no cap
    seed: int = 0                   # change to draw another held-out set


@dataclass
class PreflightSection:
    enabled: bool = True
    prompts: int = 4                # held-out prompts the SFT model answers before training
    judge: str = ""                 # scoring model; default: the first judge
    min_score: float = 40.0         # warn when the SFT answers' mean score (0-100) is below this ...
    min_ratio: float = 0.6          # ... or below this share of the dataset answers' mean score
    max_tokens: int = 192
    stop_on_warning: bool = False   # stop the loop instead of training a model that cannot do the task


@dataclass
class LoopConfig:
    """The whole loop: the loop's own sections plus each stage's settings, checked before any work."""

    path: Path
    run: RunSection
    data: DataSection
    split: SplitSection
    preflight: PreflightSection
    generate: Any                   # generator.config.GenerateConfig
    train: Any                      # trainer.config.TrainConfig
    judge: Any                      # judge.config.JudgeConfig (the first of its `judges` is the headline)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def judges(self) -> list[str]:
        return list(self.judge.judges)

    @property
    def run_dir(self) -> Path:
        return Path(self.run.out_dir or Path("runs") / (self.run.name or self.path.stem))

    @property
    def name(self) -> str:
        return self.run.name or self.path.stem


def _resolve_input(value: str, config_dir: Path) -> str:
    """Relative input paths are looked up beside the config file first, then in the current folder."""
    if not value or Path(value).is_absolute():
        return value
    beside = config_dir / value
    if beside.exists():
        return str(beside)
    return value


def _set_loop_fields(cls: type, section: dict[str, Any], owned: dict[str, Any], where: str) -> dict[str, Any]:
    """A stage section with the fields the loop owns filled in (run-folder paths); setting them is an error."""
    names = {f.name for f in fields(cls)}
    for key in owned:
        if key in section:
            raise ConfigError(f"{where}.{key}: set by `prefloop run` (it lives in the run folder); remove it")
    return {**section, **{k: v for k, v in owned.items() if k in names}}


def load_loop_config(path: str | Path, overrides: list[str] | None = None) -> LoopConfig:
    """Read and check the whole config: unknown sections or keys, wrong types and bad values are errors naming
    the file and the key, before any model is loaded."""
    path = Path(path)
    doc = apply_overrides(load_toml(path), list(overrides or []))
    unknown = sorted(set(doc) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) [{'], ['.join(unknown)}]; known: {', '.join(SECTIONS)}")
    for name in SECTIONS:
        if not isinstance(doc.get(name, {}), dict):
            raise ConfigError(f"{path}: [{name}] must be a table")
    run = build(RunSection, doc.get("run"), f"{path} [run]")
    data = build(DataSection, doc.get("data"), f"{path} [data]")
    data.prompts = _resolve_input(data.prompts, path.parent)
    split = build(SplitSection, doc.get("split"), f"{path} [split]")
    if not 0.0 < split.heldout_fraction < 1.0:
        raise ConfigError(f"{path} [split].heldout_fraction: must be in (0, 1), got {split.heldout_fraction}")
    preflight = build(PreflightSection, doc.get("preflight"), f"{path} [preflight]")

    from generator.config import GenerateConfig
    from judge.config import JudgeConfig
    from trainer.config import TrainConfig

    run_dir = Path(run.out_dir or Path("runs") / (run.name or path.stem))
    gen_raw = _set_loop_fields(GenerateConfig, dict(doc.get("generate", {})),
                               {"source": data.prompts, "output": str(run_dir / "generate" / "pairs.jsonl")},
                               f"{path} [generate]")
    generate = build(GenerateConfig, gen_raw, f"{path} [generate]")

    train_raw = _set_loop_fields(TrainConfig, dict(doc.get("train", {})),
                                 {"data": str(run_dir / "split" / "train.jsonl"),
                                  "output_dir": str(run_dir / "train"),
                                  "eval_data": str(run_dir / "split" / "heldout_pairs.jsonl")},
                                 f"{path} [train]")
    if run.threads and "threads" not in train_raw:
        train_raw["threads"] = run.threads
    train = build(TrainConfig, train_raw, f"{path} [train]")

    judge_raw = _set_loop_fields(JudgeConfig, dict(doc.get("judge", {})), _judge_owned(run_dir, train),
                                 f"{path} [judge]")
    judge_raw.setdefault("generator_model", generate.model)   # the judge checks for self-preference
    # the judgment cache outlives a changed judge setting (its keys hold everything that decides a verdict)
    judge_raw.setdefault("cache", str(run_dir / "cache" / "judge-cache.sqlite"))
    judge = build(JudgeConfig, judge_raw, f"{path} [judge]")
    from prefloop.llm.base import parse_spec

    for spec in list(judge.judges) + ([preflight.judge] if preflight.judge else []):
        try:
            parse_spec(spec)
        except ValueError as exc:
            raise ConfigError(f"{path} [judge].judges: {exc}") from None
    return LoopConfig(path=path, run=run, data=data, split=split, preflight=preflight, generate=generate,
                      train=train, judge=judge, raw=doc)


def _judge_owned(run_dir: Path, train: Any, final_model: str | Path | None = None) -> dict[str, Any]:
    """The judge settings that live in the run folder: the trained model against the SFT model it started from,
    on the held-out prompts."""
    return {"prompts": str(run_dir / "split" / "heldout_prompts.jsonl"),
            "policy": str(final_model or Path(train.output_dir) / "final"),
            "reference": str(train.model),
            "pairs": str(run_dir / "split" / "train.jsonl"),
            "out_dir": str(run_dir / "judge")}


# --------------------------------------------------------------------------------------------------- split

def split_key(prompt: Any) -> str:
    """The split's key for a prompt: a hash of its text, so a prompt is held out whatever id it carries."""
    from prefloop.records import stable_id

    return stable_id("split", prompt)


def choose_heldout(keys: list[str], cfg: SplitSection) -> set[str]:
    """Held-out keys: the first ``n`` by a seeded hash order. Deterministic, independent of input order."""
    from prefloop.records import stable_id

    unique = sorted(set(keys), key=lambda k: stable_id(cfg.seed, k))
    n = round(cfg.heldout_fraction * len(unique))
    n = max(n, min(cfg.heldout_min, len(unique) - 1))
    if cfg.heldout_max:
        n = min(n, cfg.heldout_max)
    n = max(0, min(n, len(unique) - 1))
    return set(unique[:n])


@dataclass
class SplitResult:
    train_pairs: int
    heldout_prompts: int
    heldout_pairs: int
    prompts_without_pairs: int
    leaked: int

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def split_pairs(pairs_path: Path, prompts: list[Any], cfg: SplitSection, out_dir: Path) -> SplitResult:
    """Write ``train.jsonl`` (pairs of training prompts), ``heldout_pairs.jsonl`` (pairs of held-out prompts,
    for the trainer's eval curves only) and ``heldout_prompts.jsonl`` (what the judge answers)."""
    from prefloop.jsonl import write_jsonl
    from prefloop.sources import load_preferences

    pairs, _ = load_preferences(pairs_path, skip_bad=True)
    heldout = choose_heldout([split_key(p.prompt) for p in prompts], cfg)
    train_rows, heldout_rows = [], []
    for pair in pairs:
        (heldout_rows if split_key(pair.prompt) in heldout else train_rows).append(pair.to_json())
    heldout_prompts = [p.to_json() for p in prompts if split_key(p.prompt) in heldout]
    leaked = sum(1 for row in train_rows if split_key(row["prompt"]) in heldout)
    if leaked:  # cannot happen by construction; checked because the whole evaluation rests on it
        raise RuntimeError(f"{leaked} held-out prompts ended up in the training pairs")
    paired = {split_key(p.prompt) for p in pairs}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / "train.jsonl", train_rows)
    write_jsonl(out_dir / "heldout_pairs.jsonl", heldout_rows)
    write_jsonl(out_dir / "heldout_prompts.jsonl", heldout_prompts)
    result = SplitResult(train_pairs=len(train_rows), heldout_prompts=len(heldout_prompts),
                         heldout_pairs=len(heldout_rows),
                         prompts_without_pairs=sum(1 for p in prompts if split_key(p.prompt) not in paired),
                         leaked=leaked)
    (out_dir / "summary.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return result


# ------------------------------------------------------------------------------------------------- stages

class StageFailed(RuntimeError):
    """A stage could not finish; the message says why and what to do. Finished work stays on disk."""


@dataclass
class StageOutcome:
    name: str
    decision: str                   # skip | resume | fresh
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


class Loop:
    """One run of the loop over a config; each stage method returns its outcome or raises ``StageFailed``."""

    def __init__(self, cfg: LoopConfig, console: Any = None):
        from rich.console import Console

        self.cfg = cfg
        self.console = console or Console()
        self.run_dir = cfg.run_dir
        self.state = RunState(self.run_dir)
        self.outcomes: list[StageOutcome] = []
        self.fps: dict[str, str] = {}
        self.warnings: list[str] = []
        self._prompts: list[Any] | None = None

    # -- helpers
    def say(self, text: str) -> None:
        self.console.print(text)

    def prompts(self) -> list[Any]:
        if self._prompts is None:
            from prefloop.sources import load_prompts

            prompts, report = load_prompts(self.cfg.data.prompts, skip_bad=self.cfg.data.skip_bad)
            if self.cfg.data.limit:
                prompts = prompts[: self.cfg.data.limit]
            self._prompts = prompts
        return self._prompts

    def source_identity(self) -> str:
        """The prompt source's content hash (a Hub dataset: its name), or a clear stop when it is missing."""
        source = self.cfg.data.prompts
        if Path(source).exists():
            return file_hash(source)
        if "/" in source and not source.startswith((".", "/")) and not Path(source).suffix:
            return f"hub:{source}"
        raise StageFailed(f"[data] prompts = {source!r}: no such file (looked beside {self.cfg.path} and in the "
                          f"current folder); the comments at the top of {self.cfg.path} say where to get it")

    def _stage(self, name: str, settings: dict[str, Any], inputs: dict[str, str], outputs: list[str],
               work: Any) -> StageOutcome:
        fp = fingerprint(settings, inputs)
        self.fps[name] = fp
        decision = self.state.decide(name, fp)
        if decision == "skip":
            rec = self.state.get(name)
            self.say(f"[green]✓[/green] {name}: up to date (fingerprint {fp}), skipped")
            outcome = StageOutcome(name, "skip", 0.0, dict(rec.info if rec else {}))
            self.outcomes.append(outcome)
            return outcome
        verb = "resuming" if decision == "resume" else "running"
        self.say(f"[bold cyan]▶ {name}[/bold cyan]: {verb} (fingerprint {fp})")
        self.state.start(name, fp, outputs, settings=settings, inputs=inputs)
        start = time.monotonic()
        try:
            info, complete = work(decision)
        except (StageFailed, KeyboardInterrupt):
            raise
        except Exception as exc:  # a stage's own error, said in one line; the traceback goes to a file
            import traceback

            log = self.run_dir / "error.log"
            log.write_text(traceback.format_exc())
            raise StageFailed(f"{name}: {type(exc).__name__}: {exc} (traceback in {log})") from exc
        seconds = time.monotonic() - start
        info = {**info, "seconds": round(seconds, 1)}
        if complete:
            self.state.finish(name, info)
        else:
            rec = self.state.get(name)
            rec.info = info
            self.state.save()
        outcome = StageOutcome(name, decision, seconds, info)
        self.outcomes.append(outcome)
        self.say(f"[green]✓[/green] {name}: done in {seconds:.0f} s" if complete else
                 f"[yellow]![/yellow] {name}: finished with gaps in {seconds:.0f} s (rerun to retry them)")
        return outcome

    # -- generate
    def generate(self) -> StageOutcome:
        g = self.cfg.generate
        settings = {"identity": g.identity(), "limit": g.limit or self.cfg.data.limit, "skip_bad": g.skip_bad}
        inputs = {"prompts": self.source_identity()}
        out = Path(g.output)

        def work(decision: str) -> tuple[dict[str, Any], bool]:
            from generator.run import generate

            cfg = replace(g, limit=g.limit or self.cfg.data.limit)
            summary = generate(cfg, console=self.console)
            info = _as_dict(summary)
            if info.get("interrupted"):
                raise KeyboardInterrupt
            written = _count_lines(out)
            info["pairs_total"] = written
            if written == 0:
                raise StageFailed(f"generate wrote no pairs (see {out}.failures.jsonl); check the model "
                                  f"{g.model!r} and the prompts {self.cfg.data.prompts!r}")
            complete = not info.get("failed") and not info.get("aborted")
            if not complete:
                self.warn(f"generation left {info.get('failed')} prompt(s) failed; training uses the {written} "
                          f"pairs written; run again to retry the failures")
            return info, complete

        return self._stage("generate", settings, inputs, ["generate", "generate/pairs.jsonl"], work)

    # -- split
    def split(self) -> StageOutcome:
        pairs = Path(self.cfg.generate.output)
        settings = {"split": to_dict(self.cfg.split), "limit": self.cfg.data.limit}
        inputs = {"pairs": file_hash(pairs), "prompts": self.source_identity()}

        def work(decision: str) -> tuple[dict[str, Any], bool]:
            result = split_pairs(pairs, self.prompts(), self.cfg.split, self.run_dir / "split")
            if result.train_pairs == 0:
                raise StageFailed("no training pairs after holding out prompts: add prompts or lower "
                                  "[split] heldout_fraction")
            if result.heldout_prompts == 0:
                raise StageFailed("no held-out prompts: add prompts (the judge needs prompts training never saw)")
            self.say(f"  {result.train_pairs} training pairs, {result.heldout_prompts} held-out prompts "
                     f"({result.heldout_pairs} held-out pairs for eval curves only)")
            return result.to_json(), True

        return self._stage("split", settings, inputs,
                           ["split", "split/train.jsonl", "split/heldout_prompts.jsonl"], work)

    # -- preflight
    def preflight(self) -> StageOutcome | None:
        p = self.cfg.preflight
        if not p.enabled:
            return None
        judge_spec = p.judge or self.cfg.judges[0]
        heldout = self.run_dir / "split" / "heldout_prompts.jsonl"
        settings = {"preflight": to_dict(p), "judge": judge_spec, "sft": self.cfg.train.model,
                    "verdict": PREFLIGHT_RULES}
        inputs = {"heldout": file_hash(heldout), "sft": model_identity(self.cfg.train.model)}

        def work(decision: str) -> tuple[dict[str, Any], bool]:
            info = run_preflight(self.cfg, heldout, judge_spec, self.run_dir / "preflight", self.console)
            return info, True

        outcome = self._stage("preflight", settings, inputs, ["preflight", "preflight/summary.json"], work)
        for line in outcome.info.get("warnings", []):
            self.warn(line)
        if outcome.info.get("warnings") and p.stop_on_warning:
            raise StageFailed("preflight: the SFT model does not look ready for DPO (see above); "
                              "stopping because [preflight] stop_on_warning = true")
        return outcome

    # -- train
    def train(self) -> StageOutcome:
        t = self.cfg.train
        settings = {k: v for k, v in to_dict(t).items() if k not in RUNTIME_ONLY["train"]}
        inputs = {"train": file_hash(self.run_dir / "split" / "train.jsonl"),
                  "eval": file_hash(self.run_dir / "split" / "heldout_pairs.jsonl"),
                  "model": model_identity(t.model)}

        def work(decision: str) -> tuple[dict[str, Any], bool]:
            from trainer.dpo import train

            eval_path = self.run_dir / "split" / "heldout_pairs.jsonl"
            cfg = replace(t, resume=(decision == "resume"),
                          eval_data=t.eval_data if _count_lines(eval_path) else None)
            result = train(cfg, console=self.console)
            info = _as_dict(result)
            reason = str(info.get("stopped_reason", ""))
            if "interrupt" in reason.lower():
                raise KeyboardInterrupt
            final = Path(info.get("final_model_dir") or Path(t.output_dir) / "final")
            if not (final / "config.json").exists():
                raise StageFailed(f"training ended ({reason or 'no reason given'}) without a final model in {final}")
            info["final_model_dir"] = str(final)
            return info, True

        return self._stage("train", settings, inputs, ["train", "train/final/config.json"], work)

    # -- judge
    def judge(self) -> StageOutcome:
        train_rec = self.state.get("train")
        final = (train_rec.info if train_rec else {}).get("final_model_dir")
        cfg = replace(self.cfg.judge, **_judge_owned(self.run_dir, self.cfg.train, final))
        settings = {k: v for k, v in to_dict(cfg).items() if k not in RUNTIME_ONLY["judge"] | {"policy", "pairs"}}
        inputs = {"trained": self.fps.get("train") or (train_rec.fingerprint if train_rec else ""),
                  "heldout": file_hash(self.run_dir / "split" / "heldout_prompts.jsonl"),
                  "reference": model_identity(self.cfg.train.model)}

        def work(decision: str) -> tuple[dict[str, Any], bool]:
            from judge.evaluate import evaluate

            result = evaluate(cfg, console=self.console)
            results = result.results
            runs = [j.get("run") or {} for j in (results.get("judges") or {}).values()]
            if any(r.get("interrupted") for r in runs):
                raise KeyboardInterrupt
            info = {k: results.get(k) for k in ("win_rate", "ci_low", "ci_high", "wins", "ties", "losses", "n",
                                                "lc_win_rate", "judge")}
            info["per_judge"] = {name: {k: j.get(k) for k in ("win_rate", "ci_low", "ci_high", "n")}
                                 for name, j in (results.get("judges") or {}).items()}
            if not result.complete:
                self.warn("judging is incomplete (a judge call failed); run the same command again to finish it "
                          "from the cache")
            return info, bool(result.complete)

        return self._stage("judge", settings, inputs, ["judge", "judge/results.json"], work)

    def warn(self, text: str) -> None:
        from rich.markup import escape

        if text not in self.warnings:
            self.warnings.append(text)
        self.say(f"[bold yellow]warning:[/bold yellow] {escape(text)}")

    # -- all of it
    def run(self) -> int:
        from prefloop.loop_report import write_run_report

        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.toml").write_bytes(self.cfg.path.read_bytes())
        self.say(f"[bold]prefloop run[/bold] {self.cfg.path} → {self.run_dir}")
        started = time.monotonic()
        failed: str | None = None
        try:
            self.generate()
            self.split()
            self.preflight()
            self.train()
            self.judge()
        except StageFailed as exc:
            failed = str(exc)
            from rich.markup import escape

            self.say(f"[bold red]stopped:[/bold red] {escape(str(exc))}")
        finally:
            paths = write_run_report(self.run_dir, self.cfg, warnings=self.warnings, failed=failed)
        total = time.monotonic() - started
        self._closing(paths, total)
        return 1 if failed else 0

    def _closing(self, paths: tuple[Path, Path], seconds: float) -> None:
        rec = self.state.get("judge")
        for name, i in ((rec.info if rec else {}).get("per_judge") or {}).items():
            self.say(f"[bold]held-out win rate[/bold] ({name}): {_pct(i.get('win_rate'))} "
                     f"[95% CI {_pct(i.get('ci_low'))} – {_pct(i.get('ci_high'))}] over n={i.get('n')} prompts "
                     f"the model never trained on")
        self.say(f"report: {paths[0]}  (and {paths[1].name})   total {seconds / 60:.1f} min")
        if any(parse_backend(s) == "local" for s in [self.cfg.generate.model, *self.cfg.judges]):
            from rich.markup import escape

            self.say(f"[bold]next:[/bold] {escape(HOW_TO_SCALE_UP)}")


def parse_backend(spec: str) -> str:
    from prefloop.llm.base import parse_spec

    return parse_spec(spec).backend


def _pct(value: Any) -> str:
    return "—" if not isinstance(value, (int, float)) else f"{100 * value:.1f}%"


def _as_dict(obj: Any) -> dict[str, Any]:
    """A stage's summary object as a JSON-able dict (dataclass, ``to_json()`` or a plain dict)."""
    if obj is None:
        return {}
    if isinstance(obj, dict):
        data = dict(obj)
    elif hasattr(obj, "to_json"):
        data = obj.to_json()
    elif hasattr(obj, "__dataclass_fields__"):
        import dataclasses

        data = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    else:
        data = dict(vars(obj))
    return json.loads(json.dumps(data, default=_jsonable))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__dataclass_fields__"):
        return _as_dict(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


# ---------------------------------------------------------------------------------------------- preflight

def run_preflight(cfg: LoopConfig, heldout_path: Path, judge_spec: str, out_dir: Path, console: Any
                  ) -> dict[str, Any]:
    """Score the SFT model's answers to a few held-out prompts next to the dataset's answers; warn when the
    model looks like it cannot do the task yet (a base model, or the wrong prompt format)."""
    import asyncio

    from judge.cache import JudgeCache
    from judge.scoring import score_answer
    from prefloop.jsonl import read_jsonl, write_jsonl
    from prefloop.llm import make_client
    from prefloop.llm.base import GenOptions
    from prefloop.records import PromptRecord

    rows = read_jsonl(heldout_path)[: cfg.preflight.prompts]
    prompts = [PromptRecord(id=r["id"], prompt=r["prompt"], known_good=r.get("known_good", r.get("reference")), meta=r.get("meta") or {})
               for r in rows]
    sft = make_client("local:" + str(cfg.train.model))
    options = GenOptions(temperature=0.0, max_tokens=cfg.preflight.max_tokens)
    answers = sft.generate_batch([p.prompt for p in prompts], options)
    judge = make_client(judge_spec) if judge_spec != "local:" + str(cfg.train.model) else sft

    # a score is a number: a short reply budget keeps a rambling small judge from writing an essay
    score_options = GenOptions(temperature=cfg.judge.judge_temperature, seed=cfg.judge.judge_seed,
                               max_tokens=min(64, cfg.judge.judge_max_tokens), num_ctx=cfg.judge.judge_num_ctx)

    async def score_all(cache: Any) -> list[tuple[Any, Any]]:
        async def one(p: PromptRecord, answer: str) -> tuple[Any, Any]:
            mine = await score_answer(judge, p.prompt, answer, reference=p.known_good, cache=cache,
                                      options=score_options)
            # the dataset's own answer under the same prompt: the judge's ceiling on this task
            ref = await score_answer(judge, p.prompt, p.known_good, reference=p.known_good, cache=cache,
                                     options=score_options) if p.known_good else None
            return mine, ref

        try:
            await judge.preflight()
            # all at once: a served judge takes them in parallel, a local one in a single batch
            return list(await asyncio.gather(*(one(p, a) for p, a in zip(prompts, answers))))
        finally:  # close in the loop that opened the connections
            await _aclose(judge, sft)

    with JudgeCache(cfg.judge.cache_path) as cache:
        scores = asyncio.run(score_all(cache))
    table = []
    for p, answer, (mine, ref) in zip(prompts, answers, scores):
        table.append({"id": p.id, "prompt": p.prompt, "answer": answer, "reference": p.known_good,
                      "score": getattr(mine, "value", None), "reference_score": getattr(ref, "value", None)})
    write_jsonl(out_dir / "answers.jsonl", table)
    info = preflight_verdict(table, cfg.preflight, judge_spec)
    (out_dir / "summary.json").write_text(json.dumps(info, indent=2) + "\n")
    console.print(f"  SFT answers: mean score {_num(info['mean_score'])}/100 (dataset answers "
                  f"{_num(info['mean_reference_score'])}), {info['empty']} empty, {info['echo']} echo the prompt")
    return info


async def _aclose(*clients: Any) -> None:
    for client in dict.fromkeys(clients):
        await client.aclose()


def _num(value: Any) -> str:
    return "—" if value is None else f"{value:.0f}"


def preflight_verdict(rows: list[dict[str, Any]], p: PreflightSection, judge_spec: str) -> dict[str, Any]:
    """Numbers and warnings from the preflight answers. Warns on a low judge score (absolute, or relative to
    the dataset's own answers under the same judge) and on the signs of a base model: empty answers and answers
    that continue the prompt instead of answering it."""
    from prefloop.records import prompt_text

    scores = [r["score"] for r in rows if isinstance(r.get("score"), (int, float))]
    refs = [r["reference_score"] for r in rows if isinstance(r.get("reference_score"), (int, float))]
    mean = sum(scores) / len(scores) if scores else None
    mean_ref = sum(refs) / len(refs) if refs else None
    empty = sum(1 for r in rows if not str(r.get("answer") or "").strip())
    echo = sum(1 for r in rows if _echoes(prompt_text(r["prompt"]), str(r.get("answer") or "")))
    warnings = []
    why = []
    # a judge that gives the dataset's own answers a low score cannot tell good from bad on this task: its low
    # score for the model says nothing, so the check is called inconclusive rather than blamed on the model
    judge_can_tell = mean_ref is None or mean_ref >= p.min_score
    if mean is not None and judge_can_tell and mean < p.min_score:
        why.append(f"its answers score {mean:.0f}/100 on average (threshold {p.min_score:.0f})")
    if mean is not None and judge_can_tell and mean_ref and mean < p.min_ratio * mean_ref:
        why.append(f"that is under {p.min_ratio:.0%} of the {mean_ref:.0f}/100 the same judge gives the dataset's "
                   f"own answers")
    if rows and (empty + echo) * 2 >= len(rows):
        why.append(f"{empty} of {len(rows)} answers are empty and {echo} continue the prompt instead of answering")
    if why:
        warnings.append(
            f"preflight: the SFT model may not be able to do the task yet: {'; '.join(why)} "
            f"(judge {judge_spec}, {len(rows)} held-out prompts). DPO shapes style and preference; it does not "
            f"teach the task. If this is a base model, fine-tune it first (`prefloop sft`), or check the prompt "
            f"format matches what it was tuned on.")
    if mean_ref is not None and not judge_can_tell:
        warnings.append(f"preflight inconclusive: the judge {judge_spec} gives the dataset's own answers only "
                        f"{mean_ref:.0f}/100 (the SFT model's: {_num(mean)}), so it cannot tell whether the model "
                        f"can do the task; set a stronger [preflight] judge (e.g. \"ollama:llama3.1:8b\")")
    if not scores and rows:
        warnings.append(f"preflight: the judge {judge_spec} gave no usable score for {len(rows)} answers; "
                        f"the check could not run")
    return {"n": len(rows), "scored": len(scores), "mean_score": mean, "mean_reference_score": mean_ref,
            "empty": empty, "echo": echo, "warnings": warnings, "judge": judge_spec}


def _echoes(prompt: str, answer: str) -> bool:
    """An answer that repeats a long stretch of the prompt: what base models do with an instruction."""
    answer = " ".join(answer.split())
    prompt = " ".join(prompt.split())
    if len(answer) < 40 or len(prompt) < 40:
        return False
    return any(prompt[i:i + 40] in answer for i in range(0, len(prompt) - 40, 20))


# --------------------------------------------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="the loop's TOML config (try data/quickstart.toml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one setting, e.g. --set train.beta=0.2 (repeatable)")
    parser.add_argument("--out", help="run folder (default: [run] out_dir, else runs/<config name>)")
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from the run folder")


def main(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"run.out_dir={json.dumps(args.out)}")
    try:
        cfg = load_loop_config(args.config, overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.report_only:
        from prefloop.loop_report import write_run_report

        html_path, _ = write_run_report(cfg.run_dir, cfg)
        print(html_path)
        return 0
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars for every model load drown the stage lines
    if cfg.run.threads:
        import torch

        torch.set_num_threads(cfg.run.threads)
    return Loop(cfg).run()
