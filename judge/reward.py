"""``reward:PATH``: a reward model as the judge, a transformers sequence-classification folder with one output
(Skywork-Reward-V2 and most Bradley-Terry reward models are of this kind).

A reward model reads the conversation, prompt as the user's turn and the answer as the assistant's (through its
tokenizer's chat template when it has one, else the two texts one after the other), and returns one number: the
answer's reward r. Two answers compare by their rewards, and the difference r(a) − r(b) is the Bradley-Terry
log-odds that ``a`` is preferred, recorded with the verdict as a local judge's log-odds are. Only safetensors
weights are loaded and no remote code runs (ArmoRM's custom head needs ``trust_remote_code``, which is not taken
from a judge setting). The identity in the cache is the folder's listing (``prefloop.fingerprint.model_identity``),
so retraining the reward model asks again.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from judge.direct import Pick, by_scores
from prefloop.llm.base import ClientSpec

MAX_TOKENS = 4096


class RewardJudge:
    """A ``reward:`` judge (see the module docstring); speaks ``judge.direct.DirectJudge``."""

    def __init__(self, spec: ClientSpec, *, device: str = "cpu"):
        from prefloop.fingerprint import model_identity

        self.path = Path(spec.model).expanduser()
        self.written = str(spec)
        self.spec = f"{self.written}#{model_identity(str(self.path))}"
        self.device = device
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()
        self._memo: dict[tuple[str, str], float] = {}

    def check(self) -> None:
        """The folder is a one-output sequence-classification model with safetensors weights (no loading)."""
        config = self.path / "config.json"
        if not config.is_file():
            raise ValueError(f"{self.path}: not a model folder (no config.json); give a transformers "
                             "sequence-classification folder")
        meta = json.loads(config.read_text())
        arch = " ".join(meta.get("architectures") or [])
        if "ForSequenceClassification" not in arch:
            raise ValueError(f"{self.path}: a {arch or 'model'} is not a reward model (want a "
                             "...ForSequenceClassification folder)")
        labels = meta.get("num_labels", len(meta.get("id2label") or {}) or 1)
        if labels != 1:
            raise ValueError(f"{self.path}: {labels} outputs; a reward model gives one number per answer")
        if not any(self.path.glob("*.safetensors")):
            raise ValueError(f"{self.path}: no .safetensors weights (pickled weights are not loaded from a judge "
                             "setting); convert them with save_pretrained(safe_serialization=True)")

    def load(self) -> tuple[Any, Any]:
        if self._model is None:
            import torch
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            self.check()
            self._tokenizer = AutoTokenizer.from_pretrained(self.path)
            self._model = AutoModelForSequenceClassification.from_pretrained(
                self.path, use_safetensors=True, torch_dtype=torch.float32).to(self.device).eval()
        return self._model, self._tokenizer

    async def preflight(self) -> None:
        self.check()

    async def aclose(self) -> None:
        self._model = None

    def text(self, prompt: str, answer: str) -> str:
        _, tokenizer = self.load()
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template([{"role": "user", "content": prompt},
                                                  {"role": "assistant", "content": answer}], tokenize=False)
        return f"{prompt}\n\n{answer}"

    def score(self, prompt: str, answer: str) -> float:
        """The answer's reward (memoised: both orders of a pair score the same two answers)."""
        import torch

        if (prompt, answer) in self._memo:
            return self._memo[(prompt, answer)]
        with self._lock:
            model, tokenizer = self.load()
            ids = tokenizer(self.text(prompt, answer), return_tensors="pt", add_special_tokens=False,
                            truncation=True, max_length=MAX_TOKENS)
            with torch.no_grad():
                value = float(model(**{k: v.to(self.device) for k, v in ids.items()}).logits[0, 0])
        self._memo[(prompt, answer)] = value
        return value

    def pick(self, prompt: str, first: str, second: str) -> Pick:
        return by_scores(self.score(prompt, first), self.score(prompt, second), logodds=True)
