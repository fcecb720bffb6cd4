"""``prefloop export``: the export folder is the model (same logits at the export dtype) with the fields Ollama's
importer reads, it is created on the Ollama-protocol test server through the blob and create API and verified,
and what Ollama cannot import is refused before a byte is sent."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

from loop.cli import main as prefloop
from loop.config import ExportConfig
from loop.export import export_model
from prefloop.export import ExportError, ExportFolder, detect_chat_format, write_export
from prefloop.llm.base import ServerFatal
from prefloop.tiny import CHATML_TEMPLATE


def export(server, model: Path, tmp_path: Path, **kw) -> object:
    cfg = ExportConfig(model=str(model), ollama=kw.pop("ollama", "tiny-dpo"), host=server.url,
                       output_dir=str(tmp_path / "export"), **kw)
    lines: list[str] = []
    result = export_model(cfg, lines.append)
    result.lines = lines
    return result


def logits(folder: Path, dtype: str = "bf16"):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype={"bf16": torch.bfloat16, "fp32": torch.float32}[dtype])
    ids = torch.tensor([[5, 17, 42, 99, 3, 250]])
    with torch.no_grad():
        return model(input_ids=ids).logits


def with_rope(tiny_model_dir: Path, target: Path, rope: dict) -> Path:
    """The tiny model with other RoPE settings (SmolLM2's θ = 100,000, or Llama 3's scaled RoPE)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.rope_parameters = dict(rope)
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict())
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(target)
    return target


def test_the_export_folder_reloads_with_the_logits_of_its_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch

    folder = write_export(tiny_model_dir, tmp_path / "export")
    assert torch.equal(logits(Path(folder.path)), logits(tiny_model_dir))  # both at bf16, the export dtype
    names = {p.name for p in Path(folder.path).iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
            "Modelfile", "export.json"} <= names
    assert "chat_template.jinja" not in names
    assert ExportFolder.read(folder.path).files == folder.files and "Modelfile" not in folder.files
    from safetensors import safe_open

    with safe_open(str(Path(folder.path) / "model.safetensors"), "pt") as st:
        assert {st.get_tensor(k).dtype for k in st.keys()} == {torch.bfloat16}


@pytest.mark.parametrize("rope", [{"rope_theta": 100000.0, "rope_type": "default"},
                                  {"rope_theta": 500000.0, "rope_type": "llama3", "factor": 8.0,
                                   "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                   "original_max_position_embeddings": 512}])
def test_rope_and_template_fields_round_trip(tiny_model_dir: Path, tmp_path: Path, rope: dict) -> None:
    import torch
    from transformers import AutoConfig, AutoTokenizer

    source = with_rope(tiny_model_dir, tmp_path / "source", rope)
    folder = Path(write_export(source, tmp_path / "export").path)
    config = json.loads((folder / "config.json").read_text())
    # what Ollama's converter reads: the top-level keys
    assert config["rope_theta"] == rope["rope_theta"]
    if rope["rope_type"] == "default":
        assert config["rope_scaling"] is None
    else:
        assert config["rope_scaling"]["rope_type"] == "llama3" and config["rope_scaling"]["factor"] == 8.0
    # what transformers reads back: the same RoPE, the same logits
    back = AutoConfig.from_pretrained(folder).rope_parameters
    assert {k: back[k] for k in rope} == rope
    assert torch.equal(logits(folder), logits(source))
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert tokenizer_config["chat_template"] == CHATML_TEMPLATE
    assert AutoTokenizer.from_pretrained(folder).chat_template == CHATML_TEMPLATE
    modelfile = (folder / "Modelfile").read_text()
    assert "FROM ." in modelfile and "<|im_start|>{{ .Role }}" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile


def test_a_default_system_prompt_is_read_off_the_template(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = ("{% for m in messages %}{% if loop.first and m['role'] != 'system' %}"
                               "{{ '<|im_start|>system\nYou are SmolLM.<|im_end|>\n' }}{% endif %}"
                               "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
                               "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    fmt, system = detect_chat_format(tokenizer)
    assert fmt.name == "chatml" and system == "You are SmolLM."
    tokenizer.chat_template = "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    assert detect_chat_format(tokenizer) == (None, "")


@pytest.mark.parametrize("architecture", ["MistralForCausalLM", "Qwen3ForCausalLM"])
def test_an_architecture_ollama_does_not_convert_is_refused_before_any_upload(ollama_server, tiny_model_dir: Path,
                                                                                tmp_path: Path,
                                                                                architecture: str) -> None:
    source = tmp_path / "source"
    shutil.copytree(tiny_model_dir, source)
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "architectures": [architecture]}))
    with pytest.raises(ExportError, match=f"does not convert {architecture}.*GGUF"):
        export(ollama_server, source, tmp_path)
    assert not any(e.path.startswith(("/api/blobs", "/api/create")) for e in ollama_server.requests())
    assert not (tmp_path / "export").exists()


def test_export_creates_and_verifies_and_a_rerun_sends_no_blob_again(ollama_server, tiny_model_dir: Path,
                                                                     tmp_path: Path) -> None:
    result = export(ollama_server, tiny_model_dir, tmp_path, quantize="q4_K_M")
    assert result.complete and result.name == "tiny-dpo" and result.quantization == "Q4_K_M"
    assert result.uploaded == len(ExportFolder.read(tmp_path / "export").files) and result.skipped == 0
    assert "tiny-dpo:latest" in ollama_server.models and result.digest == ollama_server.models["tiny-dpo:latest"][
        "digest"]
    create = ollama_server.bodies("/api/create")[0]
    assert create["quantize"] == "q4_K_M" and set(create["files"]) == set(result_files(tmp_path))
    assert create["template"].startswith("{{- range .Messages }}<|im_start|>")  # passed explicitly
    assert create["parameters"]["stop"] == ["<|im_start|>", "<|im_end|>"]
    assert any("converting model" in line for line in result.lines)          # statuses relayed
    assert ollama_server.count("/api/show") >= 1 and ollama_server.count("/api/chat") == 1  # verified

    posts = [e for e in ollama_server.requests() if e.method == "POST" and e.path.startswith("/api/blobs")]
    again = export(ollama_server, tiny_model_dir, tmp_path)
    assert again.uploaded == 0 and again.skipped == result.uploaded
    assert [e for e in ollama_server.requests() if e.method == "POST" and e.path.startswith("/api/blobs")] == posts


def result_files(tmp_path: Path) -> dict[str, str]:
    return ExportFolder.read(tmp_path / "export").files


def test_a_create_that_fails_midway_leaves_nothing_claimed(ollama_server, tiny_model_dir: Path, tmp_path: Path,
                                                           capsys) -> None:
    ollama_server.fail("error_mid_stream", endpoint="/api/create", after_chunks=1, message="no space left")
    code = prefloop(["export", str(tiny_model_dir), "--ollama", "tiny-dpo", "--host", ollama_server.url,
                     "--output", str(tmp_path / "export"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "no space left" in err and "Traceback" not in err
    assert "tiny-dpo:latest" not in ollama_server.models
    assert prefloop(["export", str(tiny_model_dir), "--ollama", "tiny-dpo", "--host", ollama_server.url,
                     "--output", str(tmp_path / "export"), "--quiet"]) == 0   # the rerun finishes it
    assert "tiny-dpo:latest" in ollama_server.models


def test_the_weights_go_to_the_configured_host_and_nowhere_else(ollama_server, tiny_model_dir: Path,
                                                                tmp_path: Path, monkeypatch) -> None:
    from ollama_server import OllamaServer

    with OllamaServer() as proxy:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
            monkeypatch.setenv(name, proxy.url)
        monkeypatch.setenv("OLLAMA_HOST", proxy.url)  # --host wins over the environment
        result = export(ollama_server, tiny_model_dir, tmp_path)
        assert result.complete and proxy.count() == 0


def own_address() -> str | None:
    """This machine's address on its network (not loopback), if it has one."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            address = s.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


def test_a_host_that_is_not_this_machine_gets_a_warning_first(tiny_model_dir: Path, tmp_path: Path) -> None:
    from ollama_server import OllamaServer

    address = own_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address")
    with OllamaServer(bind="0.0.0.0") as server:
        cfg = ExportConfig(model=str(tiny_model_dir), ollama="tiny", host=f"http://{address}:{server.port}",
                           output_dir=str(tmp_path / "export"))
        lines: list[str] = []
        export_model(cfg, lines.append)
    warned = [i for i, line in enumerate(lines) if "about to be uploaded to" in line and address in line]
    uploading = [i for i, line in enumerate(lines) if "uploading" in line]
    assert warned and uploading and warned[0] < uploading[0]


def lora_adapter(tiny_model_dir: Path, folder: Path, **config) -> Path:
    """A trained-looking PEFT LoRA adapter on the tiny model (B made non-zero so merging changes the logits)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], **config))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    model.save_pretrained(folder)
    return folder


def test_a_lora_adapter_is_merged_before_export(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = lora_adapter(tiny_model_dir, tmp_path / "adapter")
    folder = write_export(adapter, tmp_path / "export")
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter)
    merged = merged.merge_and_unload().to(torch.bfloat16)
    merged.save_pretrained(tmp_path / "merged")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "merged")
    assert torch.equal(logits(Path(folder.path)), logits(tmp_path / "merged"))
    assert not torch.equal(logits(Path(folder.path)), logits(tiny_model_dir))
    assert folder.adapter is not None and set(folder.adapter_files) == {"adapter/adapter_config.json",
                                                                        "adapter/adapter_model.safetensors"}


def test_an_adapter_goes_over_its_base_and_rslora_is_refused(ollama_server, tiny_model_dir: Path,
                                                             tmp_path: Path) -> None:
    export(ollama_server, tiny_model_dir, tmp_path / "base", ollama="tiny-base")
    adapter = lora_adapter(tiny_model_dir, tmp_path / "adapter")
    result = export(ollama_server, adapter, tmp_path, ollama="tiny-lora", adapter=True, base="tiny-base")
    create = ollama_server.bodies("/api/create")[-1]
    assert result.complete and create["from"] == "tiny-base" and "files" not in create
    assert set(create["adapters"]) == {"adapter_config.json", "adapter_model.safetensors"}
    rs = lora_adapter(tiny_model_dir, tmp_path / "rslora", use_rslora=True)
    with pytest.raises(ExportError, match="rsLoRA"):
        export(ollama_server, rs, tmp_path / "rs", ollama="tiny-rs", adapter=True, base="tiny-base")
    assert "tiny-rs:latest" not in ollama_server.models


def test_without_a_server_only_the_folder_is_written(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    assert prefloop(["export", str(tiny_model_dir), "--output", str(tmp_path / "out")]) == 0
    assert "ollama create NAME -f Modelfile" in capsys.readouterr().out
    assert (tmp_path / "out" / "Modelfile").exists()


def test_an_unreachable_server_fails_before_the_folder_is_written(tiny_model_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = ExportConfig(model=str(tiny_model_dir), ollama="x", host=f"http://127.0.0.1:{port}",
                       output_dir=str(tmp_path / "out"))
    with pytest.raises(ServerFatal, match="cannot connect.*ollama serve"):
        export_model(cfg, lambda text: None)
    assert not (tmp_path / "out").exists()
