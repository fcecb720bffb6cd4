"""The fused AdamW step (one kernel for every weight) against the plain per-weight reference it replaces."""

from __future__ import annotations

import copy

import torch

from trainer.optim import fusable, make_optimizer


def tiny_lm() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=4, intermediate_size=64, max_position_embeddings=64))


def steps(model: torch.nn.Module, opt: torch.optim.Optimizer, n: int, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        ids = torch.randint(0, 64, (3, 12), generator=g)
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))


def test_cpu_weights_take_the_fused_step() -> None:
    model = tiny_lm()
    assert fusable(list(model.parameters()))
    assert make_optimizer(model, 1e-3, 0.0).defaults["fused"]
    assert not make_optimizer(model, 1e-3, 0.0, fused=False).defaults["fused"]


def test_fused_step_equals_the_per_weight_reference() -> None:
    """Weight decay on the matrices only, a large learning rate so that differences would show: same weights."""
    fast, plain = tiny_lm(), tiny_lm()
    steps(fast, make_optimizer(fast, 1e-2, 0.1), 6)
    steps(plain, make_optimizer(plain, 1e-2, 0.1, fused=False), 6)
    assert max_diff(fast, tiny_lm()) > 1e-3    # they did move
    assert max_diff(fast, plain) <= 1e-5


def test_a_plain_checkpoint_resumes_under_the_fused_step() -> None:
    """An optimizer state written by the per-weight AdamW (checkpoints of earlier runs) continues fused exactly as
    it would have continued plain."""
    a = tiny_lm()
    opt_a = make_optimizer(a, 1e-2, 0.1, fused=False)
    steps(a, opt_a, 3)
    b = copy.deepcopy(a)
    opt_b = make_optimizer(b, 1e-2, 0.1)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    steps(a, opt_a, 3, seed=2)
    steps(b, opt_b, 3, seed=2)
    assert max_diff(a, b) <= 1e-5
