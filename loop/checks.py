"""Before the first stage does any work: every input, model, server and template the run will still need.

An overnight run should not find a missing SFT model or an unreachable judge after hours of generation. The
check reads the prompts (a broken edit stops here, before anything in the run folder is moved), resolves the
local models (a folder, a ``.gguf``, the embedded alias: no weights are loaded), asks each served model's server
whether it has the model (the clients' own preflight: version, listing), and loads the judge templates. Stages
already finished with the same settings are not checked again: a finished run reopened for its report needs no
server.
"""

from __future__ import annotations

import asyncio
from typing import Any

from loop.config import STAGES, LoopConfig
from prefloop.errors import BadInput
from prefloop.fingerprint import RunState
from prefloop.llm.base import ClientSpec, parse_spec


class SetupError(BadInput, RuntimeError):
    """Something the run needs is missing or wrong; the message names the setting and what to do."""


def needed_stages(cfg: LoopConfig, state: RunState, settings: dict[str, dict[str, Any]],
                  prompts_identity: str) -> set[str]:
    """The stages that will run (or may): the first one not finished with its current settings, and every one
    after it. The generator also runs when its prompts changed (new prompts are generated, the rest kept)."""
    gen = state.get("generate")
    for i, name in enumerate(STAGES):
        if (name == "preflight" and not cfg.preflight.enabled) or (name == "export" and not cfg.export.ollama):
            continue
        unchanged = state.done_with(name, settings[name])
        if name == "generate":
            unchanged = unchanged and gen is not None and gen.resumable.get("prompts") == prompts_identity
        if not unchanged:
            return set(STAGES[i:])
    return set()


def check_run(cfg: LoopConfig, needed: set[str]) -> None:
    """Raise ``SetupError`` naming the first thing missing (see the module docstring)."""
    from judge.prompts import TemplateError, check_fields, load_template
    from prefloop.models import ModelNotFound, resolve

    def local(what: str, name: str) -> None:
        try:
            resolve(name)
        except ModelNotFound as exc:
            raise SetupError(f"{what} = {name!r}: {exc}") from None

    if needed & {"preflight", "train", "judge"}:
        local(f"{cfg.path} [train] model", cfg.train.model)
    try:
        if "judge" in needed:
            check_fields(load_template(cfg.judge.template), ("prompt", "answer_a", "answer_b"))
        if "preflight" in needed or (cfg.generate.strategy in ("rank", "score") and "generate" in needed):
            check_fields(load_template("score"), ("prompt", "answer"))
    except TemplateError as exc:
        raise SetupError(f"{cfg.path} [judge] template: {exc}") from None
    if cfg.generate.strategy == "score" and "train" in needed:
        from trainer.objectives import spec

        if spec(cfg.train.objective).data != "labelled":   # labelled answers, no pairs: only KTO reads them
            raise SetupError(f"{cfg.path} [generate] strategy = \"score\" writes labelled answers, not pairs, and "
                             f"[train] objective = {cfg.train.objective!r} needs {spec(cfg.train.objective).data}; "
                             "set [train] objective = \"kto\" or another [generate] strategy")
    used: dict[ClientSpec, str] = {}   # every model or judge the run still needs -> the setting it comes from
    if "generate" in needed:
        used.update({parse_spec(s): "[generate] model" for s in cfg.generate.specs_used()})
    if "preflight" in needed and cfg.preflight_judge():
        used[parse_spec(cfg.preflight_judge())] = "[preflight] judge"
    if "judge" in needed:
        used.update({s: "[judge] judges" for s in cfg.judge_specs()})
    if cfg.run.rounds > 1:  # rounds rank their samples with this judge, after hours of round 1
        from loop.rounds import Rounds

        try:
            ranker = Rounds.ranker_of(cfg)
        except ValueError as exc:
            raise SetupError(str(exc)) from None
        if ranker:
            used.setdefault(parse_spec(ranker), "[rounds] judge")
    asyncio.run(_reachable(cfg, used, local))


async def _reachable(cfg: LoopConfig, specs: dict[ClientSpec, str], local: Any) -> None:
    """Each spec checked as its kind needs: a person needs nothing now (the screen checks its terminal), a local
    model is resolved, an in-process judge is loaded without being called, a served model is asked for."""
    from prefloop.llm import make_client
    from prefloop.llm.base import LLMError

    for spec, where in specs.items():
        if spec.person:
            continue
        if spec.kind == "local":
            local(f"{cfg.path} {where}", spec.model)
            continue
        if not spec.chat:
            from judge.kinds import check_direct

            try:
                check_direct(spec)
            except ValueError as exc:
                raise SetupError(f"{cfg.path} {where} = {str(spec)!r}: {exc}") from None
            continue
        client = make_client(spec)
        try:
            await client.preflight()
        except LLMError as exc:
            raise SetupError(f"{cfg.path} {where} = {str(spec)!r}: {exc}") from None
        finally:
            await client.aclose()
