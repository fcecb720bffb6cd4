"""The test double itself, driven by the real ``ollama`` client: shapes, errors and faults as Ollama produces them."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import ollama
import pytest

from ollama_server import BUSY_MESSAGE, OllamaServer

USER = [{"role": "user", "content": "Say hello politely."}]
SCHEMA = {"type": "object", "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 100},
                                           "reason": {"type": "string"}}, "required": ["score", "reason"]}


def run(coro):
    return asyncio.run(coro)


def client(server: OllamaServer, timeout: float = 5.0) -> ollama.AsyncClient:
    return ollama.AsyncClient(host=server.url, timeout=timeout, trust_env=False)


def test_liveness_version_tags_show_ps(ollama_server):
    with httpx.Client(base_url=ollama_server.url, trust_env=False) as h:
        assert h.get("/").text == "Ollama is running"
        assert h.head("/").status_code == 200
        assert h.get("/api/version").json() == {"version": ollama_server.version}

    async def go():
        c = client(ollama_server)
        tags = await c.list()
        show = await c.show("LLAMA3.1:70B")  # case-insensitive
        await c.chat(model="llama3.2:1b", messages=USER, keep_alive="10m")
        ps = await c.ps()
        await c.close()
        return tags, show, ps

    tags, show, ps = run(go())
    assert "llama3.1:70b" in [m.model for m in tags.models]
    assert "completion" in show.capabilities and show.modelinfo is not None
    assert [m.model for m in ps.models] == ["llama3.2:1b:latest"] or [m.model for m in ps.models] == ["llama3.2:1b"]


def test_chat_stream_and_not_agree_and_are_deterministic(ollama_server):
    async def go():
        c = client(ollama_server)
        whole = await c.chat(model="llama3.1:70b", messages=USER, options={"seed": 7})
        parts = [p async for p in await c.chat(model="llama3.1:70b", messages=USER, options={"seed": 7},
                                               stream=True)]
        other = await c.chat(model="llama3.1:70b", messages=USER, options={"seed": 8})
        await c.close()
        return whole, parts, other

    whole, parts, other = run(go())
    assert whole.done and whole.done_reason == "stop" and whole.eval_count > 0 and whole.prompt_eval_count > 0
    assert len(parts) > 2 and parts[-1].done and not parts[0].done
    assert "".join(p.message.content for p in parts) == whole.message.content
    assert other.message.content != whole.message.content


def test_generate_and_num_predict_length(ollama_server):
    async def go():
        c = client(ollama_server)
        r = await c.generate(model="llama3.1:70b", prompt="Write a sentence.", options={"num_predict": 3})
        full = await c.generate(model="llama3.1:70b", prompt="Write a sentence.")
        await c.close()
        return r, full

    r, full = run(go())
    assert r.done_reason == "length" and r.eval_count == 3 and full.response.startswith(r.response)
    assert full.done_reason == "stop" and len(full.response) > len(r.response)


def test_schema_format_gives_valid_json_and_faults_break_it(ollama_server):
    async def go():
        c = client(ollama_server)
        good = await c.chat(model="llama3.1:70b", messages=USER, format=SCHEMA)
        ollama_server.fail("malformed_json")
        bad = await c.chat(model="llama3.1:70b", messages=USER, format=SCHEMA)
        ollama_server.fail("schema_violation")
        wrong = await c.chat(model="llama3.1:70b", messages=USER, format=SCHEMA)
        await c.close()
        return good, bad, wrong

    good, bad, wrong = run(go())
    data = json.loads(good.message.content)
    assert set(data) == {"score", "reason"} and 0 <= data["score"] <= 100
    with pytest.raises(json.JSONDecodeError):
        json.loads(bad.message.content)
    assert "score" not in json.loads(wrong.message.content) or not isinstance(
        json.loads(wrong.message.content)["score"], int)


def test_scripted_reply_sees_messages_format_options(ollama_server):
    seen = []

    def reply(messages, format, options):
        seen.append((messages, format, options))
        return "scripted " + messages[-1]["content"]

    ollama_server.reply = reply

    async def go():
        c = client(ollama_server)
        r = await c.chat(model="llama3.1:70b", messages=USER, options={"num_ctx": 8192, "seed": 1})
        await c.close()
        return r

    assert run(go()).message.content == "scripted Say hello politely."
    assert seen[0][0] == USER and seen[0][2]["num_ctx"] == 8192


@pytest.mark.parametrize("status,message", [(503, BUSY_MESSAGE), (500, "llama runner process has terminated: "
                                                                       "exit status 2"),
                                            (429, "rate limit exceeded")])
def test_status_faults_are_one_shot(ollama_server, status, message):
    ollama_server.fail("status", status=status)

    async def go():
        c = client(ollama_server)
        with pytest.raises(ollama.ResponseError) as err:
            await c.chat(model="llama3.1:70b", messages=USER)
        ok = await c.chat(model="llama3.1:70b", messages=USER)
        await c.close()
        return err.value, ok

    err, ok = run(go())
    assert err.status_code == status and err.error == message and ok.done
    assert [e.status for e in ollama_server.requests("/api/chat")] == [status, 200]


def test_missing_model_and_errors_match_ollama(ollama_server):
    async def go():
        c = client(ollama_server)
        errors = []
        for call in (lambda: c.chat(model="nope:7b", messages=USER),
                     lambda: c.show("nope:7b")):
            try:
                await call()
            except ollama.ResponseError as e:
                errors.append((e.status_code, e.error))
        ollama_server.fail("missing_model")
        try:
            await c.chat(model="llama3.1:70b", messages=USER)
        except ollama.ResponseError as e:
            errors.append((e.status_code, e.error))
        await c.close()
        return errors

    assert run(go()) == [(404, 'model "nope:7b" not found, try pulling it first'),
                         (404, "model 'nope:7b' not found"),
                         (404, 'model "llama3.1:70b" not found, try pulling it first')]
    with httpx.Client(base_url=ollama_server.url, trust_env=False) as h:
        assert h.post("/api/chat", content=b"").json() == {"error": "missing request body"}
        assert h.post("/api/chat", json={"messages": USER}).status_code == 400
        r = h.post("/api/chat", json={"model": "llama3.1:70b", "messages": USER, "format": "yaml"})
        assert r.status_code == 500 and r.json()["error"].startswith('invalid format: "yaml"')


def test_error_mid_stream_after_k_chunks(ollama_server):
    ollama_server.fail("error_mid_stream", after_chunks=2, message="boom")

    async def go():
        c = client(ollama_server)
        got = []
        with pytest.raises(ollama.ResponseError) as err:
            async for part in await c.chat(model="llama3.1:70b", messages=USER, stream=True):
                got.append(part)
        await c.close()
        return got, err.value

    got, err = run(go())
    assert len(got) == 2 and err.status_code == -1 and err.error == "boom"


def test_drop_and_hang(ollama_server):
    ollama_server.fail("drop")
    ollama_server.fail("hang", seconds=5)

    async def go():
        c = client(ollama_server, timeout=0.3)
        with pytest.raises(httpx.RemoteProtocolError):
            await c.chat(model="llama3.1:70b", messages=USER)
        t = time.perf_counter()
        with pytest.raises(httpx.ReadTimeout):
            await c.chat(model="llama3.1:70b", messages=USER)
        waited = time.perf_counter() - t
        await c.close()
        return waited

    assert 0.25 < run(go()) < 2.0


def test_connection_refused_after_stop():
    server = OllamaServer().start()
    url = server.url
    server.stop()

    async def go():
        c = ollama.AsyncClient(host=url, timeout=1, trust_env=False)
        with pytest.raises(ConnectionError):
            await c.list()
        await c.close()

    run(go())


def test_slots_queue_and_busy():
    with OllamaServer(num_parallel=2, max_queue=2, latency=0.2) as server:
        async def go():
            c = client(server)
            results = await asyncio.gather(*[c.chat(model="llama3.1:70b", messages=USER) for _ in range(6)],
                                           return_exceptions=True)
            await c.close()
            return results

        t = time.perf_counter()
        results = run(go())
        elapsed = time.perf_counter() - t
    busy = [r for r in results if isinstance(r, ollama.ResponseError)]
    assert len(busy) == 2 and all(e.status_code == 503 and e.error == BUSY_MESSAGE for e in busy)
    assert server.peak_running == 2
    assert 0.35 < elapsed < 1.5  # 4 admitted in 2 slots: two rounds of 0.2 s


def test_queue_is_fifo():
    order = []
    with OllamaServer(num_parallel=1, latency=0.05) as server:  # one slot: the rest queue in arrival order
        server.reply = lambda messages, fmt, options: order.append(messages[0]["content"]) or "ok"

        def send(i):
            httpx.post(server.url + "/api/chat", json={"model": "llama3.1:70b", "stream": False,
                                                       "messages": [{"role": "user", "content": str(i)}]},
                       timeout=5, trust_env=False)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
            time.sleep(0.02)  # spaced arrivals; the log records the order the server saw them in
        for t in threads:
            t.join()
    arrival = [e.body["messages"][0]["content"] for e in server.requests("/api/chat")]
    assert len(order) == 6 and order == arrival


def test_pull_and_openai_compat(ollama_server):
    async def go():
        c = client(ollama_server)
        parts = [p.status async for p in await c.pull("new:1b", stream=True)]
        await c.close()
        return parts

    parts = run(go())
    assert parts[0] == "pulling manifest" and parts[-1] == "success" and "new:1b" in ollama_server.models
    ollama_server.registry = set()
    with httpx.Client(base_url=ollama_server.url, trust_env=False) as h:
        assert h.post("/api/pull", json={"model": "gone:1b", "stream": False}).status_code == 500
        ids = [m["id"] for m in h.get("/v1/models").json()["data"]]
        assert "llama3.1:70b" in ids
        r = h.post("/v1/chat/completions", json={"model": "llama3.1:70b", "messages": USER, "max_tokens": 2,
                                                 "response_format": {"type": "json_schema", "json_schema": {
                                                     "name": "s", "schema": SCHEMA}}})
        body = r.json()
        assert body["choices"][0]["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 2
        missing = h.post("/v1/chat/completions", json={"model": "x", "messages": USER})
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"


def test_client_that_gives_up_is_cancelled_and_frees_its_place():
    """A client timing out while queued or generating hangs up; the server drops the work (status 499) as
    Ollama does, instead of spending a slot on an answer nobody reads."""
    with OllamaServer(num_parallel=1, latency=0.5) as server:
        async def go():
            patient, impatient = client(server, timeout=5), client(server, timeout=0.1)
            first = asyncio.ensure_future(patient.chat(model="llama3.1:70b", messages=USER))
            await asyncio.sleep(0.05)
            with pytest.raises(httpx.ReadTimeout):  # queued behind `first`, gives up
                await impatient.chat(model="llama3.1:70b", messages=USER)
            await first
            t = time.perf_counter()
            await patient.chat(model="llama3.1:70b", messages=USER)  # not behind the abandoned one
            waited = time.perf_counter() - t
            await patient.close()
            await impatient.close()
            return waited

        waited = run(go())
        time.sleep(0.05)
        assert [e.status for e in server.requests("/api/chat")] == [200, 499, 200]
        assert waited < 0.9  # 0.5 s of its own; behind the abandoned request it would be 1.0 s or more


def test_model_load_latency_and_keep_alive(ollama_server):
    ollama_server.load_latency = 0.3

    async def go():
        c = client(ollama_server)
        times = []
        for keep_alive in ("10m", "10m", 0, "10m"):  # load, warm, warm then unload, load again
            t = time.perf_counter()
            r = await c.chat(model="llama3.1:70b", messages=USER, keep_alive=keep_alive, stream=False)
            times.append((time.perf_counter() - t, r.load_duration))
        await c.close()
        return times

    times = run(go())
    assert [t > 0.25 for t, _ in times] == [True, False, False, True]
    assert times[0][1] >= 0.3e9 and times[1][1] < 1e6


# ---- blobs and create ---------------------------------------------------------------------------------------------

def safetensors_bytes(dtype: str = "BF16") -> bytes:
    """A one-tensor safetensors file, written by hand (the double is tested without prefloop's exporter)."""
    import struct

    header = json.dumps({"model.embed_tokens.weight": {"dtype": dtype, "shape": [2, 2], "data_offsets": [0, 8]}})
    return struct.pack("<Q", len(header)) + header.encode() + bytes(8)


def model_files(**config_changes) -> dict[str, bytes]:
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}, "rope_theta": 100000.0,
              "rope_scaling": None}
    config.update(config_changes)
    return {"config.json": json.dumps(config).encode(), "model.safetensors": safetensors_bytes(),
            "tokenizer.json": b'{"model": {"type": "BPE"}}', "tokenizer_config.json": json.dumps(
                {"chat_template": "{% for m in messages %}<|im_start|>{{ m.role }}...{% endfor %}"}).encode()}


def upload(server: OllamaServer, files: dict[str, bytes]) -> dict[str, str]:
    import hashlib

    digests = {}
    with httpx.Client(base_url=server.url, trust_env=False) as h:
        for name, data in files.items():
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            assert h.head(f"/api/blobs/{digest}").status_code == 404
            assert h.post(f"/api/blobs/{digest}", content=data).status_code == 201
            assert h.head(f"/api/blobs/{digest}").status_code == 200
            assert h.post(f"/api/blobs/{digest}", content=data).status_code == 200  # already there
            digests[name] = digest
    return digests


def test_blob_digest_is_checked(ollama_server):
    with httpx.Client(base_url=ollama_server.url, trust_env=False) as h:
        wrong = "sha256:" + "0" * 64
        r = h.post(f"/api/blobs/{wrong}", content=b"weights")
        assert r.status_code == 400 and r.json()["error"].startswith(f'digest mismatch, expected "{wrong}"')
        assert h.head(f"/api/blobs/{wrong}").status_code == 404
        assert h.post("/api/blobs/md5:abc", content=b"x").status_code == 400
    assert ollama_server.blobs == {}


def test_create_streams_statuses_then_lists_and_serves_the_model(ollama_server):
    digests = upload(ollama_server, model_files())

    async def go():
        c = client(ollama_server)
        statuses = [p.status async for p in await c.create("mine", files=digests, quantize="q4_K_M",
                                                           parameters={"stop": ["<|im_end|>"]}, stream=True)]
        listed = [m.model for m in (await c.list()).models]
        show = await c.show("mine")
        reply = await c.chat(model="mine", messages=USER)
        await c.close()
        return statuses, listed, show, reply

    statuses, listed, show, reply = run(go())
    assert statuses[0] == "converting model" and statuses[-1] == "success"
    assert any(s.startswith("quantizing") for s in statuses)
    assert "mine:latest" in listed and show.details.quantization_level == "Q4_K_M"
    assert "<|im_start|>" in show.template and 'stop "<|im_end|>"' in show.parameters  # template detected
    assert reply.message.content


def test_a_created_model_answers_from_its_own_weights_by_temperature_and_seed(ollama_server, tiny_model_dir):
    """run_weights: the files a create named are the model that answers (a seed repeats an answer, another seed
    gives another, temperature 0 is greedy), as a real server samples what it imported."""
    ollama_server.run_weights = True
    files = {p.name: p.read_bytes() for p in tiny_model_dir.iterdir() if p.is_file()}
    config = json.loads(files["config.json"])    # the top-level rope_theta the converter reads
    files["config.json"] = json.dumps({**config, "rope_theta": config["rope_parameters"]["rope_theta"]}).encode()
    digests = upload(ollama_server, files)
    with httpx.Client(base_url=ollama_server.url, trust_env=False) as h:
        made = h.post("/api/create", json={"model": "tiny", "files": digests, "stream": False,
                                           "template": "{{ .Prompt }}"})
        assert made.status_code == 200, made.text

    def ask(**options) -> str:
        return ollama.Client(host=ollama_server.url).chat(model="tiny", messages=USER,
                                                          options={"num_predict": 16, **options}).message.content

    one, again, other = ask(temperature=1.0, seed=1), ask(temperature=1.0, seed=1), ask(temperature=1.0, seed=2)
    assert one and one == again and other != one
    assert ask(temperature=0) == ask(temperature=0, seed=5)
    ollama_server.run_weights = False
    assert ask(temperature=1.0, seed=1) != one                       # the scripted reply again


@pytest.mark.parametrize("change,error", [
    ({"architectures": ["MistralForCausalLM"]}, 'unsupported architecture "MistralForCausalLM"'),
    ({"rope_theta": None}, "reads only the top-level rope_theta"),
    ({"rope_theta": 10000.0}, "reads only the top-level rope_theta"),
])
def test_create_reads_config_with_ollamas_field_names(ollama_server, change, error):
    digests = upload(ollama_server, model_files(**change))
    with httpx.Client(base_url=ollama_server.url, trust_env=False) as h:
        r = h.post("/api/create", json={"model": "broken", "files": digests})
    assert r.status_code == 500 and error in r.json()["error"]
    assert "broken:latest" not in ollama_server.models


def test_create_refuses_missing_template_blobs_and_absolute_names(ollama_server):
    files = model_files()
    files["tokenizer_config.json"] = b"{}"  # transformers 5 wrote the template to chat_template.jinja
    digests = upload(ollama_server, files)
    with httpx.Client(base_url=ollama_server.url, trust_env=False) as h:
        no_template = h.post("/api/create", json={"model": "m", "files": digests})
        with_template = h.post("/api/create", json={"model": "m", "files": digests, "template": "{{ .Prompt }}",
                                                    "stream": False})
        absolute = h.post("/api/create", json={"model": "m2", "files": {"/etc/config.json": digests["config.json"]}})
        missing = h.post("/api/create", json={"model": "m3", "files": {**digests, "extra.json": "sha256:" + "1" * 64}})
    assert no_template.status_code == 500 and "no chat template" in no_template.json()["error"]
    assert with_template.json() == {"status": "success"} and "m:latest" in ollama_server.models
    assert absolute.status_code == 400 and absolute.json()["error"] == "file path must be relative"
    assert missing.status_code == 500 and "no such file" in missing.json()["error"]


def test_create_failing_midway_registers_nothing(ollama_server):
    digests = upload(ollama_server, model_files())
    ollama_server.fail("error_mid_stream", endpoint="/api/create", after_chunks=2, message="disk full")

    async def go():
        c = client(ollama_server)
        got = []
        with pytest.raises(ollama.ResponseError) as err:
            async for part in await c.create("half", files=digests, stream=True):
                got.append(part.status)
        names = [m.model for m in (await c.list()).models]
        await c.close()
        return got, err.value, names

    got, err, names = run(go())
    assert len(got) == 2 and err.error == "disk full" and "half:latest" not in names


def test_adapter_over_a_base(ollama_server):
    base = upload(ollama_server, model_files())
    adapter = upload(ollama_server, {"adapter_model.safetensors": safetensors_bytes("F32"),
                                     "adapter_config.json": json.dumps({"r": 8, "lora_alpha": 16}).encode()})
    with httpx.Client(base_url=ollama_server.url, trust_env=False) as h:
        h.post("/api/create", json={"model": "base", "files": base, "stream": False})
        ok = h.post("/api/create", json={"model": "tuned", "from": "base", "adapters": adapter, "stream": False})
        ollama_server.add_model("qwen-base", family="qwen2")
        qwen = h.post("/api/create", json={"model": "t2", "from": "qwen-base", "adapters": adapter})
    assert ok.json() == {"status": "success"} and "tuned:latest" in ollama_server.models
    assert qwen.status_code == 400 and qwen.json()["error"] == "unsupported architecture"


def test_several_servers_at_once_and_raw_generate():
    with OllamaServer(num_parallel=1) as a, OllamaServer(num_parallel=3) as b:
        assert a.port != b.port
        for server in (a, b):
            with httpx.Client(base_url=server.url, trust_env=False) as h:
                raw = h.post("/api/generate", json={"model": "llama3.1:70b", "prompt": "Hi", "raw": True,
                                                    "stream": False})
                bad = h.post("/api/generate", json={"model": "llama3.1:70b", "prompt": "Hi", "raw": True,
                                                    "system": "be kind", "stream": False})
                text = h.post("/v1/completions", json={"model": "llama3.1:70b", "prompt": "Hi", "max_tokens": 2})
            assert raw.json()["response"] and bad.status_code == 400
            assert text.json()["choices"][0]["finish_reason"] == "length"
        assert a.count() == b.count() == 3
