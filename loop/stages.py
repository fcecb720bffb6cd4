"""``prefloop run``: the stages of one config, in one run folder.

    generate -> split -> preflight -> train -> [export] -> judge -> report

``[export]`` runs only when its ``ollama`` names a model: the trained model and its reference are created on the
Ollama server and the judge asks the server for both sides' answers.

Every stage writes under the run folder and is fingerprinted (``prefloop.fingerprint``): a stage whose outputs
are complete for the same inputs and settings is skipped, a killed one resumes (the generator and judge skip
finished ids, the trainer continues from its newest checkpoint), and a changed setting reruns that stage and what
depends on it, not what comes before. A stage's settings are every field of its config not marked ``runtime``
(``stage_settings``), so a new setting reruns the stage when it changes unless it is marked.

Each stage returns a ``prefloop.stage.StageResult``; ``complete`` finishes the stage, ``failed`` keeps it
unfinished (a rerun retries what failed), ``interrupted`` stops the loop with what is done on disk.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from judge.preflight import RULES as PREFLIGHT_RULES
from loop.config import STAGES, LoopConfig, judge_owned, stage_paths
from prefloop.config import fingerprinted
from prefloop.errors import RunFailed
from prefloop.files import count_lines
from prefloop.fingerprint import RunState, file_hash, fingerprint, model_identity
from prefloop.records import PromptRecord
from prefloop.stage import StageResult

class StageFailed(RunFailed, RuntimeError):
    """A stage could not finish; the message says why and what to do. Finished work stays on disk."""


@dataclass
class StageOutcome:
    name: str
    decision: str                   # skip | resume | fresh
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


def stage_settings(cfg: LoopConfig) -> dict[str, dict[str, Any]]:
    """What each stage's fingerprint is made of, besides its inputs: every setting that changes its outputs."""
    return {
        "generate": {"identity": cfg.generate.identity()},
        "split": {"split": fingerprinted(cfg.split), "data": fingerprinted(cfg.data)},
        "preflight": {"preflight": fingerprinted(cfg.preflight), "judge": preflight_judge(cfg),
                      "sft": cfg.train.model, "rules": PREFLIGHT_RULES, "prompt_format": cfg.judge.prompt_format,
                      "judging": {k: getattr(cfg.judge, k) for k in ("judge_temperature", "judge_seed",
                                                                      "judge_max_tokens", "judge_num_ctx")}},
        "train": fingerprinted(cfg.train),
        "export": fingerprinted(cfg.export),
        "judge": fingerprinted(cfg.judge),
    }


def preflight_judge(cfg: LoopConfig) -> str | None:
    """Who scores the SFT model's answers before training: ``[preflight] judge``, else the first model judge (a
    person judges pairs, not 0-100 scores); None when every judge is a person."""
    return cfg.preflight_judge()


class Loop:
    """One run of the loop over a config; each stage method returns its outcome or raises ``StageFailed``."""

    def __init__(self, cfg: LoopConfig, console: Any = None):
        from rich.console import Console

        self.cfg = cfg
        self.console = console or Console()
        self.run_dir = cfg.run_dir
        self.paths = stage_paths(self.run_dir)
        self.state = RunState(self.run_dir)
        self.settings = stage_settings(cfg)
        self.outcomes: list[StageOutcome] = []
        self.fps: dict[str, str] = {}
        self.warnings: list[str] = []
        self.gaps: list[str] = []   # stages that finished incomplete: the run is not done (exit 1)
        self._prompts: list[PromptRecord] | None = None

    # -- helpers
    def stop(self, text: str) -> None:
        """Stop the run here, saying why (finished work stays on disk)."""
        raise StageFailed(text)

    def say(self, text: str) -> None:
        self.console.print(text)

    def warn(self, text: str) -> None:
        from rich.markup import escape

        if text not in self.warnings:
            self.warnings.append(text)
        self.say(f"[bold yellow]warning:[/bold yellow] {escape(text)}")

    def prompts(self) -> list[PromptRecord]:
        if self._prompts is None:
            from prefloop.sources import load_prompts

            self._prompts, _ = load_prompts(self.cfg.data.prompts, skip_bad=self.cfg.data.skip_bad,
                                            limit=self.cfg.data.limit)
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

    def _stage(self, name: str, inputs: dict[str, str], outputs: list[str],
               work: Callable[[str], StageResult], resumable: dict[str, str] | None = None) -> StageOutcome:
        settings = self.settings[name]
        fp = fingerprint(settings, inputs)
        self.fps[name] = fp
        decision = self.state.decide(name, fp, resumable)
        if decision == "skip":
            rec = self.state.get(name)
            self.say(f"[green]✓[/green] {name}: up to date (fingerprint {fp}), skipped")
            outcome = StageOutcome(name, "skip", 0.0, dict(rec.info if rec else {}))
            self.outcomes.append(outcome)
            return outcome
        verb = "resuming" if decision == "resume" else "running"
        self.say(f"[bold cyan]▶ {name}[/bold cyan]: {verb} (fingerprint {fp})")
        self.state.start(name, fp, outputs, settings=settings, inputs=inputs, resumable=resumable)
        start = time.monotonic()
        try:
            result = work(decision)
        except StageFailed as exc:
            self._failed(name, str(exc))
            raise
        except Exception as exc:  # a stage's own error, said in one line; the traceback goes to a file
            import traceback

            log = self.run_dir / "error.log"
            log.write_text(traceback.format_exc())
            self._failed(name, f"{type(exc).__name__}: {exc}")
            raise StageFailed(f"{name}: {type(exc).__name__}: {exc} (traceback in {log})") from exc
        if result.interrupted:
            raise KeyboardInterrupt
        seconds = time.monotonic() - start
        info = {**result.to_json(), "seconds": round(seconds, 1)}
        if result.complete:
            self.state.finish(name, info)
        else:
            rec = self.state.get(name)
            rec.info = info
            self.state.save()
            self.gaps.append(name)
        outcome = StageOutcome(name, decision, seconds, info)
        self.outcomes.append(outcome)
        self.say(f"[green]✓[/green] {name}: done in {seconds:.0f} s" if result.complete else
                 f"[yellow]![/yellow] {name}: finished with gaps in {seconds:.0f} s (rerun to retry them)")
        return outcome

    def _failed(self, name: str, reason: str) -> None:
        """``state.json`` says the stage failed (not ``running`` forever); a rerun resumes it as before."""
        rec = self.state.get(name)
        if rec is not None:
            rec.status, rec.info = "failed", {**rec.info, "reason": reason[:500]}
            self.state.save()

    # -- generate
    def generate(self) -> StageOutcome:
        g = self.cfg.generate

        def work(decision: str) -> StageResult:
            from generator.run import generate

            result = generate(g, console=self.console)
            if result.interrupted:
                return result
            if result.total_in_output == 0:
                raise StageFailed(f"generate wrote no pairs (see {g.output}.failures.jsonl); check the model "
                                  f"{g.model!r} and the prompts {self.cfg.data.prompts!r}")
            if not result.complete:
                self.warn(f"generation left {result.failed} prompt(s) failed; training uses the "
                          f"{result.total_in_output} pairs written; run again to retry the failures")
            return result

        # the prompts are resumable: a new prompt is one more pair to generate, a removed one leaves the split;
        # only a change of what shapes a pair (the settings) starts generation over
        return self._stage("generate", {}, ["generate", "generate/pairs.jsonl"], work,
                           resumable={"prompts": self.source_identity()})

    # -- split
    def split(self) -> StageOutcome:
        from loop.split import split_pairs

        def work(decision: str) -> StageResult:
            result = split_pairs(self.paths.pairs, self.prompts(), self.cfg.split, self.paths.split)
            if result.train_pairs == 0:
                raise StageFailed("no training pairs after holding out prompts: add prompts or lower "
                                  "[split] heldout_fraction")
            if result.heldout_prompts == 0:
                raise StageFailed("no held-out prompts: add prompts (the judge needs prompts training never saw)")
            self.say(f"  {result.train_pairs} training pairs, {result.heldout_prompts} held-out prompts "
                     f"({result.heldout_pairs} held-out pairs for eval curves and judge validation)")
            return result

        inputs = {"pairs": file_hash(self.paths.pairs), "prompts": self.source_identity()}
        return self._stage("split", inputs, ["split", "split/train.jsonl", "split/heldout_prompts.jsonl"], work)

    # -- preflight
    def preflight(self) -> StageOutcome | None:
        p = self.cfg.preflight
        judge_spec = preflight_judge(self.cfg)
        if not p.enabled:
            return None
        if judge_spec is None:
            self.say("  preflight: skipped (every judge is a person; set [preflight] judge to run it)")
            return None

        def work(decision: str) -> StageResult:
            from judge.preflight import run_preflight
            from prefloop.sources import load_prompts

            heldout, _ = load_prompts(self.paths.heldout_prompts)
            return run_preflight(p, self.cfg.judge, self.cfg.train.model, heldout, judge_spec,
                                 self.paths.preflight, self.console)

        inputs = {"heldout": file_hash(self.paths.heldout_prompts), "sft": model_identity(self.cfg.train.model)}
        outcome = self._stage("preflight", inputs, ["preflight", "preflight/summary.json"], work)
        for line in outcome.info.get("warnings", []):
            self.warn(line)
        if outcome.info.get("warnings") and p.stop_on_warning:
            raise StageFailed("preflight: the SFT model does not look ready for DPO (see above); "
                              "stopping because [preflight] stop_on_warning = true")
        return outcome

    # -- train
    def train(self) -> StageOutcome:
        t = self.cfg.train
        inputs = {"train": file_hash(self.paths.train_pairs), "eval": file_hash(self.paths.heldout_pairs),
                  "model": model_identity(t.model)}
        return self.train_stage("train", t, self.paths, inputs)

    def train_stage(self, name: str, t: Any, paths: Any, inputs: dict[str, str]) -> StageOutcome:
        """Train ``t`` into ``paths.train`` as stage ``name`` (the loop's train stage, and each round's)."""

        def work(decision: str) -> StageResult:
            from trainer.train import train  # the objective [train] objective names

            cfg = replace(t, resume=(decision == "resume"), overwrite=True,  # the run folder's state decides
                          eval_data=t.eval_data if count_lines(self.paths.heldout_pairs) else None)
            result = train(cfg, console=self.console)
            if result.complete and not (paths.final / "config.json").exists():
                raise StageFailed(f"training ended without a final model in {paths.final}")
            if result.status == "failed":
                raise StageFailed(f"training stopped: {result.reason}")
            return result

        rel = paths.train.relative_to(self.run_dir).as_posix()
        return self._stage(name, inputs, [rel, f"{rel}/final/config.json"], work)

    # -- export
    def final_model(self) -> str | None:
        train_rec = self.state.get("train")
        return ((train_rec.info if train_rec else {}).get("outputs") or {}).get("model")

    def export(self) -> StageOutcome | None:
        e = self.cfg.export
        if not e.ollama:
            return None

        def work(decision: str) -> StageResult:
            from loop.export import export_run

            return export_run(e, self.final_model() or str(self.paths.final), self.cfg.train.model,
                              self.paths.export, self.say)

        inputs = {"trained": self.fps.get("train") or "", "reference": model_identity(self.cfg.train.model)}
        return self._stage("export", inputs, ["export", "export/policy/export.json",
                                              "export/reference/export.json"], work)

    # -- judge
    def judge(self) -> StageOutcome:
        train_rec = self.state.get("train")
        cfg = replace(self.cfg.judge, **judge_owned(self.paths, self.cfg.train, self.final_model(),
                                                    export=self.cfg.export))
        inputs = {"trained": self.fps.get("train") or (train_rec.fingerprint if train_rec else ""),
                  "heldout": file_hash(self.paths.heldout_prompts),
                  "validation": file_hash(self.paths.heldout_pairs),
                  "reference": model_identity(self.cfg.train.model)}
        if self.cfg.export.ollama:  # the answers come from the exported models: a new export, new answers
            inputs["export"] = self.fps.get("export", "")
        return self.judge_stage("judge", cfg, inputs, self.paths.judge)

    def judge_stage(self, name: str, cfg: Any, inputs: dict[str, str], folder: Path) -> StageOutcome:
        """Judge ``cfg`` into ``folder`` as stage ``name`` (the loop's judge stage, and each round's verdicts)."""

        def work(decision: str) -> StageResult:
            from judge.evaluate import evaluate

            result = evaluate(cfg, console=self.console)
            if not result.complete and not result.interrupted:
                self.warn(f"judging is not complete: {result.reason}")
            return result

        rel = folder.relative_to(self.run_dir).as_posix()
        return self._stage(name, inputs, [rel, f"{rel}/results.json"], work)

    def rounds(self) -> None:
        """Rounds 2..N (``loop.rounds``) after the first pass, when ``[run] rounds`` asks for them."""
        if self.cfg.run.rounds > 1:
            from loop.rounds import Rounds

            Rounds(self).run()

    # -- before any work
    def check(self) -> None:
        """Everything the stages still to run will need (``loop.checks``); ``SetupError`` when something is
        missing. The prompts are read first: a broken prompts file stops here, before anything is moved."""
        from loop.checks import SetupError, check_run, needed_stages
        from prefloop.records import RecordError
        from prefloop.sources import DataError

        try:
            identity = self.source_identity()
            self.prompts()
        except (DataError, RecordError, StageFailed) as exc:
            raise SetupError(f"[data] prompts: {exc}") from None
        check_run(self.cfg, needed_stages(self.cfg, self.state, self.settings, identity))

    # -- all of it
    def run(self) -> int:
        """The stages in order, holding the run folder's lock (two runs on one folder would interleave their
        outputs). Exit codes: 0 done, 1 a stage stopped, 2 the setup is wrong (nothing was run)."""
        from rich.markup import escape

        from loop.checks import SetupError
        from prefloop.files import Busy, Lock
        from prefloop.flags import fail

        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            with Lock(self.run_dir, folder=True):
                self.check()
                return self._run_stages(escape)
        except (Busy, SetupError) as exc:
            return fail(exc)

    def _run_stages(self, escape: Callable[[str], str]) -> int:
        from loop.report import write_run_report

        (self.run_dir / "config.toml").write_bytes(self.cfg.path.read_bytes())
        self.say(f"[bold]prefloop run[/bold] {self.cfg.path} → {self.run_dir}")
        started = time.monotonic()
        failed: str | None = None
        try:
            for name in STAGES:
                getattr(self, name)()
            self.rounds()
        except StageFailed as exc:
            failed = str(exc)
            self.say(f"[bold red]stopped:[/bold red] {escape(str(exc))}")
        finally:
            paths = write_run_report(self.run_dir, self.cfg, warnings=self.warnings, failed=failed)
        self._closing(paths, time.monotonic() - started)
        if self.gaps and not failed:
            self.say(f"[yellow]not complete:[/yellow] {', '.join(self.gaps)} finished with gaps; run the same "
                     "command again to retry them (finished work is kept)")
        return 1 if failed or self.gaps else 0

    def _closing(self, paths: tuple[Path, Path], seconds: float) -> None:
        from rich.markup import escape

        from judge.report import headline, order_lines
        from judge.results import JudgeResults
        from loop.report import HOW_TO_SCALE_UP, held_out_reward_accuracy, rounds_hint, uses_local_models

        from loop.rounds import curve, round_paths

        best = (curve(self.run_dir) or {}).get("best", 1) if self.cfg.run.rounds > 1 else 1
        result_paths = round_paths(self.run_dir, best)   # the best round is the run's result
        results = JudgeResults.read(result_paths.judge / "results.json")
        if results is not None:
            which = f" of round {best}, the best" if best != 1 or self.cfg.run.rounds > 1 else ""
            self.say(f"[bold]held-out win rate and skill{which}[/bold] ({results.n_prompts} prompts the model never "
                     "trained on):")
            for line in headline(results, held_out_reward_accuracy(result_paths.train)).plain() + \
                    order_lines(results):
                self.say(f"  {escape(line)}")
            hint = rounds_hint(self.cfg.run.rounds, results)
            if hint:
                self.say(f"[bold]next:[/bold] {escape(hint)}")
        self.say(f"report: {paths[0]}  (and {paths[1].name})   total {seconds / 60:.1f} min")
        if uses_local_models(self.cfg):
            self.say(f"[bold]next:[/bold] {escape(HOW_TO_SCALE_UP)}")
