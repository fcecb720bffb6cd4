"""The judge measured before its verdict is shown: how often it picks the better answer when that is known.

A win rate from a judge that cannot tell better from worse on this data is noise dressed as a number (the
quickstart's 135M judge picks the first answer every time). So every judge is first run on pairs whose better
side is known: the held-out pairs the generator made (``prefloop run`` passes ``split/heldout_pairs.jsonl``;
the chosen side is the better one by construction), or a pairs file the user gives (``prefloop judge
--validate PAIRS``); human labels will be one more such file, validated the same way. Each pair is judged
exactly like a held-out answer pair (same template, the same known-good answer shown when the pair carries its
dataset ``output``, both orders, the same cache and runner), with the chosen answer in the policy's place, so a
``win`` is a correct verdict and the judge's accuracy is its win rate of chosen over rejected.

Reported (``JudgeValidation``): accuracy with its pair-level bootstrap interval, position consistency, how often
the first-shown answer wins and how often the longer one does; for judges that return log-probabilities the
same accuracy from the content term of their log-odds (position taken out, ``judge.stats.position_and_content``)
and the verdict rule the win rate then uses. A judge whose interval contains 50 % gets no win rate in the
headline (``judge.report.headline``).
"""

from __future__ import annotations

from pathlib import Path

from judge.results import AnswerRow, JudgeValidation, JudgmentRow
from judge.selfpref import model_name
from judge.stats import GameRecord, bootstrap_ci, diagnostics, outcome_values, summarize
from prefloop.sources import load_preferences

# judges to suggest, weakest first: the next one after the judge in use (advice must never name the judge in use)
STRONGER = ("ollama:llama3.1:8b", "ollama:llama3.1:70b")


def validation_rows(path: str | Path, limit: int | None = None) -> list[AnswerRow]:
    """Pairs with a known better side as answer rows: chosen in the policy's place, rejected in the reference's,
    the pair's dataset answer (``meta.output``) as the known-good answer when it has one."""
    if not Path(path).exists():
        raise ValueError(f"{path}: no such validation pairs file (pairs whose better side is known: chosen/rejected)")
    pairs, report = load_preferences(path)   # a bad row is an error naming file, line and field
    if not pairs:
        raise ValueError(f"{path}: no usable validation pairs ({report.summary()}); the judge is measured on "
                         "pairs whose chosen and rejected answers differ")
    rows = [AnswerRow(id=f"val-{p.id}", prompt=p.prompt, policy_answer=p.chosen, reference_answer=p.rejected,
                      known_good=p.meta.get("output") if isinstance(p.meta.get("output"), str) else None,
                      policy_model="chosen", reference_model="rejected") for p in pairs]
    return rows[:limit] if limit else rows


def debiased_values(rows: list[JudgmentRow]) -> list[float] | None:
    """1 / ½ / 0 per pair from the sign of the content term; None unless every judged pair has log-odds."""
    judged = [r for r in rows if not r.identical]
    if not judged or any(r.content is None for r in judged):
        return None
    return [float(outcome_values([r.decided("debiased")])[0]) for r in rows]


def summarize_validation(judge: str, source: str, rows: list[JudgmentRow], *, n_boot: int = 2000,
                         seed: int = 0) -> JudgeValidation:
    """Accuracy, interval, biases and the verdict rule of one judge from its validation rows (one per pair)."""
    if not rows:
        return JudgeValidation(judge=judge, source=source)
    s = summarize([r.outcome for r in rows], n_boot=n_boot, seed=seed)
    games = [GameRecord(r.prompt_id, first="A" if g.first == "policy" else "B",
                        pick={"policy": "A", "reference": "B"}.get(g.pick or "", g.pick), len_a=r.len_policy,
                        len_b=r.len_reference) for r in rows for g in r.games]
    diag = diagnostics(games)
    v = JudgeValidation(judge=judge, source=source, n=s.n, accuracy=s.rate, ci_low=s.ci_low, ci_high=s.ci_high,
                        correct=s.wins, ties=s.ties, wrong=s.losses, unparsed=sum(r.unparsed for r in rows),
                        position_consistency=diag["position_consistency"],
                        first_position_rate=diag["first_position_rate"], longer_pick_rate=diag["longer_pick_rate"])
    values = debiased_values(rows)
    if values is not None:
        v.debiased_accuracy = sum(values) / len(values)
        v.debiased_ci_low, v.debiased_ci_high = bootstrap_ci(values, n_boot=n_boot, seed=seed)
        positions = [r.position for r in rows if r.position is not None]
        v.mean_position = sum(positions) / len(positions) if positions else None
    v.rule = choose_rule(v)
    v.rule_reason = rule_reason(v, rows)
    return v


def order_flips(rows: list[JudgmentRow]) -> dict[str, float | int | None]:
    """How often a judge's verdict flips with the order alone, before and after its position term is taken out.

    ``flipped`` / ``flip_rate``: judged pairs whose two orders picked different answers (both parsed).
    ``flip_rate_debiased``: over the pairs with log-odds in both orders, the share whose orders still disagree
    when each order's log-odds L is read as the sign of L − p̄, p̄ the judge's mean position term over these
    pairs (its bias in general, not this pair's): what is left is the judge changing its mind on content.
    ``logodds_verdicts``: the verdicts (one per order) that came with log-odds.
    """
    judged = [r for r in rows if not r.identical and not r.skipped]
    both = [r for r in judged if r.consistent is not None]
    flipped = sum(r.consistent is False for r in both)
    out: dict[str, float | int | None] = {
        "logodds_verdicts": sum(g.logodds is not None for r in judged for g in r.games),
        "verdicts": sum(len(r.games) for r in judged), "flipped": flipped,
        "flip_rate": flipped / len(both) if both else None, "flip_rate_debiased": None}
    pairs = []
    for r in judged:
        odds = {g.first: g.logodds for g in r.games}
        if odds.get("policy") is not None and odds.get("reference") is not None:
            pairs.append((odds["policy"], odds["reference"]))  # L1: policy shown first, L2: shown second
    if pairs:
        bias = sum(l1 + l2 for l1, l2 in pairs) / (2 * len(pairs))
        out["flip_rate_debiased"] = sum((l1 - bias > 0) != (l2 - bias < 0) for l1, l2 in pairs) / len(pairs)
    return out


def choose_rule(v: JudgeValidation) -> str:
    """``debiased`` where it measurably helps on the validation pairs: its accuracy beats the both-orders rule's
    and its whole interval is above 50 %; otherwise ``orders`` (FastChat's rule: disagreeing orders tie)."""
    if (v.debiased_accuracy is not None and v.debiased_ci_low is not None and v.debiased_ci_low > 0.5
            and (v.accuracy is None or v.debiased_accuracy > v.accuracy)):
        return "debiased"
    return "orders"


def rule_reason(v: JudgeValidation, rows: list[JudgmentRow]) -> str:
    """Why ``v.rule`` decides this judge's verdicts, in words for the report."""
    judged = [r for r in rows if not r.identical]
    missing = sum(r.content is None for r in judged)
    if v.debiased_accuracy is None:
        if judged and missing == len(judged):
            return ("both orders decide: the judge's replies carried no log-odds (the server returned no token "
                    "log-probabilities, or the verdict token's alternatives lacked A or B; `verdict = generate` "
                    "asks for none)")
        return (f"both orders decide: {missing} of {len(judged)} validation pairs have no log-odds in both orders, "
                "so the debiased rule cannot be measured")
    if v.rule == "debiased":
        return (f"debiased: its accuracy {v.debiased_accuracy:.1%} beat both orders' {v.accuracy:.1%} on the known "
                f"pairs, its interval above 50%")
    if v.debiased_ci_low is not None and v.debiased_ci_low <= 0.5:
        return f"both orders decide: the debiased accuracy's interval reaches {v.debiased_ci_low:.1%} (not above 50%)"
    return (f"both orders decide: the debiased accuracy {v.debiased_accuracy:.1%} did not beat both orders' "
            f"{v.accuracy:.1%}")


def stronger_judge(spec: str) -> str | None:
    """A judge to try instead of ``spec``: the one after it in ``STRONGER``, the first when it is not listed, None
    when it is already the last (never ``spec`` itself)."""
    names = [model_name(s, keep_tag=True) for s in STRONGER]
    mine = model_name(spec, keep_tag=True)
    if mine in names:
        i = names.index(mine)
        return STRONGER[i + 1] if i + 1 < len(STRONGER) else None
    return STRONGER[0]


def judge_advice(spec: str, section: str = "judge") -> str:
    """One line on what to change to get a judge that can tell better from worse, fitted to the judge in use."""
    better = stronger_judge(spec)
    if better is None:
        return (f"{spec} is already the largest judge suggested here: check its context window (judge_num_ctx) "
                "and template, try a judge from another family, or validate on human labels")
    key = 'judges = ["' + better + '"]' if section == "judge" else f'judge = "{better}"'
    return f"set [{section}] {key} (after `ollama pull {better.split(':', 1)[1]}`)"
