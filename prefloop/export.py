"""A trained model as a folder Ollama's safetensors importer converts correctly (``prefloop export``).

The folder: the model merged (a LoRA adapter merged into its base first) as bf16 safetensors, ``config.json``,
the tokenizer, ``generation_config.json``, a ``Modelfile`` for ``ollama create -f``, and ``export.json`` (what was
written, with each file's sha256: the blob digests the upload uses).

Two things a transformers 5 folder gets wrong for Ollama, found by reading Ollama's converter (ollama/ollama
``convert/`` at fb30760, 2026-08-21) and invisible to a test that only reloads the folder in transformers:

- RoPE. transformers 5 writes its RoPE settings only under ``rope_parameters``; Ollama's converters read the
  top-level ``rope_theta`` and ``rope_scaling`` (``convert_llama.go``: ``json:"rope_theta"``, and
  ``rope_scaling.rope_type == "llama3"`` for Llama 3's frequency factors; qwen2 and phi3 read
  ``rope_scaling.type``). Without them the base silently falls back to 10,000: SmolLM2 (θ = 100,000) and
  Llama 3.x (θ = 500,000) would import with no error and answer badly. ``legacy_rope`` writes both keys
  (``rope_scaling`` null for plain RoPE: phi3's converter panics on a ``"default"`` type).
- The chat template. transformers 5 saves it to ``chat_template.jinja``, which Ollama's converter never reads
  (``convert/tokenizer.go`` reads only ``tokenizer_config.json["chat_template"]``), and then falls back to a
  bare ``{{ .Prompt }}`` template. The tokenizer is saved with the template inside ``tokenizer_config.json``,
  and, for the chat formats below, Ollama's own Go template and stop tokens are passed explicitly.

Which architectures Ollama's safetensors importer converts is ``OLLAMA_ARCHITECTURES`` (its converter's list; the
docs differ: they list Mistral, which ``MistralForCausalLM`` is not among). Others are refused before anything is
written or uploaded. A LoRA adapter may instead be exported as an adapter over its base (``ADAPTER_BASES``: llama
and gemma2 only, ``convert.ConvertAdapter``), plain LoRA only: Ollama reads the scale from ``lora_alpha`` alone,
so rsLoRA or DoRA adapters would be applied with the wrong scale.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from prefloop.errors import BadInput
from prefloop.files import atomic_path, atomic_write_json

# Source: ollama/ollama convert/convert.go, LoadModelMetadata's switch on architectures[0] (fb30760).
OLLAMA_ARCHITECTURES = frozenset({
    "LlamaForCausalLM", "MllamaForConditionalGeneration", "Llama4ForConditionalGeneration",
    "Mistral3ForConditionalGeneration", "Ministral3ForCausalLM", "MixtralForCausalLM", "GemmaForCausalLM",
    "Gemma2ForCausalLM", "Gemma3ForCausalLM", "Gemma3ForConditionalGeneration", "Gemma3TextModel",
    "Gemma3nForConditionalGeneration", "Gemma4ForCausalLM", "Gemma4ForConditionalGeneration", "Phi3ForCausalLM",
    "Qwen2ForCausalLM", "Qwen2_5_VLForConditionalGeneration", "Qwen3VLForConditionalGeneration",
    "Qwen3VLMoeForConditionalGeneration", "Olmo3ForCausalLM", "BertModel", "NomicBertModel", "NomicBertMoEModel",
    "CohereForCausalLM", "GptOssForCausalLM", "DeepseekOCRForCausalLM", "DeepseekV3ForCausalLM",
    "Glm4MoeLiteForCausalLM", "LagunaForCausalLM", "GlmOcrForConditionalGeneration", "Lfm2ForCausalLM",
    "Lfm2MoeForCausalLM", "Lfm2VlForConditionalGeneration", "Qwen3NextForCausalLM",
    "Qwen3_5ForConditionalGeneration", "Qwen3_5MoeForConditionalGeneration", "NemotronH_Nano_VL_V2",
    "NemotronH_Nano_Omni_Reasoning_V3", "NemotronHForCausalLM",
})
# Source: the same file, ConvertAdapter's switch on the base's general.architecture.
ADAPTER_BASES = ("llama", "gemma2")
QUANTIZE = ("q4_K_M", "q4_K_S", "q8_0")   # what `ollama create --quantize` makes from F16/BF16/F32 weights
NOT_UPLOADED = ("Modelfile", "export.json", "README.md", "chat_template.jinja")
MANIFEST = "export.json"


class ExportError(BadInput, ValueError):
    """The model cannot be exported as asked; the message says why and what to do instead."""


# ---- chat formats ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChatFormat:
    """A chat format Ollama knows: its Go template (Ollama's ``template/<name>.gotmpl``), its stop tokens
    (``template/<name>.json``) and the same rendering in Python, to check a model's Jinja template against it."""

    name: str
    template: str
    stop: tuple[str, ...]
    turn: str            # one message; {role} and {content}
    generation: str      # what opens the assistant's reply

    def render(self, messages: list[dict[str, str]], generation: bool = True) -> str:
        text = "".join(self.turn.format(role=m["role"], content=m["content"]) for m in messages)
        return text + (self.generation if generation else "")


CHAT_FORMATS = (
    ChatFormat("chatml", "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
                         "<|im_start|>assistant\n", ("<|im_start|>", "<|im_end|>"),
               "<|im_start|>{role}\n{content}<|im_end|>\n", "<|im_start|>assistant\n"),
    ChatFormat("llama3-instruct", "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
                                  "{{ .Content }}<|eot_id|>\n{{- end }}<|start_header_id|>assistant<|end_header_id|>"
                                  "\n\n", ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
               "<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>",
               "<|start_header_id|>assistant<|end_header_id|>\n\n"),
)
PROBE = [{"role": "user", "content": "PROBE-Q1"}, {"role": "assistant", "content": "PROBE-A1"},
         {"role": "user", "content": "PROBE-Q2"}]


def detect_chat_format(tokenizer: Any) -> tuple[ChatFormat | None, str]:
    """``(format, default system prompt)`` when the tokenizer's Jinja template renders a probe conversation
    exactly as one of ``CHAT_FORMATS`` does (a default system prompt the template adds, as SmolLM2's does, is
    read off and returned); ``(None, "")`` otherwise (then Ollama picks its nearest known template itself)."""
    if not getattr(tokenizer, "chat_template", None):
        return None, ""
    try:
        text = tokenizer.apply_chat_template(PROBE, tokenize=False, add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - a template that cannot render the probe is not one we can vouch for
        return None, ""
    bos = getattr(tokenizer, "bos_token", None) or ""
    texts = [text] + ([text[len(bos):]] if bos and text.startswith(bos) else [])  # llama.cpp adds BOS itself
    for fmt in CHAT_FORMATS:
        head = re.escape(fmt.render([{"role": "system", "content": "\x00"}], generation=False))
        for candidate in texts:
            found = re.match(head.replace("\x00", "(.*?)"), candidate, re.S)
            system = found.group(1) if found else ""
            if fmt.render(([{"role": "system", "content": system}] if system else []) + PROBE) == candidate:
                return fmt, system
    return None, ""


# ---- config.json -------------------------------------------------------------------------------------------------

def check_architecture(config: dict[str, Any], where: str) -> str:
    """The architecture Ollama will convert, or ``ExportError`` saying what to do instead."""
    archs = config.get("architectures") or []
    if not archs:
        raise ExportError(f"{where}: config.json names no architecture; Ollama's importer needs one")
    if archs[0] not in OLLAMA_ARCHITECTURES:
        raise ExportError(f"{where}: Ollama's safetensors importer does not convert {archs[0]} (its converter, "
                          f"ollama convert/convert.go, lists {len(OLLAMA_ARCHITECTURES)} architectures; the docs "
                          "list more than it converts). Convert the folder to GGUF with llama.cpp's "
                          "convert_hf_to_gguf.py and use `FROM model.gguf` in a Modelfile, or train a "
                          "model whose architecture is on the list (e.g. Llama, Qwen2, Gemma 2/3, Phi-3)")
    return archs[0]


def legacy_rope(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with the top-level ``rope_theta`` and ``rope_scaling`` Ollama's converters read, copied from
    transformers 5's ``rope_parameters`` (see the module docstring). transformers still reads the folder the same:
    it takes ``rope_scaling`` (when set) as ``rope_parameters``, and this copy holds every key of it.

    A per-layer-type ``rope_parameters`` (Gemma 3: full and sliding attention) gives the full-attention θ as
    ``rope_theta`` and the sliding one as ``rope_local_base_freq``, the names Ollama's gemma3 converter reads."""
    out = dict(config)
    params = config.get("rope_parameters")
    if not isinstance(params, dict) or not params:
        return out
    if "rope_theta" in params:
        out["rope_theta"] = params["rope_theta"]
        kind = params.get("rope_type", "default")
        out["rope_scaling"] = None if kind == "default" else {**params, "type": kind}
    elif isinstance(params.get("full_attention"), dict):
        out["rope_theta"] = params["full_attention"].get("rope_theta")
        if isinstance(params.get("sliding_attention"), dict):
            out["rope_local_base_freq"] = params["sliding_attention"].get("rope_theta")
    return out


# ---- the folder --------------------------------------------------------------------------------------------------

@dataclass
class AdapterInfo:
    """A PEFT LoRA adapter found beside (or instead of) a merged model."""

    path: str
    base: str              # base_model_name_or_path
    rank: int
    alpha: float
    rslora: bool
    dora: bool
    base_type: str = ""    # the base's model_type (llama, gemma2, ...)


@dataclass
class ExportFolder:
    """What ``write_export`` wrote (``export.json``); ``files`` maps each file to upload to its sha256 digest."""

    path: str
    source: str
    architecture: str
    dtype: str
    files: dict[str, str] = field(default_factory=dict)
    template: str = ""        # Ollama's Go template ("": Ollama detects it from tokenizer_config.json)
    chat_format: str = ""
    system: str = ""
    stop: list[str] = field(default_factory=list)
    adapter: AdapterInfo | None = None
    adapter_files: dict[str, str] = field(default_factory=dict)   # adapter/…: for an adapter export

    @classmethod
    def read(cls, folder: str | Path) -> "ExportFolder":
        path = Path(folder) / MANIFEST
        if not path.exists():
            raise ExportError(f"{folder}: no {MANIFEST} (not written by prefloop export); export the model first")
        data = json.loads(path.read_text(encoding="utf-8"))
        adapter = data.pop("adapter", None)
        out = cls(**data)
        out.adapter = AdapterInfo(**adapter) if adapter else None
        return out

    def parameters(self) -> dict[str, Any]:
        return {"stop": list(self.stop)} if self.stop else {}


def file_digest(path: str | Path) -> str:
    """``sha256:<hex>`` of a file, read in 1 MiB pieces (a model file does not fit in memory twice)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def find_adapter(folder: Path) -> AdapterInfo | None:
    """A PEFT adapter in ``folder`` itself or in ``folder/adapter`` (the trainer's LoRA layout)."""
    for where in (folder, folder / "adapter"):
        config = where / "adapter_config.json"
        if config.exists():
            data = json.loads(config.read_text(encoding="utf-8"))
            return AdapterInfo(path=str(where), base=str(data.get("base_model_name_or_path") or ""),
                               rank=int(data.get("r") or 0), alpha=float(data.get("lora_alpha") or 0),
                               rslora=bool(data.get("use_rslora")), dora=bool(data.get("use_dora")))
    return None


def check_adapter(adapter: AdapterInfo, base_model_type: str, where: str) -> None:
    """Refuse an adapter Ollama would import wrongly (see the module docstring)."""
    if base_model_type not in ADAPTER_BASES:
        raise ExportError(f"{where}: Ollama converts LoRA adapters only over {' or '.join(ADAPTER_BASES)} bases, "
                          f"not {base_model_type or 'this base'}; export the merged model instead (without --adapter)")
    if adapter.rslora or adapter.dora:
        kind = "rsLoRA" if adapter.rslora else "DoRA"
        raise ExportError(f"{where}: a {kind} adapter; Ollama reads the LoRA scale from lora_alpha alone and would "
                          "apply it wrongly. Export the merged model instead (without --adapter)")
    if not adapter.alpha:
        raise ExportError(f"{where}: adapter_config.json has no lora_alpha, which Ollama reads the scale from")


def _load(source: Path, dtype: Any) -> tuple[Any, Any, AdapterInfo | None]:
    """The model to export (merged when the folder holds only an adapter), its tokenizer, and the adapter."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = find_adapter(source)
    if (source / "config.json").exists():  # a full model (the trainer's merged one when it also saved an adapter)
        try:
            model = AutoModelForCausalLM.from_pretrained(str(source), dtype=dtype)
        except ExportError:
            raise
        except Exception as exc:  # noqa: BLE001 - safetensors' own error derives from Exception only
            weights = sorted(p.name for p in source.glob("*.safetensors")) or ["its weights"]
            raise ExportError(f"{source}: {', '.join(weights)} does not load ({type(exc).__name__}: "
                              f"{str(exc)[:200]}); the file is damaged or cut short (a copy or a save that did not "
                              "finish): copy it again, or train again") from None
        return model, AutoTokenizer.from_pretrained(str(source)), adapter
    if adapter is None:
        raise ExportError(f"{source}: neither a model folder (config.json) nor a LoRA adapter (adapter_config.json)")
    try:
        from peft import PeftModel
    except ImportError:
        raise ExportError(f"{source}: merging a LoRA adapter needs peft: pip install 'peft>=0.18'") from None
    from prefloop.models import resolve

    import torch

    base = AutoModelForCausalLM.from_pretrained(resolve(adapter.base), dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, adapter.path).merge_and_unload()  # merge in fp32, then cast
    tokenizer_from = source if (source / "tokenizer_config.json").exists() else Path(resolve(adapter.base))
    return merged.to(dtype), AutoTokenizer.from_pretrained(str(tokenizer_from)), adapter


def write_export(source: str | Path, target: str | Path, *, dtype: str = "bf16",
                 note: Callable[[str], None] = lambda text: None) -> ExportFolder:
    """Write the export folder for ``source`` (a model folder, a LoRA adapter folder, a ``.gguf`` or ``smollm2``)
    at ``target``, atomically: a failure leaves no half folder. Refuses an architecture Ollama does not convert
    before loading any weights."""
    import torch

    from prefloop.models import normalize_dtype, resolve

    where = Path(source) if Path(source).is_dir() else Path(resolve(source))
    config_file = where / "config.json"
    adapter = find_adapter(where)
    if config_file.exists():
        check_architecture(json.loads(config_file.read_text(encoding="utf-8")), str(source))
    elif adapter is not None:
        from transformers import AutoConfig

        check_architecture(AutoConfig.from_pretrained(resolve(adapter.base)).to_dict(), f"{source} (its base)")
    torch_dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[normalize_dtype(dtype)]
    note(f"loading {source}" + (" and merging its LoRA adapter" if adapter and not config_file.exists() else ""))
    model, tokenizer, adapter = _load(where, torch_dtype)
    fmt, system = detect_chat_format(tokenizer)
    target = Path(target)
    with atomic_path(target, folder=True) as tmp:
        model.save_pretrained(tmp)
        config = legacy_rope(json.loads((tmp / "config.json").read_text(encoding="utf-8")))
        architecture = check_architecture(config, str(source))
        if adapter is not None:
            adapter.base_type = str(config.get("model_type") or "")
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        tokenizer.save_pretrained(tmp, save_jinja_files=False)  # the template inside tokenizer_config.json
        (tmp / "chat_template.jinja").unlink(missing_ok=True)
        stop = list(fmt.stop) if fmt else []
        if tokenizer.eos_token and tokenizer.eos_token not in stop:
            stop.append(tokenizer.eos_token)
        folder = ExportFolder(path=str(target), source=str(source), architecture=architecture,
                              dtype=normalize_dtype(dtype), template=fmt.template if fmt else "",
                              chat_format=fmt.name if fmt else "", system=system, stop=stop, adapter=adapter)
        if adapter is not None:  # kept beside the merged model, for an export as an adapter over its base
            shutil.copytree(adapter.path, tmp / "adapter",
                            ignore=shutil.ignore_patterns("README.md", "*.pt", "checkpoint*"))
            folder.adapter_files = {f"adapter/{p.name}": file_digest(p) for p in sorted((tmp / "adapter").iterdir())
                                    if p.is_file()}
        folder.files = {p.name: file_digest(p) for p in sorted(tmp.iterdir())
                        if p.is_file() and p.name not in NOT_UPLOADED}
        (tmp / "Modelfile").write_text(modelfile(folder), encoding="utf-8")
        atomic_write_json(tmp / MANIFEST, _jsonable(folder))
    if fmt is None and getattr(tokenizer, "chat_template", None):
        note("the chat template is none prefloop knows exactly (ChatML, Llama 3); Ollama picks its nearest known "
             "template from tokenizer_config.json: check it with `ollama show NAME --template`")
    return folder


def _jsonable(folder: ExportFolder) -> dict[str, Any]:
    data = asdict(folder)
    data["adapter"] = asdict(folder.adapter) if folder.adapter else None
    return data


def _quoted(text: str) -> str:
    return '"""' + text.replace('"""', '\\"\\"\\"') + '"""'


def modelfile(folder: ExportFolder) -> str:
    """A Modelfile that makes the same model with the ``ollama`` CLI, run in the export folder."""
    lines = ["# Written by `prefloop export`. In this folder: ollama create NAME -f Modelfile",
             "# (add --quantize q4_K_M for a smaller model)", "FROM ."]
    if folder.template:
        lines.append(f"TEMPLATE {_quoted(folder.template)}")
    if folder.system:
        lines.append(f"SYSTEM {_quoted(folder.system)}")
    lines += [f'PARAMETER stop "{t}"' for t in folder.stop]
    return "\n".join(lines) + "\n"
