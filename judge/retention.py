"""What the trained model's answers show without any judge: did DPO keep the answers sound while it moved them?

A weak judge misses degeneration, and every judge can be bought with length; these checks read the answers
themselves, next to the reference model's answers to the same held-out prompts.
"""

from __future__ import annotations

from judge.results import AnswerRow
from prefloop.text import repeats_itself


def answer_warnings(answers: list[AnswerRow]) -> list[str]:
    """Trained answers that loop on a phrase, or that only grew, compared with the reference's."""
    if not answers:
        return []
    out = []
    looped = sum(repeats_itself(a.policy_answer) for a in answers)
    ref_looped = sum(repeats_itself(a.reference_answer) for a in answers)
    if looped > ref_looped and looped * 5 >= len(answers):
        out.append(f"{looped} of {len(answers)} trained answers repeat a phrase over and over (the reference's: "
                   f"{ref_looped}): the policy has drifted into degenerate text, whatever the loss says; lower lr, "
                   "fewer steps or a larger beta")
    pol = sum(len(a.policy_answer) for a in answers) / len(answers)
    ref = sum(len(a.reference_answer) for a in answers) / len(answers)
    if ref > 0 and pol > 1.5 * ref:
        out.append(f"the trained model's answers are {pol / ref:.1f}x as long as the reference's ({pol:.0f} vs "
                   f"{ref:.0f} characters): DPO often buys preference with length; compare the length-controlled "
                   "win rate, and raise beta or lower lr if the answers only grew")
    if len(answers) < 30:
        out.append(f"only {len(answers)} held-out prompts were judged: the interval is wide; hold out more prompts "
                   "for a firmer number")
    return out
