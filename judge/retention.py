"""What the trained model's answers show without any judge: did DPO keep the skill while it moved the style?

DPO "shapes preferences on top of a skill the model already has"; pushed too far it buys the preference with
the task itself (stock polite openings instead of the answer, loops, longer and emptier text) and a weak judge
does not notice. These measures read the answers themselves, next to the reference model's answers to the same
held-out prompts and the prompts' known-good answers (the dataset's own answer, or a pair's chosen side):

- **content-word recall** (the headline measure): the share of the known-good answer's distinct content words
  (words that are not function words; numbers count) that appear in the answer. A polite or longer wording of
  the same answer keeps it; an answer that never gives the fact loses it. Recall, not precision, because DPO on
  a style axis is *supposed* to add words; what it must not do is drop the content.
- **ROUGE-L F1** against the known-good answer (longest common word subsequence; Lin, 2004): order-aware, and it
  falls when the content is buried in filler, which recall alone does not see.
- **stock openings**: the share of answers that open with the same first words (``STOCK_WORDS``), e.g.
  "I'd be happy to help": the commonest way a preference for politeness turns into one phrase for everything.
- loops (``prefloop.text.repeats_itself``), empty answers and length.
- **per prompt**, which model kept more of the known-good content.

All pure functions of strings, checked by hand in ``tests/test_judge_retention.py``.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from judge.results import AnswerRow, PromptSkill, Retention, SideSkill
from judge.stats import bootstrap_ci, sign_test
from prefloop.text import repeats_itself, words

STOCK_WORDS = 4          # "i d be happy": the opening that marks a stock phrase (4 word tokens)
STOCK_SHARE = 0.10       # more answers than this opening alike is a stock phrase, not a topic
TAUGHT_P = 0.05          # an opening on the chosen side of pairs beyond this chance is taught (taught_opening)
SKILL_KEPT = 0.95        # a policy keeping less than this share of the reference's content has lost skill ...
                         # ... when the per-prompt loss is also clear of noise (diff_ci entirely below 0)
MIN_RECALL = 0.05         # a reference recalling less of the known-good content gives no ratio ("kept 590 %")
LONGER = 1.5             # answers this many times as long as the reference's: bought with length
LEVERS = ("raise rpo_alpha (the NLL anchor on the chosen answers; 1.0 by default, so above that), raise beta (stay "
          "closer to the reference), lower lr, or train fewer steps; and answer the held-out prompts the way "
          "training rendered them (prompt_format)")

# English function words (and the pieces \w+ cuts from contractions): what content-word recall ignores
STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both but
by can could did do does doing down during each few for from further had has have having he her here hers herself
him himself his how i if in into is it its itself just me more most my myself no nor not now of off on once only
or other our ours ourselves out over own same she should so some such than that the their theirs them themselves
then there these they this those through to too under until up very was we were what when where which while who
whom why will with would you your yours yourself yourselves also may might must shall us let
d ll m re s t ve
""".split())


def content_words(text: str) -> set[str]:
    """The distinct lower-cased words of ``text`` that are not function words."""
    return {w for w in words(text) if w not in STOPWORDS}


def content_recall(answer: str, known_good: str) -> float | None:
    """|content words of ``known_good`` found in ``answer``| / |content words of ``known_good``|; None when the
    known-good answer has no content word (nothing to recall)."""
    wanted = content_words(known_good)
    if not wanted:
        return None
    return len(wanted & content_words(answer)) / len(wanted)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences (dynamic programming, O(len a · len b))."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        row = [0]
        for j, y in enumerate(b):
            row.append(prev[j] + 1 if x == y else max(prev[j + 1], row[j]))
        prev = row
    return prev[-1]


def rouge_l(answer: str, known_good: str) -> float:
    """ROUGE-L F1 over word tokens: with L = LCS(answer, known-good), P = L / |answer|, R = L / |known-good|,
    F = 2PR / (P + R); 0 when either is empty or nothing is shared."""
    a, k = words(answer), words(known_good)
    lcs = lcs_length(a, k)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(a), lcs / len(k)
    return 2 * p * r / (p + r)


def opening(text: str, n: int = STOCK_WORDS) -> str | None:
    """The first ``n`` word tokens, lower-cased (None for an answer shorter than that)."""
    tokens = words(text)
    return " ".join(tokens[:n]) if len(tokens) >= n else None


def stock_opening(answers: Sequence[str], n: int = STOCK_WORDS) -> tuple[str | None, int]:
    """The opening most answers share and how many open with it; ``(None, 0)`` when no two answers share one."""
    counts = Counter(o for o in (opening(a, n) for a in answers) if o is not None)
    if not counts:
        return None, 0
    phrase, count = counts.most_common(1)[0]
    return (phrase, count) if count >= 2 else (None, 0)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def side_skill(answers: Sequence[str], known_good: Sequence[str | None]) -> SideSkill:
    """One model's skill figures over its answers (``known_good[i]`` belongs to ``answers[i]``)."""
    pairs = [(a, k) for a, k in zip(answers, known_good) if k]
    recalls = [r for r in (content_recall(a, k) for a, k in pairs) if r is not None]
    phrase, count = stock_opening(answers)
    return SideSkill(content_recall=_mean(recalls), rouge_l=_mean([rouge_l(a, k) for a, k in pairs]),
                     stock_opening=phrase, stock_share=count / len(answers) if answers else 0.0,
                     loops=sum(repeats_itself(a) for a in answers), empty=sum(not a.strip() for a in answers),
                     mean_chars=_mean([len(a) for a in answers]) or 0.0)


def lost_skill(kept: float | None, diff_ci_high: float | None) -> bool:
    """Clearly less than the reference: under ``SKILL_KEPT`` of its content, and the paired interval of the
    per-prompt difference entirely below zero (so the loss is not the noise of a few prompts)."""
    return kept is not None and kept < SKILL_KEPT and diff_ci_high is not None and diff_ci_high < 0


def stock_collapse(share: float, reference_share: float, limit: float = STOCK_SHARE) -> bool:
    """The preference has become one stock phrase: more than ``limit`` of the trained answers open alike, and more
    than the reference's do."""
    return share > limit and share > reference_share


def taught_opening(chosen: Sequence[str], rejected: Sequence[str], limit: float = STOCK_SHARE) -> str | None:
    """The opening a set of preference pairs teaches for its own sake (a judge that rewards "I'd be happy to help"
    picks it whenever a sample has it, and the next rounds' answers collapse onto it), or ``None``. Either way of
    telling counts:

    - **share**: more than ``limit`` of the chosen answers open with it, and at most half as many rejected ones;
    - **sign**: over the pairs whose two answers open differently, it is on the chosen side more often than a fair
      coin would put it there (one-sided sign test, p < ``TAUGHT_P``). This catches the phrase while it is still
      rare: on the seed, round 3 had it on the chosen side of 7 pairs and on no rejected side, 4 % of the chosen
      answers, and round 4's answers opened with it 2.5 times as often as the SFT model's.

    ``limit >= 1`` turns both off; of several phrases, the one the sign test is surest of."""
    if limit >= 1.0:
        return None
    phrase, count = stock_opening(chosen)
    if phrase is not None and count > limit * len(chosen) \
            and 2 * sum(opening(r) == phrase for r in rejected) <= count:
        return phrase
    sides = [(opening(c), opening(r)) for c, r in zip(chosen, rejected)]
    on_chosen = Counter(c for c, r in sides if c is not None and c != r)
    on_rejected = Counter(r for c, r in sides if r is not None and c != r)
    p_values = {o: sign_test(k, on_rejected[o]) for o, k in on_chosen.items()}
    best = min(p_values, key=lambda o: (p_values[o], -on_chosen[o]), default=None)
    return best if best is not None and p_values[best] < TAUGHT_P else None


def retention(answers: Sequence[AnswerRow], *, n_boot: int = 2000, seed: int = 0) -> Retention:
    """Both models' skill on the held-out prompts and what the policy kept of the reference's."""
    if not answers:
        return Retention()
    kg = [a.known_good for a in answers]
    pol = side_skill([a.policy_answer for a in answers], kg)
    ref = side_skill([a.reference_answer for a in answers], kg)
    per_prompt = []
    for a in answers:
        if a.known_good:
            p, r = content_recall(a.policy_answer, a.known_good), content_recall(a.reference_answer, a.known_good)
            if p is not None and r is not None:
                per_prompt.append(PromptSkill(id=a.id, policy=p, reference=r))
    diffs = [p.policy - p.reference for p in per_prompt]
    low, high = bootstrap_ci(diffs, n_boot=n_boot, seed=seed) if diffs else (None, None)
    kept = (pol.content_recall / ref.content_recall   # a share of next to nothing is noise, not a ratio
            if pol.content_recall is not None and ref.content_recall and ref.content_recall >= MIN_RECALL else None)
    return Retention(n=len(answers), n_known_good=sum(bool(k) for k in kg), policy=pol, reference=ref, kept=kept,
                     diff_ci=[low, high], better=sum(d > 0 for d in diffs), worse=sum(d < 0 for d in diffs),
                     same=sum(d == 0 for d in diffs),
                     length_ratio=pol.mean_chars / ref.mean_chars if ref.mean_chars else None,
                     lost=lost_skill(kept, high), per_prompt=per_prompt)


def retention_warnings(ret: Retention) -> list[str]:
    """What the answers say went wrong, each with the lever that fixes it."""
    if not ret.n:
        return []
    out = []
    pol, ref = ret.policy, ret.reference
    if ret.lost:
        out.append(f"the trained model kept less of the task: it keeps {ret.kept:.0%} of the reference's answer "
                   f"content (content-word recall of the known-good answers {pol.content_recall:.3f} vs "
                   f"{ref.content_recall:.3f}; worse on {ret.worse} prompts, better on {ret.better}); DPO should "
                   f"shape the style, not lose the skill: {LEVERS}")
    if stock_collapse(pol.stock_share, ref.stock_share):
        out.append(f"{pol.stock_share:.0%} of the trained answers open with \"{pol.stock_opening} …\" (the "
                   f"reference's commonest opening: {ref.stock_share:.0%}): the preference has become one stock "
                   f"phrase; {LEVERS}")
    if pol.loops > ref.loops and pol.loops * 5 >= ret.n:
        out.append(f"{pol.loops} of {ret.n} trained answers repeat a phrase over and over (the reference's: "
                   f"{ref.loops}): the policy has drifted into degenerate text, whatever the loss says; {LEVERS}")
    if pol.empty > ref.empty:
        out.append(f"{pol.empty} of {ret.n} trained answers are empty (the reference's: {ref.empty})")
    if ret.length_ratio is not None and ret.length_ratio > LONGER:
        out.append(f"the trained model's answers are {ret.length_ratio:.1f}x as long as the reference's "
                   f"({pol.mean_chars:.0f} vs {ref.mean_chars:.0f} characters): DPO often buys preference with "
                   "length; compare the length-controlled win rate, and raise beta or lower lr if the answers only "
                   "grew")
    if ret.n < 30:
        out.append(f"only {ret.n} held-out prompts were judged: the interval is wide; hold out more prompts "
                   "for a firmer number")
    return out
