"""The loop's config: its own sections plus each stage's settings, read and checked before any work.

One TOML file holds ``[run]``, ``[data]``, ``[split]``, ``[preflight]``, the optional ``[export]`` and the stages'
own sections (``[generate]``, ``[train]``, ``[judge]``, read by the same dataclasses their commands use). The loop fills in what
lives in the run folder (every stage's input and output paths) and what ``[data]`` says about the prompts; setting
those in a stage's section is an error that says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from generator.config import GenerateConfig
from judge.config import JudgeConfig
from judge.preflight import PreflightConfig
from prefloop.config import (ConfigError, apply_overrides, at_least, build, check_choices, check_sections, load_toml,
                             section, setting)
from prefloop.export import QUANTIZE
from prefloop.files import count_lines
from prefloop.llm.base import ClientSpec, parse_spec
from prefloop.models import DTYPES, normalize_dtype
from trainer.config import TrainConfig


@section("run")
@dataclass
class RunSection:
    name: str = setting("", "shown in the report; default: the config file's name")
    output_dir: str = setting("", "the run folder; default: runs/<config name> (relative to the current folder)",
                              runtime=True, was=("out_dir",))
    threads: int = setting(0, "torch threads for local models and training (0: torch's default)", runtime=True)
    rounds: int = setting(1, "rounds of the loop: 1 is one pass; N > 1 trains again on the trained model's own "
                             "answers, judged ([rounds]; loop/rounds.py)")

    def __post_init__(self) -> None:
        at_least(self, "run.", 0, "threads")
        at_least(self, "run.", 1, "rounds")


@section("data")
@dataclass
class DataSection:
    prompts: str = setting("data/prompts/quickstart.json", "Alpaca JSON/JSONL, JSONL with 'prompt', .txt or a "
                                                           "dataset", runtime=True)
    limit: int = setting(0, "first N prompts only (0: all)")
    skip_bad: bool = setting(False, "skip malformed prompt rows (counted) instead of stopping")

    def __post_init__(self) -> None:
        at_least(self, "data.", 0, "limit")


@section("split")
@dataclass
class SplitSection:
    heldout_fraction: float = setting(0.2, "share of prompts held out for judging; they never reach training")
    heldout_min: int = setting(4, "at least this many held-out prompts (when there are enough prompts)")
    heldout_max: int = setting(200, "at most this many (judging costs grow with it); 0: no cap")
    seed: int = setting(0, "change to draw another held-out set")

    def __post_init__(self) -> None:
        at_least(self, "split.", 0, "heldout_min", "heldout_max")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ConfigError(f"split.heldout_fraction: must be in (0, 1), got {self.heldout_fraction}")


@section("export")
@dataclass
class ExportConfig:
    """``prefloop export`` and the loop's optional ``[export]`` stage: the model as a folder Ollama imports, created
    on the server when ``ollama`` names it. In the loop, the trained model and its reference (the SFT model) are
    both exported, so the judge stage asks the server for both sides' answers, with the same runtime and
    quantization."""

    model: str = setting("", "the model to export: a folder (a LoRA adapter is merged first), .gguf or smollm2",
                         runtime=True, flag=False)
    ollama: str = setting("", "the name to create on the Ollama server ('': write the export folder only)")
    host: str = setting("", "the Ollama server (default: OLLAMA_HOST, else http://127.0.0.1:11434); the weights "
                            "are sent there and nowhere else")
    quantize: str = setting("", "quantize on the server ('': keep bf16)", choices=("",) + QUANTIZE)
    dtype: str = setting("bf16", "dtype of the exported weights", choices=DTYPES)
    adapter: bool = setting(False, "create the LoRA adapter over its base on the server (llama/gemma2 bases, plain "
                                   "LoRA) instead of the merged model")
    base: str = setting("", "with --adapter: the base model's name on the server")
    reference: str = setting("", "prefloop run: the name for the exported reference model (default "
                                 "<ollama>-reference)", flag=False)
    output_dir: str = setting("", "the export folder (default: exports/<ollama name or model folder name>)",
                              runtime=True, flag="--output", short="-o")
    verify: bool = setting(True, "after creating, check /api/show and one short chat reply", runtime=True)
    timeout_s: float = setting(600.0, "seconds the server may stay silent on one request", runtime=True,
                               flag="--timeout")
    quiet: bool = setting(False, "no progress output", runtime=True)

    def __post_init__(self) -> None:
        self.dtype = normalize_dtype(self.dtype)
        check_choices(self, "export.")
        if self.timeout_s <= 0:
            raise ConfigError(f"export.timeout_s: must be > 0 seconds, got {self.timeout_s}")

    @property
    def reference_name(self) -> str:
        return self.reference or (f"{self.ollama}-reference" if self.ollama else "")

    def served(self, name: str) -> str:
        """The client spec of a model this export created (with its host when one is set)."""
        return f"ollama:{name}" + (f"@{self.host}" if self.host else "")


@section("rounds")
@dataclass
class RoundsSection:
    """``[rounds]``: how rounds 2..N sample, pair, train and stop (``[run] rounds`` sets N)."""

    samples: int = setting(4, "answers the previous round's model gives to each prompt")
    temperature: float = setting(0.8, "their sampling temperature")
    seed: int = setting(0, "sampling seed (round k samples with seed + 1000·k), and the prompt slices' shuffle")
    prompts: str = setting("fresh", "fresh: a new slice of the training prompts per round | all: every training "
                                    "prompt each round", choices=("fresh", "all"))
    pairing: str = setting("rank", "rank: the judge scores the samples, best against worst (ties dropped) | "
                                   "contrast: the writer's answer chosen, the model's own rejected",
                           choices=("rank", "contrast"))
    judge: str = setting("", "who ranks the samples (default: the first [judge] judge that is not a person); "
                             "python:MODULE:FUNCTION and reward:PATH need no server")
    reference: str = setting("previous", "the reference of round k's DPO: previous (the round k-1 model, the "
                                         "iterative-DPO standard) | sft (the SFT model, train.model, every round)",
                             choices=("previous", "sft"))
    min_kept: float = setting(0.95, "stop when a round keeps less than this share of the SFT model's content "
                                    "recall on the held-out prompts")
    max_stock: float = setting(0.10, "stop when more than this share of a round's held-out answers open with one "
                                     "stock phrase (and more than the SFT model's): the judge is rewarded by the "
                                     "phrase; and drop a round's pairs that teach one opening (more than this share "
                                     "of its chosen answers open with it, half as many rejected ones or fewer; or "
                                     "it is on the chosen side beyond chance, sign test p < 0.05); 1 turns both "
                                     "off")
    lr: float = setting(0.0, "learning rate of rounds 2..N (0: [train] lr). A round's fresh slice gives fewer "
                             "steps than round 1's data; on the seed's pairs 1e-5 against round 1's 5e-6 "
                             "(bench/rounds.py)")

    def __post_init__(self) -> None:
        check_choices(self, "rounds.")
        if self.samples < 2:
            raise ConfigError(f"rounds.samples: at least 2 answers per prompt to pair, got {self.samples}")
        if not 0.0 <= self.max_stock <= 1.0:
            raise ConfigError(f"rounds.max_stock: a share of the answers, e.g. 0.10; got {self.max_stock}")
        if self.lr < 0:
            raise ConfigError(f"rounds.lr: a learning rate > 0, or 0 for [train] lr; got {self.lr}")
        if not 0.0 <= self.min_kept <= 1.5:
            raise ConfigError(f"rounds.min_kept: a share of the SFT model's recall, e.g. 0.95; got {self.min_kept}")


@dataclass
class LoopConfig:
    """The whole loop, checked before any work."""

    path: Path
    run: RunSection
    data: DataSection
    split: SplitSection
    preflight: PreflightConfig
    generate: GenerateConfig
    train: TrainConfig
    judge: JudgeConfig                  # the first of its ``judges`` is the headline
    export: ExportConfig = field(default_factory=ExportConfig)   # off unless [export] ollama names a model
    raw: dict[str, Any] = field(default_factory=dict)
    rounds: RoundsSection = field(default_factory=lambda: RoundsSection())  # rounds 2..N ([run] rounds > 1)

    @property
    def name(self) -> str:
        return self.run.name or self.path.stem

    @property
    def run_dir(self) -> Path:
        return run_dir_of(self.run, self.path)

    @property
    def judges(self) -> list[str]:
        return list(self.judge.judges)

    def judge_specs(self) -> list[ClientSpec]:
        """The judges, parsed (each knows whether it is a person, a served model or an in-process judge)."""
        return [parse_spec(j) for j in self.judge.judges]

    def preflight_judge(self) -> str | None:
        """Who scores the SFT model's answers before training: ``[preflight] judge``, else the first judge that is
        not a person (a person judges pairs, not 0-100 scores); None when every judge is a person."""
        return self.preflight.judge or next((str(j) for j in self.judge_specs() if not j.person), None)


def run_dir_of(run: RunSection, config_path: Path) -> Path:
    return Path(run.output_dir or Path("runs") / (run.name or config_path.stem))


def resolve_input(value: str, config_dir: Path) -> str:
    """Relative input paths are looked up beside the config file first, then in the current folder."""
    if not value or Path(value).is_absolute():
        return value
    beside = config_dir / value
    return str(beside) if beside.exists() else value


def _owned(cls: type, section: dict[str, Any], owned: dict[str, Any], where: str, by: str) -> dict[str, Any]:
    """A stage section with the fields the loop owns filled in; setting one of them is an error naming who owns it."""
    names = {f.name for f in fields(cls)}
    for key in owned:
        if key in section:
            raise ConfigError(f"{where}.{key}: set by `prefloop run` ({by}); remove it")
    return {**section, **{k: v for k, v in owned.items() if k in names}}


STAGES = ("generate", "split", "preflight", "train", "export", "judge")
"""The loop's stages in the order they run: the one place it is written (``loop.stages`` runs them in this
order, ``loop.checks`` finds the first to rerun in it)."""


@dataclass(frozen=True)
class RunPaths:
    """Where each stage reads and writes inside the run folder (a typo is an AttributeError at once, not a
    KeyError at the judge stage)."""

    root: Path

    @property
    def pairs(self) -> Path:
        return self.root / "generate" / "pairs.jsonl"

    @property
    def split(self) -> Path:
        return self.root / "split"

    @property
    def train_pairs(self) -> Path:
        return self.split / "train.jsonl"

    @property
    def heldout_pairs(self) -> Path:
        return self.split / "heldout_pairs.jsonl"

    @property
    def heldout_prompts(self) -> Path:
        return self.split / "heldout_prompts.jsonl"

    @property
    def train(self) -> Path:
        return self.root / "train"

    @property
    def final(self) -> Path:
        return self.train / "final"

    @property
    def judge(self) -> Path:
        return self.root / "judge"

    @property
    def preflight(self) -> Path:
        return self.root / "preflight"

    @property
    def cache(self) -> Path:
        return self.root / "cache" / "judge-cache.sqlite"

    @property
    def export(self) -> Path:
        return self.root / "export"


def stage_paths(run_dir: Path) -> RunPaths:
    """Where each stage reads and writes inside the run folder."""
    return RunPaths(Path(run_dir))


def load_loop_config(path: str | Path, overrides: list[str] | None = None) -> LoopConfig:
    """Read and check the whole config: unknown sections or keys, wrong types and bad values are errors naming
    the file and the key, before any model is loaded."""
    path = Path(path)
    doc = apply_overrides(load_toml(path), list(overrides or []))
    check_sections(doc, path)
    run = build(RunSection, doc.get("run"), f"{path} [run]")
    data = build(DataSection, doc.get("data"), f"{path} [data]")
    data.prompts = resolve_input(data.prompts, path.parent)
    split = build(SplitSection, doc.get("split"), f"{path} [split]")
    preflight = build(PreflightConfig, doc.get("preflight"), f"{path} [preflight]")
    paths = stage_paths(run_dir_of(run, path))
    in_run = "it lives in the run folder"

    gen_raw = _owned(GenerateConfig, dict(doc.get("generate", {})), {"output": str(paths.pairs)},
                     f"{path} [generate]", in_run)
    gen_raw = _owned(GenerateConfig, gen_raw, {"source": data.prompts, "limit": data.limit,
                                               "skip_bad": data.skip_bad}, f"{path} [generate]", "from [data]")
    train_raw = _owned(TrainConfig, dict(doc.get("train", {})),
                       {"data": str(paths.train_pairs), "output_dir": str(paths.train),
                        "eval_data": str(paths.heldout_pairs)}, f"{path} [train]", in_run)
    if run.threads and "threads" not in train_raw:
        train_raw["threads"] = run.threads
    train = build(TrainConfig, train_raw, f"{path} [train]")
    gen_raw.setdefault("prompt_format", train.prompt_format)  # on-policy answers come the way the model trains
    generate = build(GenerateConfig, gen_raw, f"{path} [generate]")

    export = build(ExportConfig, _owned(ExportConfig, dict(doc.get("export", {})),
                                        {"model": str(paths.final), "output_dir": str(paths.export)},
                                        f"{path} [export]", in_run), f"{path} [export]")
    judge_raw = _owned(JudgeConfig, dict(doc.get("judge", {})), judge_owned(paths, train, export=export),
                       f"{path} [judge]", in_run)
    judge_raw.setdefault("generator_model", generate.model)   # the judge checks for self-preference
    judge_raw.setdefault("prompt_format", train.prompt_format)  # answers come the way the model was trained
    # the judgment cache outlives a changed judge setting (its keys hold everything that decides a verdict)
    judge_raw.setdefault("cache", str(paths.cache))
    judge = build(JudgeConfig, judge_raw, f"{path} [judge]")
    for spec in [*judge.judges, *([preflight.judge] if preflight.judge else [])]:
        try:
            parse_spec(spec)
        except ValueError as exc:
            raise ConfigError(f"{path} [judge].judges: {exc}") from None
    rounds = build(RoundsSection, doc.get("rounds"), f"{path} [rounds]")
    return LoopConfig(path=path, run=run, data=data, split=split, preflight=preflight, generate=generate,
                      train=train, judge=judge, export=export, raw=doc, rounds=rounds)


def judge_owned(paths: RunPaths, train: TrainConfig, final_model: str | Path | None = None,
                export: ExportConfig | None = None) -> dict[str, Any]:
    """The judge settings that live in the run folder: the trained model against the SFT model it started from,
    on the held-out prompts; both served by Ollama when ``[export]`` created them there; each judge validated on the held-out pairs."""
    policy, reference = str(final_model or paths.final), str(train.model)
    if export is not None and export.ollama:
        policy, reference = export.served(export.ollama), export.served(export.reference_name)
    return {"prompts": str(paths.heldout_prompts), "policy": policy, "reference": reference,
            "pairs": str(paths.train_pairs), "output_dir": str(paths.judge),
            "validate": str(paths.heldout_pairs) if count_lines(paths.heldout_pairs) else ""}
