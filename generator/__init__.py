"""Preference pairs from prompts by asking a model: ``prefloop generate``.

It may import the judge (``rank`` scores candidates with the judge's scorer) and the foundation (``prefloop``).

    from generator.config import GenerateConfig
    from generator.run import generate
    result = generate(GenerateConfig(source="data/prompts/quickstart.json", output="pairs.jsonl",
                                      model="ollama:llama3.1:70b"))

Strategies (one module each, ``make_pair(ctx, prompt_record) -> record | Drop``): ``rewrite`` (the reference
recipe: a slight rewrite of the known-good answer along an axis), ``rank`` (K candidates scored by the judge, best
vs worst) and ``contrast`` (strong model vs the SFT model's own answer). Every pair is appended at once through
``prefloop.runner``; rerunning the same command resumes, retries failures and never duplicates an id.
"""
