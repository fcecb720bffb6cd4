"""Built-in judge prompt templates (``pairwise.txt``, ``score.txt``); see ``judge.prompts`` for the format."""
