"""LocalClient on the tiny model: batched generation equals one-at-a-time greedy generation, prompts render the
agreed way, concurrent chat calls are gathered into batches, JSON replies are validated. One slow test runs the
embedded SmolLM2."""

from __future__ import annotations

import asyncio
import time

import pytest

from prefloop.llm import GenOptions, ReplyInvalid, make_client
from prefloop.llm.local_client import Generation, LocalClient
from prefloop.templates import alpaca_prompt

PROMPTS = [
    "the cat",
    alpaca_prompt("Name a colour.", ""),
    [{"role": "user", "content": "Say something about the weather and dogs."}],
    "Example sentence number 12 about",
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "cats"}],
]
GREEDY = GenOptions(temperature=0.0, max_tokens=12)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir) -> LocalClient:
    client = make_client(f"local:{tiny_model_dir}", batch_size=8)
    client.load()
    return client


def test_batched_equals_unbatched_greedy(tiny):
    batched = tiny.generate(PROMPTS, GREEDY)
    single = [tiny.generate([p], GREEDY)[0] for p in PROMPTS]
    assert [g.text for g in batched] == [g.text for g in single]
    assert [g.completion_tokens for g in batched] == [g.completion_tokens for g in single]
    assert any(g.completion_tokens > 0 for g in batched)
    assert tiny.generate_batch(PROMPTS, GREEDY) == [g.text for g in batched]


def test_prompts_render_as_agreed(tiny):
    tokenizer = tiny._tokenizer
    assert tokenizer.decode(tiny.encode("the cat")) == "the cat"
    chat = [{"role": "user", "content": "cats"}]
    rendered = tokenizer.decode(tiny.encode(chat))
    assert rendered == tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert rendered.rstrip().endswith("assistant")


def test_new_text_only_and_length_reason(tiny):
    gens = tiny.generate(["the cat"], GenOptions(max_tokens=3))
    assert gens[0].prompt_tokens == len(tiny.encode("the cat"))
    assert gens[0].completion_tokens <= 3 and gens[0].finish_reason in ("stop", "length")
    assert not gens[0].text.startswith("the cat")


def test_sampling_is_seeded(tiny):
    opts = GenOptions(temperature=1.0, seed=11, max_tokens=10)
    first = tiny.generate_batch(PROMPTS[:3], opts)
    assert tiny.generate_batch(PROMPTS[:3], opts) == first
    others = [tiny.generate_batch(PROMPTS[:3], GenOptions(temperature=1.0, seed=s, max_tokens=10))
              for s in (12, 13, 14)]
    assert any(o != first for o in others)


def test_concurrent_chat_calls_are_batched(tiny, monkeypatch):
    sizes = []
    real = tiny.generate

    def counting(prompts, options):
        sizes.append(len(prompts))
        return real(prompts, options)

    monkeypatch.setattr(tiny, "generate", counting)
    messages = [[{"role": "user", "content": f"question {i} about cats"}] for i in range(6)]

    async def go():
        replies = await asyncio.gather(*[tiny.chat(m, options=GREEDY) for m in messages])
        await tiny.aclose()
        return replies

    replies = asyncio.run(go())
    assert sum(sizes) == 6 and max(sizes) > 1  # gathered, not one by one
    expected = real(messages, GREEDY)
    assert [r.text for r in replies] == [g.text for g in expected]
    assert [r.completion_tokens for r in replies] == [g.completion_tokens for g in expected]


def test_concurrent_complete_calls_batch_raw_prompts(tiny, monkeypatch):
    sizes = []
    real = tiny.generate
    monkeypatch.setattr(tiny, "generate", lambda prompts, options: sizes.append(len(prompts)) or real(prompts,
                                                                                                     options))

    async def go():
        texts = await asyncio.gather(*[tiny.complete(p, GREEDY) for p in PROMPTS])
        await tiny.aclose()
        return texts

    texts = asyncio.run(go())
    assert max(sizes) > 1 and list(texts) == tiny.generate_batch(PROMPTS, GREEDY)


def test_schema_reply_extracted_validated_or_reply_invalid(tiny_model_dir):
    schema = {"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"]}
    client = make_client(f"local:{tiny_model_dir}")
    client.load()
    answers = iter(['Sure! {"score": 7} hope that helps', "no json here"])

    def scripted(prompts, options):  # the model's text is scripted; parsing and validation are real
        assert prompts[0][-1]["content"].endswith('{"score": <integer>}')
        return [Generation(next(answers), 5, 5, "stop")]

    client.generate = scripted

    async def go():
        good = await client.chat([{"role": "user", "content": "rate"}], schema=schema)
        with pytest.raises(ReplyInvalid) as err:
            await client.chat([{"role": "user", "content": "rate"}], schema=schema)
        await client.aclose()
        return good, err.value

    good, err = asyncio.run(go())
    assert good.data == {"score": 7} and err.raw == "no json here" and client.stats.invalid_replies == 1


def test_missing_local_model_is_fatal(tmp_path):
    from prefloop.llm import ServerFatal

    with pytest.raises(ServerFatal, match="no such model folder"):
        asyncio.run(make_client(f"local:{tmp_path}/nothing-here").preflight())


@pytest.mark.slow
def test_smollm2_batched_matches_unbatched_and_answers():
    client = make_client("local:")
    opts = GenOptions(max_tokens=24)
    prompts = [[{"role": "user", "content": "What is the capital of France?"}],
               [{"role": "user", "content": "Name three colours."}],
               alpaca_prompt("Rewrite politely: give me the salt.")]
    t = time.perf_counter()
    batched = client.generate(prompts, opts)
    elapsed = time.perf_counter() - t
    single = [client.generate([p], opts)[0] for p in prompts]
    assert [g.text for g in batched] == [g.text for g in single]
    assert "Paris" in batched[0].text

    async def judged():  # the embedded model as a (weak) judge: the JSON reply parses and validates
        schema = {"type": "object", "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 100}},
                  "required": ["score"]}
        reply = await client.chat([{"role": "user", "content": "Rate the answer 'Paris' to 'What is the capital "
                                                               "of France?' from 0 to 100."}], schema=schema,
                                  options=GenOptions(max_tokens=40))
        await client.aclose()
        return reply

    assert 0 <= asyncio.run(judged()).data["score"] <= 100
    print(f"SmolLM2 batch of 3 x {opts.max_tokens} tokens: {elapsed:.2f}s")
