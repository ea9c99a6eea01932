"""The fake OpenAI-compatible server used by the teacher/extraction tests: answers, faults and process mode."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `tests.support` is imported from the repository root
    sys.path.insert(0, str(ROOT))

from tests.support.fake_openai import NONJSON_CONTENT, FakeOpenAIServer, default_answer, prompt_key  # noqa: E402

PROMPT = "Extract triplets.\n\nPassage:\nBERT was developed by Google. BERT is used in Search."
MESSAGES = [{"role": "system", "content": "You extract triplets."}, {"role": "user", "content": PROMPT}]


def _client(srv: FakeOpenAIServer, timeout: float = 5.0) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0, timeout=timeout)


def _chat(client: openai.OpenAI, messages=MESSAGES):
    return client.chat.completions.create(model="teacher-x", messages=messages, temperature=0.0,
                                          response_format={"type": "json_object"})


def _post(url: str, payload: bytes, timeout: float = 5.0):
    req = urllib.request.Request(url, data=payload, headers={"Content-Type": "application/json"}, method="POST")
    return urllib.request.urlopen(req, timeout=timeout)


def test_default_answer_rules():
    out = json.loads(default_answer(MESSAGES))
    assert out == {"triplets": [{"source": {"title": "BERT", "type": "entity"},
                                 "relation": {"type": "part_of", "weight": 0.9},
                                 "target": {"title": "Google", "type": "entity"}}]}
    # Only the text after the last "Passage:" line counts; fewer than two names -> no triplets.
    assert json.loads(default_answer([{"role": "user", "content": "Extract Things.\nPassage:\nonly Paris here"}])) == {
        "triplets": []}
    # Without a "Passage:" line the whole message is used.
    whole = json.loads(default_answer([{"role": "user", "content": "Paris and France"}]))
    assert [whole["triplets"][0][k]["title"] for k in ("source", "target")] == ["Paris", "France"]


def test_success_through_openai_client():
    with FakeOpenAIServer() as srv:
        resp = _chat(_client(srv))
        assert resp.object == "chat.completion"
        assert resp.model == "teacher-x"
        choice = resp.choices[0]
        assert choice.finish_reason == "stop" and choice.message.role == "assistant"
        assert json.loads(choice.message.content)["triplets"][0]["target"]["title"] == "Google"
        chars = len("You extract triplets.") + len(PROMPT)
        assert resp.usage.prompt_tokens == chars // 4
        assert resp.usage.completion_tokens == len(choice.message.content) // 4
        assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
        assert [m.id for m in _client(srv).models.list()] == ["fake-teacher"]
    assert srv.stats["requests"] == 1 and srv.stats["ok"] == 1
    assert srv.served == {prompt_key(MESSAGES): 1}


def test_custom_answer_and_unprefixed_path_via_urllib():
    with FakeOpenAIServer(answer=lambda msgs: "hello " + msgs[-1]["content"]) as srv:
        root = srv.base_url.removesuffix("/v1")
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
        with _post(root + "/chat/completions", body) as resp:
            data = json.loads(resp.read())
        assert data["choices"][0]["message"]["content"] == "hello hi"
        with urllib.request.urlopen(root + "/v1/models", timeout=5) as resp:
            assert json.loads(resp.read()) == {"object": "list", "data": [{"id": "fake-teacher", "object": "model"}]}


@pytest.mark.parametrize("payload", [b"not json", b"{}", b'{"messages": []}', b'{"messages": "hi"}'])
def test_bad_request(payload):
    with FakeOpenAIServer() as srv:
        with pytest.raises(urllib.error.HTTPError) as err:
            _post(srv.base_url + "/chat/completions", payload)
        assert err.value.code == 400
        assert "error" in json.loads(err.value.read())
    assert srv.stats["bad_request"] == 1 and srv.stats["requests"] == 1 and srv.served == {}


def test_429_has_retry_after():
    with FakeOpenAIServer(fault_rate=1.0, faults=("429",), retry_after=0.05) as srv:
        with pytest.raises(openai.RateLimitError) as err:
            _chat(_client(srv))
        assert err.value.response.headers["retry-after"] == "0.05"
        assert err.value.status_code == 429
    assert srv.stats["429"] == 1 and srv.served == {}


def test_500():
    with FakeOpenAIServer(fault_rate=1.0, faults=("500",)) as srv:
        with pytest.raises(openai.InternalServerError):
            _chat(_client(srv))
    assert srv.stats["500"] == 1 and srv.served == {}


def test_truncated_body_fails_to_parse():
    with FakeOpenAIServer(fault_rate=1.0, faults=("truncated",)) as srv:
        with pytest.raises(Exception):  # noqa: B017 - the client's exact error type is not part of the contract
            _chat(_client(srv))
        # Raw view: Content-Length matches the half body actually sent, so the read completes but is not JSON.
        body = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
        with _post(srv.base_url + "/chat/completions", body) as resp:
            raw = resp.read()
        assert len(raw) == int(resp.headers["Content-Length"])
        with pytest.raises(json.JSONDecodeError):
            json.loads(raw)
    assert srv.stats["truncated"] == 2 and srv.stats["ok"] == 0 and srv.served == {}


def test_timeout_is_not_served():
    with FakeOpenAIServer(fault_rate=1.0, faults=("timeout",), hang_seconds=1.0) as srv:
        start = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            _chat(_client(srv, timeout=0.2))
        assert time.monotonic() - start < 0.9
    # stop() waited for the abandoned handler: counted as a timeout, never served.
    assert srv.stats["timeout"] == 1 and srv.stats["ok"] == 0 and srv.served == {}


def test_timeout_reply_delivered_to_patient_client():
    with FakeOpenAIServer(fault_rate=1.0, faults=("timeout",), hang_seconds=0.1) as srv:
        resp = _chat(_client(srv, timeout=5.0))
        assert json.loads(resp.choices[0].message.content)["triplets"]
    assert srv.stats["timeout"] == 1 and srv.stats["ok"] == 1 and srv.served == {prompt_key(MESSAGES): 1}


def test_nonjson_content():
    with FakeOpenAIServer(fault_rate=1.0, faults=("nonjson",)) as srv:
        resp = _chat(_client(srv))
        assert resp.choices[0].message.content == NONJSON_CONTENT
        with pytest.raises(json.JSONDecodeError):
            json.loads(resp.choices[0].message.content)
    assert srv.stats["nonjson"] == 1 and srv.served == {}


def test_served_counts_successes_only_and_faults_are_seeded():
    def run(seed):
        with FakeOpenAIServer(fault_rate=0.5, faults=("429", "500", "nonjson"), seed=seed) as srv:
            client = _client(srv)
            for i in range(20):
                try:
                    _chat(client, [{"role": "user", "content": f"Passage:\nAlpha{i} and Beta"}])
                except openai.APIStatusError:
                    pass
        return srv

    a, b = run(3), run(3)
    assert a.stats == b.stats and a.served == b.served  # same seed, same faults
    assert a.stats["requests"] == 20
    assert sum(a.stats[k] for k in ("ok", "429", "500", "nonjson")) == 20
    assert 0 < a.stats["ok"] < 20
    assert sum(a.served.values()) == a.stats["ok"] and set(a.served.values()) == {1}


def test_process_mode(tmp_path):
    port_file, stats_file = tmp_path / "port", tmp_path / "stats.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.fake_openai", "--port", "0", "--fault-rate", "0", "--seed", "1",
         "--port-file", str(port_file), "--stats-file", str(stats_file)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while not port_file.exists():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no port file"
            time.sleep(0.02)
        port = int(port_file.read_text())
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=5)
        assert json.loads(_chat(client).choices[0].message.content)["triplets"]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert not Path(f"{port_file}.tmp").exists()
    saved = json.loads(stats_file.read_text())
    assert saved["stats"]["ok"] == 1 and saved["served"] == {prompt_key(MESSAGES): 1}
