"""The judge: held-out win rates with a swappable judge model, and 0–100 scores for the generator's ``rank``.

It may import only the foundation (``prefloop``); the generator and the application import it.

Public API:
- ``judge.pairwise.judge_pair(client, prompt, answer_a, answer_b, *, known_good=None, cache=None) -> PairVerdict``
  (async; both orders, disagreement = inconsistent tie);
- ``judge.scoring.score_answer(client, prompt, answer, *, known_good=None, cache=None) -> Score`` (async; the seed
  recipe's 0–100 prompt, ``Score.value`` None when unparseable after bounded retries);
- ``judge.cache.JudgeCache(path)``: sqlite cache of parsed judgments (failures are never cached);
- ``judge.evaluate.evaluate(cfg: judge.config.JudgeConfig, console=None) -> JudgeResults`` (``prefloop judge``),
  whose files and their types are in ``judge.results``; both models' answers are made in ``judge.answers``;
- ``judge.label`` and ``judge.human``: a person labels pairs on the terminal screen, or is the judge;
  ``judge.thumbs``: a person marks single answers good or bad (KTO's data);
- ``judge.validation``: each judge measured on pairs whose better side is known before its win rate counts
  (accuracy with its interval, position and length bias, the position-debiased verdict from log-odds);
- ``judge.retention``: skill retention from the answers alone (content-word recall and ROUGE-L against the
  known-good answer, stock openings, loops, empty answers, length, per prompt), no judge needed;
- ``judge.preflight``: can the SFT model already do the task (``prefloop run``'s preflight stage);
- ``judge.stats``: win rate, prompt-clustered bootstrap CI, length-controlled win rate, Cohen's kappa,
  diagnostics; ``judge.robustness.flip_rates``; ``judge.selfpref.self_preference_warnings``;
- ``judge.report``: the judge's report (``headline``: the one function that decides what the headline says),
  which ``prefloop run`` embeds in its run report.

Templates ship in ``judge/templates/`` (``pairwise.txt``, ``score.txt``); pass a path to use your own.
"""
