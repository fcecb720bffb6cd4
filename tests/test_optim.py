"""The optimizer's state across a change of its kernel: checkpoints written by the per-weight AdamW (runs from
before the fused kernel became the default) resume under ``make_optimizer`` exactly as they would have continued."""

from __future__ import annotations

import copy

import torch

from trainer.optim import make_optimizer


def tiny_lm() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=4, intermediate_size=64, max_position_embeddings=64))


def steps(model: torch.nn.Module, opt: torch.optim.Optimizer, n: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        ids = torch.randint(0, 64, (3, 12), generator=g)
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def per_weight(opt: torch.optim.Optimizer) -> torch.optim.Optimizer:
    for group in opt.param_groups:
        group["fused"], group["foreach"] = False, False
    return opt


def test_a_per_weight_checkpoint_resumes_under_make_optimizer() -> None:
    a = tiny_lm()
    opt_a = per_weight(make_optimizer(a, 1e-2, 0.1))
    steps(a, opt_a, 3, seed=1)
    b = copy.deepcopy(a)
    opt_b = make_optimizer(b, 1e-2, 0.1)  # whatever kernel it picks (fused on CPU and CUDA)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    steps(a, opt_a, 3, seed=2)
    steps(b, opt_b, 3, seed=2)
    moved = max((p - q).abs().max().item() for p, q in zip(b.parameters(), tiny_lm().parameters()))
    assert moved > 1e-3
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-5)
