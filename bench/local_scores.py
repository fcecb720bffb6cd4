"""A local judge's 0-100 scores: read from token probabilities (now) against generated (before), back to back.

The rank strategy (and with it every round of ``prefloop run`` after the first), the preflight and the judge
stage's scores ask the judge for a 0-100 score per answer. A ``local:`` judge used to generate that reply (the
judge options: up to 512 tokens, up to 3 asks when it did not parse); it now reads the score from its token
probabilities (``judge.logprob.LogprobJudge.score``). This script scores the same answers both ways with the
embedded SmolLM2 and prints the time per score and how many parsed: the seed's validation rows ``[1045:]``, each
row's chosen answer, against its known-good output, as the rank strategy asks.

    .venv/bin/python bench/local_scores.py            # 8 answers; --n to change, --judge local:PATH for another
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="answers to score")
    ap.add_argument("--judge", default="local:smollm2")
    args = ap.parse_args()

    from bench.judges.seed_axis import seed_pairs_path
    from judge.logprob import scoring_client
    from judge.scoring import score_answer
    from prefloop.llm import make_client
    from prefloop.templates import alpaca_input

    rows = json.loads(seed_pairs_path().read_text())[1045:][: args.n]
    client = make_client(args.judge)
    client.load()

    async def run(scorer) -> tuple[list, float]:
        start = time.perf_counter()
        got = [await score_answer(scorer, alpaca_input(r["instruction"], r.get("input", "")), r["chosen"], known_good=r["output"]) for r in rows]
        return got, time.perf_counter() - start

    figures = {}
    for name, verdict in (("probabilities", "auto"), ("generated", "generate")):
        scores, seconds = asyncio.run(run(scoring_client(args.judge, client, verdict)))
        parsed = [s.value for s in scores if s.value is not None]
        figures[name] = seconds / len(rows)
        print(f"{name:>13}: {seconds / len(rows):6.2f} s per score, {len(parsed)}/{len(rows)} parsed, "
              f"asks {sum(s.attempts for s in scores)}, values {[round(v) for v in parsed]}")
    print(f"reading the score from probabilities is {figures['generated'] / figures['probabilities']:.0f}x faster "
          f"per score than generating it")


if __name__ == "__main__":
    main()
