"""The teacher client over real HTTP against a local fault-injecting OpenAI-compatible server."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kgutils import teacher
from kgutils.io import write_jsonl
from tests.support.fake_openai import FakeOpenAIServer, default_answer, prompt_key

ROOT = Path(__file__).resolve().parents[2]


def _passages(n, prefix="p"):
    return [{"id": f"{prefix}{i}", "text": f"Passage {i}: Alpha{i} is part of Beta{i} in the Gamma region."}
            for i in range(n)]


def _config(srv, **kw):
    base = dict(base_url=srv.base_url, model="fake-teacher", api_key_env="", concurrency=8, timeout_s=0.3,
                backoff_base_s=0.01, backoff_max_s=0.05, max_retries=10)
    base.update(kw)
    return teacher.TeacherConfig(**base)


def _key(text):
    return prompt_key(teacher.teacher_messages(text))


def test_every_passage_labelled_once_despite_faults(tmp_path):
    passages = _passages(80)
    with FakeOpenAIServer(fault_rate=0.3, seed=7, hang_seconds=1.0, retry_after=0.01) as srv:
        with teacher.TeacherCache(tmp_path / "c.sqlite") as cache:
            report = teacher.label_passages(passages, _config(srv), cache, show_progress=False)
        stats, served = srv.snapshot()["stats"], srv.snapshot()["served"]
    assert set(report.answers) | set(report.failed) == {p["id"] for p in passages}
    assert not set(report.answers) & set(report.failed)
    assert not report.failed, report.failed
    # Every fault kind happened and was retried; nothing was labelled twice.
    for fault in ("429", "500", "timeout", "truncated", "nonjson"):
        assert stats[fault] > 0, (fault, stats)
    assert sum(report.retries.values()) == report.requests - len(passages)
    assert sorted(served.values()) == [1] * len(passages)
    # A request that times out while connecting may never reach the server, so the server can count fewer.
    assert stats["requests"] <= report.requests
    assert report.prompt_tokens > 0 and report.cost_usd > 0
    # The stored answers are the server's answers.
    for p in passages[:5]:
        assert json.loads(report.answers[p["id"]]) == json.loads(
            default_answer(teacher.teacher_messages(p["text"])))


def test_retries_exhausted_are_counted_as_failures(tmp_path):
    passages = _passages(6)
    with FakeOpenAIServer(fault_rate=1.0, faults=("500",)) as srv:
        with teacher.TeacherCache(tmp_path / "c.sqlite") as cache:
            report = teacher.label_passages(passages, _config(srv, max_retries=2), cache, show_progress=False)
            assert cache.count() == 0
        assert srv.stats["requests"] == 6 * 3
    assert report.failed == {p["id"]: "HTTP 500" for p in passages}
    assert report.summary()["failure_reasons"] == {"HTTP 500": 6}


def test_unusable_answers_are_retried_then_failed(tmp_path):
    with FakeOpenAIServer(fault_rate=1.0, faults=("nonjson",)) as srv:
        with teacher.TeacherCache(tmp_path / "c.sqlite") as cache:
            report = teacher.label_passages(_passages(2), _config(srv, max_retries=1), cache, show_progress=False)
    assert set(report.failed.values()) == {"unusable answer (no_json)"}
    assert report.retries["unusable answer"] == 2


def test_rerun_is_answered_from_the_cache(tmp_path):
    passages = _passages(10)
    with FakeOpenAIServer() as srv:
        with teacher.TeacherCache(tmp_path / "c.sqlite") as cache:
            first = teacher.label_passages(passages, _config(srv), cache, show_progress=False)
            n_requests = srv.stats["requests"]
            second = teacher.label_passages(passages, _config(srv), cache, show_progress=False)
        assert srv.stats["requests"] == n_requests == 10
    assert second.answers == first.answers
    assert set(second.sources.values()) == {"cache"}
    assert second.cost_usd == 0


def test_cache_key_depends_on_model_and_settings():
    cfg = teacher.TeacherConfig(model="a")
    msgs = teacher.teacher_messages("x")
    assert cfg.cache_key(msgs) == teacher.TeacherConfig(model="a").cache_key(msgs)
    assert cfg.cache_key(msgs) != teacher.TeacherConfig(model="b").cache_key(msgs)
    assert cfg.cache_key(msgs) != teacher.TeacherConfig(model="a", temperature=0.7).cache_key(msgs)
    assert cfg.cache_key(msgs) != cfg.cache_key(teacher.teacher_messages("y"))


def test_missing_api_key_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("KG_TEST_TEACHER_KEY", raising=False)
    cfg = teacher.TeacherConfig(base_url="http://127.0.0.1:9/v1", model="m", api_key_env="KG_TEST_TEACHER_KEY")
    with teacher.TeacherCache(tmp_path / "c.sqlite") as cache:
        with pytest.raises(RuntimeError, match="KG_TEST_TEACHER_KEY"):
            teacher.label_passages(_passages(1), cfg, cache, show_progress=False)


def test_repeated_ids_are_rejected(tmp_path):
    with teacher.TeacherCache(tmp_path / "c.sqlite") as cache:
        with pytest.raises(ValueError, match="p0"):
            teacher.label_passages(_passages(1) * 2, teacher.TeacherConfig(), cache, show_progress=False)


def test_recorded_teacher_answers_offline_and_counts_missing(tmp_path):
    recorded = tmp_path / "recorded"
    rows = [{"doc_id": "d1", "text": "Ada wrote programs for the Analytical Engine.",
             "triplets": [{"source": {"title": "Ada", "type": "entity"},
                           "relation": {"type": "applied_to", "weight": 0.7},
                           "target": {"title": "Analytical Engine", "type": "entity"}}]},
            {"doc_id": "d2", "text": "It rained all afternoon.", "triplets": []}]
    write_jsonl(recorded / "a.jsonl", rows)
    cfg = teacher.TeacherConfig(base_url="http://127.0.0.1:9/v1", model="deepseek-v4-flash")
    passages = [{"id": "a", "text": rows[0]["text"]}, {"id": "b", "text": rows[1]["text"]},
                {"id": "c", "text": "A passage nobody recorded."}]
    with teacher.TeacherCache(tmp_path / "c.sqlite") as cache:
        assert teacher.load_recorded(cache, recorded, cfg) == {"records": 2, "added": 2}
        assert teacher.load_recorded(cache, recorded, cfg) == {"records": 2, "added": 0}
        report = teacher.label_passages(passages, cfg, cache, offline=True, show_progress=False)
    assert report.sources == {"a": "recorded", "b": "recorded"}
    assert json.loads(report.answers["a"])["triplets"] == rows[0]["triplets"]
    assert report.failed == {"c": "no recorded answer"}
    assert report.requests == 0


def test_load_recorded_names_bad_records(tmp_path):
    write_jsonl(tmp_path / "r" / "bad.jsonl", [{"text": "no triplets field"}])
    with teacher.TeacherCache(tmp_path / "c.sqlite") as cache:
        with pytest.raises(ValueError, match="bad.jsonl"):
            teacher.load_recorded(cache, tmp_path / "r", teacher.TeacherConfig())
        with pytest.raises(FileNotFoundError):
            teacher.load_recorded(cache, tmp_path / "nothing", teacher.TeacherConfig())


def test_estimate_cost_counts_only_pending():
    cfg = teacher.TeacherConfig(price_input_per_m=1.0, price_output_per_m=2.0)
    est = teacher.estimate_cost(["a" * 400, "b" * 400], cfg, completion_tokens_per_passage=100, cached=3)
    assert est["passages"] == 5 and est["to_request"] == 2 and est["cached"] == 3
    assert est["est_completion_tokens"] == 200
    assert est["est_cost_usd"] == pytest.approx((est["est_prompt_tokens"] * 1.0 + 200 * 2.0) / 1e6, abs=1e-4)


def _cached_ids(db_path, model):
    if not db_path.exists():
        return set()
    with sqlite3.connect(db_path) as db:
        try:
            return {r[0] for r in db.execute("SELECT passage_id FROM answers WHERE model = ?", (model,))}
        except sqlite3.OperationalError:
            return set()


def test_killed_labelling_resumes_without_loss_or_duplicates(tmp_path):
    """SIGKILL the labelling process mid-run, start it again: every passage ends labelled exactly once, and
    no passage answered before the kill is requested again."""
    n = 120
    passages = _passages(n)
    write_jsonl(tmp_path / "passages.jsonl", passages)
    db = tmp_path / "cache.sqlite"

    def slow_answer(messages):
        time.sleep(0.03)
        return default_answer(messages)

    with FakeOpenAIServer(fault_rate=0.2, seed=3, answer=slow_answer, hang_seconds=1.0, retry_after=0.01) as srv:
        cmd = [sys.executable, "-m", "kgutils", "label", str(tmp_path / "passages.jsonl"), "--base-url", srv.base_url,
               "--model", "fake-teacher", "--api-key-env", "", "--cache", str(db), "--concurrency", "4",
               "--timeout", "0.3", "--backoff", "0.01", "--max-retries", "20", "--no-progress"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while len(_cached_ids(db, "fake-teacher")) < 30 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, "labelling finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(0.2)  # let in-flight server handlers finish
        at_kill = srv.snapshot()["served"]
        done_before = _cached_ids(db, "fake-teacher")
        assert 30 <= len(done_before) < n

        second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr[-2000:]
        summary = json.loads(second.stdout)
        after = srv.snapshot()["served"]

    assert summary["failed"] == 0
    assert summary["from_cache"] == len(done_before)
    assert summary["live"] == n - len(done_before)
    by_id = {p["id"]: _key(p["text"]) for p in passages}
    # Nothing lost: all n answers are in the cache, one row each.
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT passage_id, COUNT(*) FROM answers GROUP BY passage_id").fetchall()
    assert sorted(r[0] for r in rows) == sorted(by_id) and {r[1] for r in rows} == {1}
    # Nothing labelled twice: answers cached before the kill were never requested again ...
    for pid in done_before:
        assert after.get(by_id[pid], 0) == at_kill.get(by_id[pid], 0) == 1
    # ... and only requests in flight at the kill (at most the concurrency) were served a second time.
    twice = [k for k, v in after.items() if v > 1]
    assert all(v <= 2 for v in after.values()) and len(twice) <= 4


def test_recorded_answers_never_reach_a_live_run(tmp_path):
    """Recorded answers are cached as recorded:<model>, so the live model's key for the same text misses."""
    live = teacher.TeacherConfig(model="deepseek-v4-flash")
    rec = live.recorded()
    assert rec.model == "recorded:deepseek-v4-flash" and rec.recorded() is rec
    write_jsonl(tmp_path / "r" / "a.jsonl", [{"text": "Some passage.", "triplets": []}])
    with teacher.TeacherCache(tmp_path / "c.sqlite") as cache:
        teacher.load_recorded(cache, tmp_path / "r", rec)
        msgs = teacher.teacher_messages("Some passage.")
        assert cache.get(rec.cache_key(msgs)) is not None
        assert cache.get(live.cache_key(msgs)) is None


def test_rejected_key_stops_the_run(tmp_path, monkeypatch):
    """A 401 aborts labelling with an error naming the variable instead of failing passage after passage."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hits = []

    class Reject(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            hits.append(1)
            body = b'{"error": {"message": "invalid api key", "type": "invalid_request_error"}}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Reject)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("KG_TEST_TEACHER_KEY", "wrong")
    cfg = teacher.TeacherConfig(base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", model="m",
                                api_key_env="KG_TEST_TEACHER_KEY", concurrency=1)
    try:
        with teacher.TeacherCache(tmp_path / "c.sqlite") as cache:
            with pytest.raises(RuntimeError, match="KG_TEST_TEACHER_KEY"):
                teacher.label_passages(_passages(20), cfg, cache, show_progress=False)
    finally:
        server.shutdown()
    assert len(hits) < 20
