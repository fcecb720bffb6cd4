"""The reference recipe (LLMs-from-scratch ch07): rewrite a known-good answer slightly along an axis.

For each prompt with a known-good answer, a seeded coin picks a direction (e.g. polite or impolite); the model
rewrites the answer slightly in that direction. The better side is chosen: a polite rewrite beats the original,
the original beats an impolite rewrite. One side of every pair is the dataset's own answer.

The notebook kept whatever the model said. About 1 in 15 of its rewrites carry a preamble ("Here is the
rewritten response:"), wrapping quotes or backticks, and 6 in 1,100 are identical to the original; here those
are cleaned (what was removed is kept in ``meta``) or dropped with a counted reason.
"""

from __future__ import annotations

import random
import re
from typing import TYPE_CHECKING, Any

from prefloop.records import PromptRecord, prompt_text, stable_id
from prefloop.runner import Drop
from prefloop.templates import alpaca_input
from prefloop.text import repeats_itself, same_text

if TYPE_CHECKING:
    from generator.run import Context


# The notebook's prompt, quirks included ("return return", no space after the first two sentences).
VERBATIM = ("Given the input `{task}` and correct output `{answer}`, slightly rewrite the output to be more "
            "{direction}.Keep the modification minimal.Only return return the generated response and nothing else.")

CLEAN = ("Here is a task and a correct answer to it.\n\n"
         "Task:\n{task}\n\n"
         "Correct answer:\n{answer}\n\n"
         "Rewrite the answer to be slightly more {direction}. Keep the change minimal and keep it correct. "
         "Reply with the rewritten answer only: no introduction, no quotes, no explanation.")

# For small local rewriters (SmolLM2-135M): worked examples as earlier turns and no task text. With the
# instruction-only prompts a 135M model answers the task again or garbles the answer ("5000 grams is 5000
# grams."); with examples it keeps the answer and adds a phrase in the style of the examples, so only examples
# of the asked-for direction are shown (mixed ones got "Try to keep up." added to "polite" rewrites).
FEWSHOT_TURN = "Rewrite this answer to be slightly more {direction}. Keep the change minimal.\n\n{answer}"
FEWSHOT_EXAMPLES = {
    "better": (("The meeting is at 3 pm.", "Just so you know, the meeting is at 3 pm. Thank you!"),
               ("Close the door.", "Could you please close the door? Thank you!"),
               ("Paris is the capital of France.", "I hope this helps: Paris is the capital of France.")),
    "worse": (("Paris is the capital of France.", "Paris is the capital of France, obviously."),
              ("The meeting is at 3 pm.", "The meeting is at 3 pm, obviously. Try to keep up."),
              ("Close the door.", "Close the door already, obviously.")),
}


def kept_answer(rewrite: str, original: str, share: float = 0.5) -> bool:
    """Does the rewrite still carry the answer (at least ``share`` of its words)? Used for small rewriters,
    which sometimes answer with an example's content instead; strong models may reword freely."""
    words = re.findall(r"\w+", original.lower())
    have = set(re.findall(r"\w+", rewrite.lower()))
    return not words or sum(w in have for w in words) / len(words) >= share

# A first line that talks about the rewrite rather than being part of it.
_PREAMBLE = re.compile(
    r"^\s*(?:(?:sure|certainly|of course|okay|ok)[!,.]?\s*)?"
    r"(?:here(?:'s| is| are)|below is|this is)\b[^\n]*?"
    r"(?:rewrit|revis|version|modif|updat|edit|output|response|answer|tone|polite|impolite|{extra})[^\n]*:[ \t]*\n+",
    re.IGNORECASE)
_ACK = re.compile(r"^\s*(?:sure|certainly|of course|okay|ok)[!.,]?[ \t]*\n+", re.IGNORECASE)
_LABEL = re.compile(r"^\s*(?:#+\s*)?(?:rewritten|revised|modified|updated)?\s*(?:response|output|answer)\s*:\s*",
                    re.IGNORECASE)
_TRAILING_NOTE = re.compile(
    r"\n\s*\n\s*\(?(?:note|i (?:made|changed|rewrote|modified|kept|added|replaced))\b[^\n]*"
    r"(?:rewrit|chang|modif|tone|polite|impolite|minimal)[^\n]*\)?\s*$", re.IGNORECASE | re.DOTALL)
_QUOTES = [("```", "```"), ('"', '"'), ("“", "”"), ("'", "'"), ("`", "`"), ("«", "»")]


def rewrite_budget(reference: str, max_tokens: int) -> int:
    """Tokens allowed for a rewrite: a slight rewrite is about as long as the answer (the notebook's 70B
    rewrites all fit in 64 + half the answer's characters), and a small model that starts looping stops early."""
    return min(max_tokens, 64 + len(reference) // 2)


def build_messages(rec: PromptRecord, direction: str, style: str, better: str = "polite",
                   worse: str = "impolite") -> list[dict[str, str]]:
    """The chat turns for one rewrite request in the given style (``clean``, ``verbatim`` or ``fewshot``)."""
    if style != "fewshot":
        return [{"role": "user", "content": build_prompt(rec, direction, style)}]
    messages: list[dict[str, str]] = []
    for answer, rewrite in FEWSHOT_EXAMPLES["better" if direction == better else "worse"]:
        messages += [{"role": "user", "content": FEWSHOT_TURN.format(direction=direction, answer=answer)},
                     {"role": "assistant", "content": rewrite}]
    messages.append({"role": "user", "content": FEWSHOT_TURN.format(direction=direction, answer=rec.known_good)})
    return messages


def build_prompt(rec: PromptRecord, direction: str, style: str = "clean") -> str:
    """The request for one rewrite. The task is shown as the notebook's ``format_input`` for Alpaca rows."""
    if rec.meta.get("prompt_format") == "alpaca" and "instruction" in rec.meta:
        task = alpaca_input(rec.meta["instruction"], rec.meta.get("input", ""))
    else:
        task = prompt_text(rec.prompt)
    template = VERBATIM if style == "verbatim" else CLEAN
    return template.format(task=task, answer=rec.known_good or "", direction=direction)


def pick_direction(prompt_id: str, seed: int, better: str, worse: str) -> str:
    """A seeded coin per prompt: the same prompt gets the same direction in every run, whatever the order."""
    return random.Random(stable_id(seed, prompt_id)).choice([better, worse])


def clean_rewrite(text: str, original: str, directions: tuple[str, ...] = ()) -> tuple[str, list[str]]:
    """Strip what a chat model wraps around a rewrite; return the text and what was removed.

    A first line is only removed when it talks about the rewrite ("Here is the rewritten response:", "Here's a
    more polite version:") and the original answer did not start with it, so "Here are the numbers in order:
    1, 2, 3" stays when that is the answer.
    """
    removed: list[str] = []
    out = text.strip()
    extra = "|".join(re.escape(d) for d in directions if d) or "(?!)"
    preamble = re.compile(_PREAMBLE.pattern.replace("{extra}", extra), re.IGNORECASE)
    for pattern, name in ((_ACK, "acknowledgement"), (preamble, "preamble"), (_LABEL, "label")):
        m = pattern.match(out)
        if m and not original.strip().lower().startswith(m.group(0).strip().lower()) and out[m.end():].strip():
            removed.append(f"{name}: {m.group(0).strip()}")
            out = out[m.end():].strip()
    m = _TRAILING_NOTE.search(out)
    if m and m.start() > 0 and not _TRAILING_NOTE.search(original):
        removed.append(f"note: {m.group(0).strip()[:200]}")
        out = out[:m.start()].strip()
    changed = True
    while changed:
        changed = False
        for left, right in _QUOTES:
            if not (out.startswith(left) and out.endswith(right) and len(out) > len(left) + len(right)):
                continue
            if original.strip().startswith(left) and original.strip().endswith(right):
                continue  # the answer itself is quoted
            inner = out[len(left):len(out) - len(right)]
            if left == right and left != "```" and left in inner:
                continue  # '"run" and "jump"' is not one wrapped string
            if left == "```":
                inner = re.sub(r"^[\w+-]*\n", "", inner)  # ```text\n...``` language tag
            removed.append(f"quotes: {left}{right}")
            out, changed = inner.strip(), True
            break
    return out, removed


async def make_pair(ctx: Context, rec: PromptRecord) -> dict[str, Any] | Drop:
    """One rewrite request -> one pair (or a counted drop)."""
    cfg = ctx.cfg
    if not rec.known_good or not rec.known_good.strip():
        return Drop("no known-good answer to rewrite")
    direction = pick_direction(rec.id, cfg.seed, cfg.better, cfg.worse)
    messages = build_messages(rec, direction, cfg.rewrite_style, cfg.better, cfg.worse)
    reply = await ctx.chat(cfg.model, messages, temperature=cfg.temperature,
                           max_tokens=rewrite_budget(rec.known_good, cfg.max_tokens))
    rewrite, removed = clean_rewrite(reply.text, rec.known_good, (cfg.better, cfg.worse, cfg.axis))
    if not rewrite:
        return Drop("empty rewrite", {"raw": reply.text})
    if reply.extra.get("finish_reason") == "length":
        return Drop("rewrite cut off at its token budget", {"raw": reply.text, "direction": direction})
    if repeats_itself(rewrite) and not repeats_itself(rec.known_good):
        return Drop("degenerate repetition", {"raw": reply.text, "direction": direction})
    if cfg.rewrite_style == "fewshot" and not kept_answer(rewrite, rec.known_good):
        return Drop("rewrite lost the answer", {"raw": reply.text, "direction": direction})
    if same_text(rewrite, rec.known_good):
        return Drop("chosen identical to rejected", {"raw": reply.text, "direction": direction})
    if direction == cfg.better:
        chosen, rejected = rewrite, rec.known_good
    else:
        chosen, rejected = rec.known_good, rewrite
    meta = {"direction": direction, "axis": cfg.axis, "rewritten_side": "chosen" if direction == cfg.better
            else "rejected", "model": cfg.model}
    if removed:
        meta.update(cleaned=removed, raw=reply.text)
    return ctx.pair(rec, chosen, rejected, meta, reply)
