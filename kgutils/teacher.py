"""Teacher labelling over any OpenAI-compatible chat-completions endpoint, with a persistent cache.

The seed card labels its corpus with a large teacher model (DeepSeek V4-Flash). :func:`label_passages` sends one
request per passage through the ``openai`` async client and:

* bounds concurrency with a semaphore;
* retries with exponential backoff and full jitter on 429 (honouring ``Retry-After``), 5xx, timeouts, connection
  errors, bodies that are not valid JSON and answers whose content holds no parseable triplet list; other 4xx
  errors (bad request, authentication) fail at once;
* asks for JSON output (``response_format={"type": "json_object"}``) when ``json_mode`` is on;
* stores every successful answer in a SQLite cache keyed by model, messages and sampling settings, committed as
  soon as it arrives: a rerun costs nothing, and a run killed half-way resumes with nothing lost and nothing
  requested twice (only requests still in flight at the moment of the kill are sent again);
* counts tokens and cost, and :func:`estimate_cost` gives a figure before any request is sent.

Offline, :func:`load_recorded` puts reference answers (``data/sample/teacher/*.jsonl``) into the same cache as a
*recorded teacher* (model name ``recorded:<model>``, see :meth:`TeacherConfig.recorded`, so live and recorded
answers never mix): the labelling loop then runs unchanged and answers every passage from the cache, and passages
without a recorded answer are counted as failed, never invented.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .formats import UNUSABLE_STATUSES, parse_output
from .io import progress, read_jsonl, resolve
from .ontology import ENTITY_TYPES, RELATIONS

__all__ = [
    "TEACHER_SYSTEM",
    "TeacherConfig",
    "TeacherCache",
    "LabelReport",
    "teacher_messages",
    "estimate_cost",
    "pending",
    "load_recorded",
    "label_passages",
    "label_passages_async",
]

TEACHER_SYSTEM = (
    "You label passages for a knowledge graph. Extract every relation the passage supports between two named "
    "things or concepts, using only these relation types: {relations}. Read each triplet as 'source relation "
    "target' (for example: part -> part_of -> whole; organisation -> founded_by -> founder; software -> "
    "developed_by -> developer; instance -> is_type_of -> class; place -> located_in -> containing place; older "
    "-> predecessor_of -> newer).\n"
    "Entity types: {entity_types} ('entity' for named people, organisations, places, products, models, data sets "
    "and works; 'concept' for abstract ideas, methods, fields and generic classes). Write titles as the passage "
    "names them, in canonical form, without company suffixes such as Inc. or Ltd.\n"
    "Give each relation a weight in [0, 1] for how directly the passage supports it: 0.8-1.0 when the passage "
    "states it, 0.5-0.8 when it is clearly implied, 0.1-0.4 when it is only inferred.\n"
    "Do not add facts the passage does not support. If it supports no such relation, return an empty list.\n"
    'Answer with a JSON object only: {{"triplets": [{{"source": {{"title": "...", "type": "entity"}}, '
    '"relation": {{"type": "...", "weight": 0.9}}, "target": {{"title": "...", "type": "concept"}}}}]}}'
)



def teacher_messages(text: str) -> list[dict[str, str]]:
    """The chat messages sent to the teacher for one passage."""
    system = TEACHER_SYSTEM.format(relations=", ".join(RELATIONS), entity_types=", ".join(ENTITY_TYPES))
    return [{"role": "system", "content": system}, {"role": "user", "content": f"Passage:\n{text.strip()}"}]


@dataclass
class TeacherConfig:
    """Where and how to ask the teacher. The API key is read from the environment variable ``api_key_env``.

    Attributes:
        base_url: OpenAI-compatible endpoint, e.g. ``https://api.deepseek.com`` or ``http://127.0.0.1:8080/v1``.
        model: Model name sent to the endpoint; also part of the cache key.
        api_key_env: Name of the environment variable that holds the key ("" for endpoints without one).
        price_input_per_m / price_output_per_m: USD per million prompt / completion tokens.
        concurrency: Requests in flight at once.
        max_retries: Retries per passage after the first attempt.
        timeout_s: Per-request timeout.
        backoff_base_s / backoff_max_s: Exponential backoff: a random wait in [0, min(max, base * 2**attempt)].
        json_mode: Send ``response_format={"type": "json_object"}``.
        temperature / max_tokens: Sampling settings (part of the cache key).
        extra_body: Extra fields for the request body (provider-specific switches).
    """

    base_url: str = "https://api.deepseek.com"
    model: str = "deepseek-v4-flash"
    api_key_env: str = "DEEPSEEK_API_KEY"
    price_input_per_m: float = 0.14
    price_output_per_m: float = 0.28
    concurrency: int = 8
    max_retries: int = 6
    timeout_s: float = 60.0
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    json_mode: bool = True
    temperature: float = 0.0
    max_tokens: int = 2048
    extra_body: dict[str, Any] = field(default_factory=dict)

    def recorded(self) -> TeacherConfig:
        """The same settings under the model name ``recorded:<model>``: recorded answers get their own cache keys,
        so a later live run of the same model on the same passage is never served a recorded answer."""
        from dataclasses import replace

        return self if self.model.startswith("recorded:") else replace(self, model=f"recorded:{self.model}")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.price_input_per_m + completion_tokens * self.price_output_per_m) / 1e6

    def cache_key(self, messages: list[dict[str, str]]) -> str:
        """What identifies an answer: model, messages and the settings that change it."""
        blob = json.dumps({"model": self.model, "messages": messages, "temperature": self.temperature,
                           "max_tokens": self.max_tokens, "json_mode": self.json_mode,
                           "extra_body": self.extra_body}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class TeacherCache:
    """SQLite store of teacher answers, safe for one writer and resumable after a kill (WAL, commit per answer)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = resolve(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, model TEXT NOT NULL, passage_id TEXT,"
            " content TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,"
            " cost_usd REAL NOT NULL, source TEXT NOT NULL, created REAL NOT NULL)"
        )

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT content, prompt_tokens, completion_tokens, cost_usd, source FROM answers WHERE key = ?",
                (key,)).fetchone()
        if row is None:
            return None
        return dict(zip(("content", "prompt_tokens", "completion_tokens", "cost_usd", "source"), row))

    def put(self, key: str, *, model: str, passage_id: str, content: str, prompt_tokens: int = 0,
            completion_tokens: int = 0, cost_usd: float = 0.0, source: str = "live") -> bool:
        """Store an answer unless the key is present; returns whether it was new. Committed immediately."""
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, model, passage_id, content, prompt_tokens, completion_tokens, cost_usd, source, time.time()))
        return cur.rowcount == 1

    def count(self, model: str | None = None) -> int:
        with self._lock:
            if model is None:
                return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
            return self._db.execute("SELECT COUNT(*) FROM answers WHERE model = ?", (model,)).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> TeacherCache:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def pending(passages: Sequence[dict[str, Any]], config: TeacherConfig, cache: TeacherCache) -> list[dict[str, Any]]:
    """The passages that have no cached answer under ``config`` yet (what a run would request)."""
    return [p for p in passages if cache.get(config.cache_key(teacher_messages(p["text"]))) is None]


def estimate_cost(texts: Sequence[str], config: TeacherConfig, completion_tokens_per_passage: int = 300,
                  cached: int = 0) -> dict[str, Any]:
    """A cost estimate before labelling: prompt tokens are approximated as characters / 4.

    Args:
        texts: Passages still to label.
        config: Teacher settings (prices).
        completion_tokens_per_passage: Expected answer length.
        cached: Passages already answered (not charged).
    """
    prompt_chars = sum(sum(len(m["content"]) for m in teacher_messages(t)) for t in texts)
    prompt_tokens = prompt_chars // 4
    completion_tokens = completion_tokens_per_passage * len(texts)
    return {"passages": len(texts) + cached, "to_request": len(texts), "cached": cached,
            "est_prompt_tokens": prompt_tokens, "est_completion_tokens": completion_tokens,
            "est_cost_usd": round(config.cost(prompt_tokens, completion_tokens), 4)}


def load_recorded(cache: TeacherCache, folder: str | os.PathLike[str], config: TeacherConfig) -> dict[str, int]:
    """Load reference answers ``{text, triplets}`` from JSONL files into the cache as answers of ``config.model``.

    Pass ``config.recorded()`` (as 02 does) so that the answers are stored as ``recorded:<model>``.

    Each answer is stored exactly as a live teacher's would be (``{"triplets": [...]}`` as JSON text), under the
    key of the messages :func:`teacher_messages` builds for its text, with zero tokens and cost.

    Returns:
        ``{"records": n, "added": n_new}``.

    Raises:
        FileNotFoundError: naming the folder when it holds no JSONL file.
        ValueError: naming the file and record when a record lacks ``text`` or ``triplets``.
    """
    p = resolve(folder)
    files = sorted(p.glob("*.jsonl")) if p.is_dir() else [p]
    if not files or not files[0].is_file():
        raise FileNotFoundError(f"no recorded teacher answers (JSONL) at {p}")
    n = added = 0
    for f in files:
        for i, rec in enumerate(read_jsonl(f), 1):
            if not isinstance(rec.get("text"), str) or "triplets" not in rec:
                raise ValueError(f"{f}: record {i} needs 'text' and 'triplets'")
            content = json.dumps({"triplets": rec["triplets"]}, ensure_ascii=False)
            key = config.cache_key(teacher_messages(rec["text"]))
            added += cache.put(key, model=config.model, passage_id=str(rec.get("doc_id", "")), content=content,
                               source="recorded")
            n += 1
    return {"records": n, "added": added}


@dataclass
class LabelReport:
    """What happened to every passage: answers, failures with reasons, retries, tokens and cost."""

    answers: dict[str, str] = field(default_factory=dict)  # passage id -> raw answer content
    sources: dict[str, str] = field(default_factory=dict)  # passage id -> "cache" | "live" | "recorded"
    failed: dict[str, str] = field(default_factory=dict)  # passage id -> reason
    retries: Counter = field(default_factory=Counter)  # reason -> count
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0

    def records(self, passages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """One row per passage: its raw answer (or None), where the answer came from, and why it failed."""
        return [{"id": p["id"], "text": p["text"], "answer": self.answers.get(p["id"]),
                 "source": self.sources.get(p["id"], ""), "failure": self.failed.get(p["id"], "")} for p in passages]

    def summary(self) -> dict[str, Any]:
        by_source = Counter(self.sources.values())
        return {"passages": len(self.answers) + len(self.failed), "answered": len(self.answers),
                "from_cache": by_source.get("cache", 0) + by_source.get("recorded", 0),
                "recorded": by_source.get("recorded", 0), "live": by_source.get("live", 0),
                "failed": len(self.failed), "failure_reasons": dict(Counter(self.failed.values())),
                "requests": self.requests, "retries": dict(self.retries), "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "cost_usd": round(self.cost_usd, 6),
                "seconds": round(self.seconds, 2)}


class _Unusable(Exception):
    """An answer arrived but holds no usable triplet list: retried like a transient error."""


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _classify(exc: Exception) -> tuple[str, bool]:
    """(reason, retryable) for an exception raised by one request."""
    import openai

    if isinstance(exc, _Unusable):
        return f"unusable answer ({exc})", True
    if isinstance(exc, openai.RateLimitError):
        return "429 rate limited", True
    if isinstance(exc, openai.APITimeoutError):
        return "timeout", True
    if isinstance(exc, openai.APIConnectionError):
        return "connection error", True
    if isinstance(exc, openai.APIStatusError):
        code = exc.status_code
        return f"HTTP {code}", code >= 500 or code in (408, 409)
    if isinstance(exc, (json.JSONDecodeError, ValueError, openai.APIResponseValidationError)):
        return "malformed response body", True
    return f"{type(exc).__name__}: {exc}", False


async def label_passages_async(
    passages: Sequence[dict[str, Any]],
    config: TeacherConfig,
    cache: TeacherCache,
    *,
    offline: bool = False,
    show_progress: bool = True,
    seed: int = 0,
) -> LabelReport:
    """Label ``passages`` (dicts with ``id`` and ``text``); see the module docstring.

    Args:
        passages: Passages to label; ids must be unique.
        config: Endpoint, model, prices, retry and concurrency settings.
        cache: Answers already stored are used without a request.
        offline: Never send a request: answers come from the cache only (the recorded teacher), the rest fail.
        show_progress: Show a progress bar.
        seed: Seed of the backoff jitter.

    Raises:
        ValueError: on repeated passage ids.
        RuntimeError: when a request is needed and the API key variable is not set.
    """
    ids = [p["id"] for p in passages]
    if len(set(ids)) != len(ids):
        dupes = [k for k, c in Counter(ids).items() if c > 1][:5]
        raise ValueError(f"passage ids must be unique; repeated: {dupes}")
    report = LabelReport()
    t0 = time.perf_counter()
    todo = []
    for p in passages:
        key = config.cache_key(teacher_messages(p["text"]))
        hit = cache.get(key)
        if hit is not None:
            report.answers[p["id"]] = hit["content"]
            report.sources[p["id"]] = "recorded" if hit["source"] == "recorded" else "cache"
        elif offline:
            report.failed[p["id"]] = "no recorded answer"
        else:
            todo.append((p, key))
    if not todo:
        report.seconds = time.perf_counter() - t0
        return report

    import openai

    api_key = "not-needed"
    if config.api_key_env:
        api_key = os.environ.get(config.api_key_env, "")
        if not api_key:
            raise RuntimeError(f"{len(todo)} passages need the teacher, but the environment variable "
                               f"{config.api_key_env} is not set (set it, or set TEACHER_API_KEY_ENV to '' for a "
                               f"local endpoint without a key)")
    client = openai.AsyncOpenAI(base_url=config.base_url, api_key=api_key, max_retries=0, timeout=config.timeout_s)
    sem = asyncio.Semaphore(max(1, config.concurrency))
    rng = random.Random(seed)
    bar = progress(total=len(todo), desc=f"teacher {config.model}", unit="passage", disable=not show_progress)
    kwargs: dict[str, Any] = {"model": config.model, "temperature": config.temperature,
                              "max_tokens": config.max_tokens}
    if config.json_mode:
        kwargs["response_format"] = {"type": "json_object"}
    if config.extra_body:
        kwargs["extra_body"] = config.extra_body

    async def one(p: dict[str, Any], key: str) -> None:
        messages = teacher_messages(p["text"])
        reason = "not attempted"
        for attempt in range(config.max_retries + 1):
            wait = None
            try:
                async with sem:
                    report.requests += 1
                    resp = await client.chat.completions.create(messages=messages, **kwargs)
                usage = resp.usage
                pt, ct = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
                report.prompt_tokens += pt
                report.completion_tokens += ct
                report.cost_usd += config.cost(pt, ct)  # paid for, even if the answer turns out unusable
                content = resp.choices[0].message.content if resp.choices else None
                status = parse_output(content).status
                if status in UNUSABLE_STATUSES:  # retried like a transient error
                    raise _Unusable(status)
                cache.put(key, model=config.model, passage_id=str(p["id"]), content=content, prompt_tokens=pt,
                          completion_tokens=ct, cost_usd=config.cost(pt, ct), source="live")
                report.answers[p["id"]] = content
                report.sources[p["id"]] = "live"
                break
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                # A rejected key fails every request alike: stop instead of spending one request per passage.
                raise RuntimeError(f"the teacher endpoint {config.base_url} rejected the credentials from "
                                   f"${config.api_key_env or '(none)'}: {exc}") from None
            except Exception as exc:  # noqa: BLE001 - every other failure is classified and counted
                reason, retryable = _classify(exc)
                if not retryable or attempt == config.max_retries:
                    report.failed[p["id"]] = reason
                    break
                report.retries[reason.split(" (")[0]] += 1
                wait = _retry_after(exc)
            cap = min(config.backoff_max_s, config.backoff_base_s * 2**attempt)
            await asyncio.sleep(max(wait or 0.0, rng.uniform(0, cap)))  # full jitter, never below Retry-After
        bar.update(1)

    try:
        await asyncio.gather(*(one(p, key) for p, key in todo))
    finally:
        bar.close()
        await client.close()
    report.seconds = time.perf_counter() - t0
    return report


def label_passages(passages: Sequence[dict[str, Any]], config: TeacherConfig, cache: TeacherCache,
                   **kwargs: Any) -> LabelReport:
    """Synchronous wrapper of :func:`label_passages_async` that also works inside Jupyter's running event loop."""
    coro = label_passages_async(passages, config, cache, **kwargs)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # A loop is already running (Jupyter): run ours in a worker thread.
    out: dict[str, Any] = {}

    def runner() -> None:
        try:
            out["value"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            out["error"] = exc

    t = threading.Thread(target=runner, name="teacher-labelling")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]
