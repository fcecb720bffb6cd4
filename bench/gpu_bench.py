"""Helpers of bench/gpu_check.sh: the matmul peak, models of real shapes with random weights, the figures table.

    python bench/gpu_bench.py peak OUT.json [--cpu]           # bf16 matmul FLOP/s of this GPU (fp32 on a CPU)
    python bench/gpu_bench.py build SHAPE DIR --pairs FILE [--cpu]
    python bench/gpu_bench.py attention OUT.json MODEL_DIR [--cpu]   # dense mask vs flex block mask, added to OUT
    python bench/gpu_bench.py figures OUT_DIR                 # figures.md from the checks' JSON files

Models are built where no hub is reachable: the config of the real model (written here), random weights (speed
and memory do not depend on their values), and a byte-level BPE tokenizer trained on the pairs (prefloop.tiny).
The tokenizer's vocabulary is smaller than the model's; the embedding and LM head keep the real vocabulary, so
the LM head costs what it costs with the real tokenizer. ``--cpu`` shrinks every shape (the script's own check).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The published configs' shapes (the fields that set speed and memory)
SHAPES = {
    "smollm2-135m": dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True, rope_theta=100000.0,
                         max_position_embeddings=8192),
    "llama-3.2-1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                         intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0,
                         max_position_embeddings=131072),
    "llama-3.1-8b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                         intermediate_size=14336, vocab_size=128256, tie_word_embeddings=False,
                         rope_theta=500000.0, max_position_embeddings=131072),
}
CPU_SHAPE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, vocab_size=2048, max_position_embeddings=2048)


def peak(out: Path, cpu: bool) -> None:
    """The dense matmul rate this device reaches (bf16 on a GPU; fp32 on a CPU): the MFU denominator."""
    import torch

    dev = "cpu" if cpu else "cuda"
    n, dtype = (512, torch.float32) if cpu else (8192, torch.bfloat16)
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    sync = (lambda: None) if cpu else torch.cuda.synchronize
    for _ in range(3):
        a @ b
    sync()
    best = 0.0
    for _ in range(5):
        t0, reps = time.perf_counter(), 2 if cpu else 20
        for _ in range(reps):
            a @ b
        sync()
        best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t0))
    name = "cpu" if cpu else torch.cuda.get_device_name(0)
    out.write_text(json.dumps({"device": name, "dtype": str(dtype), "n": n, "flops": best}))
    print(f"{name}: {best / 1e12:.1f} TFLOP/s ({dtype}, {n}x{n} matmuls)")


def build(shape: str, folder: Path, pairs: Path, cpu: bool) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from prefloop.tiny import train_tokenizer

    if (folder / "config.json").exists():
        print(f"{folder}: already built")
        return
    rows = json.loads(pairs.read_text())
    texts = [" ".join([r["instruction"], r.get("input", ""), r["chosen"], r["rejected"]]) for r in rows]
    tokenizer = train_tokenizer(texts, 1024 if cpu else 8192)
    fields = {**SHAPES[shape], **(CPU_SHAPE if cpu else {})}
    config = LlamaConfig(**fields, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=None)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    with torch.device("cpu" if cpu else "cuda"):
        model = LlamaForCausalLM(config).to(torch.float32 if cpu else torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    params = sum(p.numel() for p in model.parameters())
    print(f"{folder}: {shape}{' (cpu-sized)' if cpu else ''}, {params / 1e9:.3f} B parameters, "
          f"{time.perf_counter() - t0:.0f} s")


def attention(out: Path, model_dir: str, cpu: bool) -> None:
    """The two ways packed rows attend (trainer.attention), on the same model and micro-batch: their log-probs and
    gradients side by side in fp32 (the flex path's only gradient check: PyTorch has no CPU backward for it), then
    bf16 autocast forward+backward timed per variant (first call, which compiles flex, and the steady state) with
    its peak GPU memory, at GPU micro-batch sizes (4 rows of ~2k packed tokens). Added to ``out`` (peak.json) under
    "attention", so the check adds no file, with the ``choice`` the later checks train with (flex when it agrees
    with dense and is faster). On a CPU (``--cpu``): forward only, tiny sizes, and dense (flex cannot train there)."""
    import random

    import torch
    from transformers import AutoModelForCausalLM

    from trainer.logps import PackedLM
    from trainer.packing import pack
    from trainer.tokenize import Example

    dev = torch.device("cpu" if cpu else "cuda")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(dev)
    vocab = min(model.config.vocab_size, 8192)
    rnd = random.Random(0)

    def batch(rows: int, prompt: int, completion: int):  # noqa: ANN202
        ids = lambda n: [rnd.randrange(vocab) for _ in range(rnd.randint(n // 2, n))]  # noqa: E731
        exs = [Example(f"x{i}", ids(prompt), [ids(completion), ids(completion)]) for i in range(rows)]
        return pack(exs, 0, multiple_of=64).to(dev), sum(e.counted_tokens() for e in exs)

    sync = (lambda: None) if cpu else torch.cuda.synchronize

    def save() -> None:
        data = json.loads(out.read_text()) if out.exists() else {}
        data["attention"] = result
        out.write_text(json.dumps(data))

    small, _ = batch(2, 48 if cpu else 200, 64 if cpu else 300)
    result: dict = {"model": model_dir}
    got = {}
    for kind in ("dense", "flex"):  # fp32: the two must agree (<= 1e-5 per token)
        lm = PackedLM(model, kind)
        model.zero_grad(set_to_none=True)
        with torch.set_grad_enabled(not cpu):
            sums, counts = lm(small)
            if not cpu:
                sums.sum().backward()
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        got[kind] = ((sums / counts).detach(), grads)
    result["max_logp_diff_per_token"] = float((got["flex"][0] - got["dense"][0]).abs().max())
    if not cpu:
        result["max_grad_diff"] = max(float((got["flex"][1][n] - g).abs().max()) for n, g in got["dense"][1].items())
    save()  # what is measured so far survives the check's time limit
    model.zero_grad(set_to_none=True)
    big, tokens = batch(2, 96, 128) if cpu else batch(4, 1024, 1536)
    result["rows"], result["row_length"], result["tokens"] = big.n_rows, big.input_ids.size(1), tokens
    for kind in ("dense", "flex"):
        lm = PackedLM(model, kind)
        if not cpu:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(6):
            t0 = time.perf_counter()
            with torch.set_grad_enabled(not cpu), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=not cpu):
                sums, _ = lm(big)
                if not cpu:
                    sums.sum().backward()
            sync()
            times.append(time.perf_counter() - t0)
            model.zero_grad(set_to_none=True)
        result[kind] = {"first_s": times[0], "steady_s": sum(times[2:]) / len(times[2:]),
                        "steady_tokens_per_s": tokens * len(times[2:]) / sum(times[2:]),
                        "peak_gpu_mib": None if cpu else torch.cuda.max_memory_allocated() / 2**20}
        save()
        print(f"attention {kind}: first call {times[0]:.2f} s, steady {result[kind]['steady_s']:.3f} s "
              f"({result[kind]['steady_tokens_per_s']:,.0f} tok/s)", flush=True)
    # the variant the later checks train with: flex where it trains (CUDA), agrees with dense and is faster
    agrees = result["max_logp_diff_per_token"] <= 1e-3 and result.get("max_grad_diff", 0.0) <= 1e-2
    result["choice"] = ("flex" if not cpu and agrees and result["flex"]["steady_s"] < result["dense"]["steady_s"]
                        else "dense")
    save()
    print(json.dumps(result))


SIDES = (("ours", "trl", "full"), ("ours_lora", "trl_lora", "LoRA"), ("ours_qlora", None, "QLoRA"))


def figures(out: Path) -> None:
    """One row per side of every check: first-step and steady tokens/s, MFU against the measured peak, peak GPU
    memory, and how far its losses and log-probs are from the other side's."""
    peak_file = out / "peak.json"
    peak_flops = json.loads(peak_file.read_text())["flops"] if peak_file.exists() else None
    print(f"MFU = tokens/s x training FLOPs per token / measured peak ({peak_flops / 1e12:.3g} TFLOP/s); FLOPs per "
          "token: 6 x linear-layer parameters for a full fine-tune, 4 x for a frozen LoRA base, plus attention "
          "6 x layers x width x mean sequence length; tokens counted as TRL counts them (the prompt once per "
          "completion), so both sides are credited the same work and the MFU ratio is the speed ratio."
          if peak_flops else "no peak.json: MFU not computed")
    print()
    print("| check | side | tok/s | first step | steady | MFU steady | peak GPU MiB | vs TRL | max |Δloss| | "
          "max |Δlogp chosen| |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for path in sorted(out.glob("*.json")):
        if path.name == "peak.json":
            continue
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        for ours_key, trl_key, label in SIDES:
            for key, other in ((ours_key, trl_key), (trl_key, None)):
                r = data.get(key) if key else None
                if not r:
                    continue
                base = data.get(other) if other else None
                mfu = (f"{100 * r['steady_tokens_per_s'] * r['flops_per_token'] / peak_flops:.1f}%"
                       if peak_flops and r.get("flops_per_token") and r.get("steady_tokens_per_s") else "-")
                gpu = f"{r['peak_gpu_mib']:,.0f}" if r.get("peak_gpu_mib") else "-"
                vs = dl = dp = "-"
                if base:
                    vs = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x"
                    dl = f"{max(abs(a - b) for a, b in zip(r['losses'], base['losses'])):.1e}"
                    pairs = [(a, b) for a, b in zip(r.get("logps_chosen", []), base.get("logps_chosen", []))
                             if a is not None and b is not None]
                    dp = f"{max(abs(a - b) for a, b in pairs):.1e}" if pairs else "-"
                side = ("prefloop " if key.startswith("ours") else "TRL ") + label
                print(f"| {path.stem} | {side} | {r['tokens_per_s']:,.0f} | {r.get('first_tokens_per_s', 0):,.0f} | "
                      f"{r.get('steady_tokens_per_s', 0):,.0f} | {mfu} | {gpu} | {vs} | {dl} | {dp} |")
    att = json.loads(peak_file.read_text()).get("attention") if peak_file.exists() else None
    if att:
        print()
        print(f"Attention over packed rows ({att.get('rows', '?')} rows of {att.get('row_length', '?')} tokens, "
              f"{att.get('tokens', '?')} counted tokens; fp32 flex vs dense: log-probs per token differ by "
              f"{att['max_logp_diff_per_token']:.1e}"
              + (f", gradients by {att['max_grad_diff']:.1e}" if "max_grad_diff" in att else "") + "):")
        print(f"The checks above trained with attention = {att.get('choice', 'dense (the check did not finish)')}.")
        print("| attention | first call s | steady s | steady tok/s | peak GPU MiB |")
        print("|---|---:|---:|---:|---:|")
        for kind in ("dense", "flex"):
            r = att.get(kind)
            if not r:
                print(f"| {kind} | (did not finish) | | | |")
                continue
            gpu = f"{r['peak_gpu_mib']:,.0f}" if r.get("peak_gpu_mib") else "-"
            print(f"| {kind} | {r['first_s']:.2f} | {r['steady_s']:.3f} | {r['steady_tokens_per_s']:,.0f} | {gpu} |")
    print()
    for path in sorted(out.glob("*.json")):
        data = json.loads(path.read_text()) if path.name != "peak.json" else {}
        for key in ("ours", "trl", "ours_lora", "trl_lora", "ours_qlora"):
            r = data.get(key)
            if r:
                print(f"{path.stem} {key}: losses " + " ".join(f"{x:.4f}" for x in r["losses"])
                      + "; logps/chosen " + " ".join(f"{x:.3f}" for x in r.get("logps_chosen", []) if x is not None))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("peak")
    p.add_argument("out", type=Path)
    p.add_argument("--cpu", action="store_true")
    b = sub.add_parser("build")
    b.add_argument("shape", choices=sorted(SHAPES))
    b.add_argument("folder", type=Path)
    b.add_argument("--pairs", type=Path, required=True)
    b.add_argument("--cpu", action="store_true")
    a = sub.add_parser("attention")
    a.add_argument("out", type=Path)
    a.add_argument("model_dir")
    a.add_argument("--cpu", action="store_true")
    f = sub.add_parser("figures")
    f.add_argument("out", type=Path)
    args = ap.parse_args()
    if args.cmd == "peak":
        peak(args.out, args.cpu)
    elif args.cmd == "build":
        build(args.shape, args.folder, args.pairs, args.cpu)
    elif args.cmd == "attention":
        attention(args.out, args.model_dir, args.cpu)
    else:
        figures(args.out)


if __name__ == "__main__":
    main()
