"""``prefloop export``: a trained model into Ollama with one command, and the loop's optional ``[export]`` stage.

    prefloop export MODEL_DIR --ollama NAME [--host URL] [--quantize q4_K_M|q4_K_S|q8_0]
    ollama run NAME

1. the export folder (``prefloop.export``): the model merged as bf16 safetensors with the RoPE keys and the chat
   template where Ollama's importer reads them, and a ``Modelfile``; an architecture Ollama does not convert is
   refused first, before anything is written or sent;
2. with ``--ollama``: each file uploaded as a blob unless the server has it, then the create, its statuses
   relayed (``prefloop.llm.ollama_create``); ``--adapter`` creates the LoRA adapter over ``--base`` instead;
3. verify: ``/api/show`` answers and one short chat reply comes back.

The weights go to the configured host only (``--host``, else ``OLLAMA_HOST``, else this machine); a host that is
not this machine gets a warning first, since the model is about to be copied there.

Exit codes: 0 done, 1 the server failed (rerun: blobs already sent are not sent again), 2 bad setup or a model
Ollama cannot import.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from loop.config import ExportConfig
from prefloop.flags import add_common, add_config_flags, fail, settings
from prefloop.stage import StageResult

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*(:[A-Za-z0-9][A-Za-z0-9._-]*)?")


@dataclass
class ExportResult(StageResult):
    """What one export did: the folder, and the model the server created (empty when only the folder was
    written)."""

    folder: str = ""
    name: str = ""
    host: str = ""
    digest: str = ""
    quantization: str = ""
    reply: str = ""
    uploaded: int = 0
    skipped: int = 0


def default_output(cfg: ExportConfig) -> Path:
    stem = cfg.ollama.replace("/", "_").replace(":", "_") if cfg.ollama else Path(cfg.model).name
    return Path("exports") / (stem or "model")


def export_model(cfg: ExportConfig, say: Callable[[str], None] = print) -> ExportResult:
    """Write the export folder and, when ``cfg.ollama`` names a model, create it on the server and verify it."""
    from prefloop.export import ExportError, check_adapter, find_adapter, write_export
    from prefloop.files import writable
    from prefloop.llm.base import ServerFatal, ServerUnreachable, is_loopback
    from prefloop.llm.ollama_create import OllamaModels

    if not cfg.model:
        raise ExportError("export: no model (MODEL_DIR: a trained model folder, a .gguf, or smollm2)")
    if cfg.adapter and not cfg.base:
        raise ExportError("export: --adapter needs the base model's name on the server (--base NAME)")
    if cfg.ollama and not NAME.fullmatch(cfg.ollama):
        raise ExportError(f"export: '{cfg.ollama}' is not a model name Ollama accepts ([namespace/]name[:tag])")
    out = Path(cfg.output_dir) if cfg.output_dir else default_output(cfg)
    writable(out, "--output")  # a folder that cannot be written is said before the model is loaded
    server = None
    if cfg.ollama:
        server = OllamaModels(cfg.host or None, timeout=cfg.timeout_s)
        try:
            server.listed(cfg.ollama)  # reachable before minutes of writing; nothing is sent yet
        except ServerFatal as exc:     # down or hung at the start: a setup to fix (exit 2), nothing was sent
            server.close()
            raise ServerUnreachable(str(exc)) from None
        if not is_loopback(server.url):
            say(f"warning: the model's weights are about to be uploaded to {server.url}, which is not this machine")
    try:
        if server is not None and cfg.adapter:  # what --adapter needs, checked before minutes of merging
            if Path(cfg.model).is_dir() and find_adapter(Path(cfg.model)) is None:
                raise ExportError(f"{cfg.model}: --adapter, but the folder holds no LoRA adapter")
            if server.listed(cfg.base) is None:
                raise ExportError(f"--base {cfg.base}: not on {server.url}; create the base there first "
                                  f"(prefloop export BASE_MODEL --ollama {cfg.base})")
        folder = write_export(cfg.model, out, dtype=cfg.dtype, note=say)
        say(f"wrote {out} ({folder.architecture}, {folder.dtype}"
            + (f", chat format {folder.chat_format}" if folder.chat_format else "") + ")")
        result = ExportResult(folder=str(out), outputs={"folder": str(out), "modelfile": str(out / "Modelfile")})
        if server is None:
            say(f"to create it in Ollama: cd {out} && ollama create NAME -f Modelfile")
            return result
        if cfg.adapter:
            if folder.adapter is None:
                raise ExportError(f"{cfg.model}: --adapter, but the folder holds no LoRA adapter")
            check_adapter(folder.adapter, folder.adapter.base_type, str(cfg.model))
            base = server.listed(cfg.base)
            if base is None:
                raise ExportError(f"--base {cfg.base}: not on {server.url}; create the base there first "
                                  f"(prefloop export {folder.adapter.base} --ollama {cfg.base})")
            level = (base.details.quantization_level if base.details else "") or ""
            if level.upper() not in ("F16", "BF16", "F32", ""):
                say(f"warning: the base {cfg.base} is quantized ({level}); a LoRA adapter was trained on full "
                    "weights and applies exactly only to them")
            files = {name.split("/", 1)[1]: digest for name, digest in folder.adapter_files.items()}
            paths = {name: out / "adapter" / name for name in files}
        else:
            files, paths = dict(folder.files), {name: out / name for name in folder.files}
        result.uploaded, result.skipped = server.upload(paths, files, progress=say)
        request = dict(template=folder.template, system=folder.system, parameters=folder.parameters(),
                       quantize=cfg.quantize or None, progress=lambda status: say(f"  {status}"))
        if cfg.adapter:
            server.create(cfg.ollama, from_=cfg.base, adapters=files, **request)
        else:
            server.create(cfg.ollama, files=files, **request)
        result.name, result.host = cfg.ollama, server.url
        if cfg.verify:
            made = server.verify(cfg.ollama)
            result.digest, result.quantization, result.reply = made.digest, made.quantization, made.reply
            say(f"verified: {cfg.ollama} answers ({made.reply[:60]!r})")
        else:
            entry = server.listed(cfg.ollama)
            result.digest = (entry.digest or "") if entry else ""
        result.outputs["model"] = f"ollama:{cfg.ollama}"
        say(f"created {cfg.ollama} on {server.url}: ollama run {cfg.ollama}")
        return result
    finally:
        if server is not None:
            server.close()


def export_run(cfg: ExportConfig, final_model: str, reference_model: str, folder: Path,
               say: Callable[[str], None]) -> ExportResult:
    """The loop's stage: the trained model as ``cfg.ollama`` and the SFT model it started from as
    ``cfg.reference_name``, on the same server with the same quantization, so the judge's two sides differ only
    by training."""
    policy = export_model(replace(cfg, model=final_model, output_dir=str(folder / "policy")), say)
    reference = export_model(replace(cfg, model=reference_model, ollama=cfg.reference_name, adapter=False,
                                     output_dir=str(folder / "reference")), say)
    return ExportResult(folder=str(folder), name=policy.name, host=policy.host, digest=policy.digest,
                        quantization=policy.quantization, reply=policy.reply,
                        uploaded=policy.uploaded + reference.uploaded, skipped=policy.skipped + reference.skipped,
                        outputs={"policy": policy.outputs.get("model", ""),
                                 "reference": reference.outputs.get("model", ""), "folder": str(folder)})


# ---- the command -------------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", help="the model to export: a trained model folder (a LoRA adapter is "
                                                 "merged first), a .gguf, or smollm2")
    add_common(parser, "export")
    add_config_flags(parser, ExportConfig)


def main(args: argparse.Namespace) -> int:
    from prefloop.config import ConfigError
    from prefloop.export import ExportError
    from prefloop.llm.base import LLMError, ServerFatal
    from prefloop.models import ModelNotFound

    try:
        cfg = settings(args, ExportConfig, "export", model=args.model)
        say = (lambda text: None) if cfg.quiet else (lambda text: print(text, flush=True))
        result = export_model(cfg, say)
    except (ConfigError, ExportError, ModelNotFound, FileNotFoundError) as exc:
        return fail(exc)
    except ServerFatal as exc:   # 2 when the server was unreachable before anything was sent
        return fail(exc, exc.exit_code)
    except LLMError as exc:
        return fail(f"{exc}\nrun the same command again: blobs already uploaded are not sent again", 1)
    return result.exit_code
