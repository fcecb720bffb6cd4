"""The benchmark scripts' own plumbing (no model runs): their settings build, as the GPU check needs them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench_train():
    spec = importlib.util.spec_from_file_location("bench_train", ROOT / "bench" / "train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_config_takes_the_sides_dtype():
    """--bf16 passes dtype through the side's extras; it must replace the fp32 default, not collide with it."""
    bench = _bench_train()
    cfg = bench.our_config("unused-model", "unused-out", 3, dtype="bf16", device="cpu")
    assert cfg.dtype == "bf16" and cfg.device == "cpu" and cfg.max_steps == 3
    assert bench.our_config("unused-model", "unused-out", 3).dtype == "fp32"
