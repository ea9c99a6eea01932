"""A local OpenAI-compatible chat-completions server for tests, with injectable faults.

Standard library only. Use it in-process::

    with FakeOpenAIServer(fault_rate=0.2, seed=1) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="x")
        ...
        assert srv.stats["ok"] == sum(srv.served.values())

or as a separate process (for kill/resume tests)::

    python -m tests.support.fake_openai --port 0 --fault-rate 0.2 --seed 1 --port-file PATH [--stats-file PATH]

Faults, drawn per chat request with probability ``fault_rate`` from ``faults``:

* ``"429"``: status 429 with a ``Retry-After`` header and an error body.
* ``"500"``: status 500 with an error body.
* ``"timeout"``: hangs ``hang_seconds`` then answers normally; if the client hangs up first
  (or the server stops), nothing is written.
* ``"truncated"``: status 200 with the first half of a valid body (Content-Length matches it).
* ``"nonjson"``: a valid chat.completion whose content is prose, not JSON.

Counting: ``stats["requests"]`` counts every chat-completions POST. Each one then lands in exactly one of
``"bad_request"``, ``"429"``, ``"500"``, ``"timeout"``, ``"truncated"``, ``"nonjson"``, ``"ok"``, except that a
``"timeout"`` whose late reply was delivered counts in ``"ok"`` too. ``served`` holds exactly the completions
counted in ``"ok"``, so ``sum(served.values()) == stats["ok"]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ALL_FAULTS: tuple[str, ...] = ("429", "500", "timeout", "truncated", "nonjson")
STAT_KEYS: tuple[str, ...] = ("requests", "ok", "429", "500", "timeout", "truncated", "nonjson", "bad_request")
NONJSON_CONTENT = "Sure! Here are the triplets you asked for: none."
_CAPITALISED = re.compile(r"\b[A-Z][a-zA-Z]+\b")
_QUIET_ERRORS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


def _content_text(content: Any) -> str:
    """Returns the text of a message content: a string, or a list of OpenAI content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return str(content)


def last_user_text(messages: list[dict]) -> str:
    """Returns the text of the last ``user`` message, or ``""`` when there is none.

    Args:
        messages: The request's ``messages`` list.
    """
    for message in reversed(messages):
        if message.get("role") == "user":
            return _content_text(message.get("content"))
    return ""


def prompt_key(messages: list[dict]) -> str:
    """Returns the sha256 hex digest of the last user message content (the key of ``served``).

    Args:
        messages: The request's ``messages`` list.
    """
    return hashlib.sha256(last_user_text(messages).encode("utf-8")).hexdigest()


def default_answer(messages: list[dict]) -> str:
    """Builds a deterministic ``{"triplets": [...]}`` answer from the last user message.

    The passage is the text after the last line equal to ``Passage:`` (the whole message when there is
    no such line). Its first two distinct capitalised words become one ``part_of`` triplet; with fewer
    than two the answer is ``{"triplets": []}``.

    Args:
        messages: The request's ``messages`` list.

    Returns:
        The assistant content, a JSON string.
    """
    text = last_user_text(messages)
    lines = text.splitlines()
    marks = [i for i, line in enumerate(lines) if line.strip() == "Passage:"]
    passage = "\n".join(lines[marks[-1] + 1 :]) if marks else text
    words = list(dict.fromkeys(_CAPITALISED.findall(passage)))  # dedupe, keep order
    if len(words) < 2:
        return json.dumps({"triplets": []})
    triplet = {
        "source": {"title": words[0], "type": "entity"},
        "relation": {"type": "part_of", "weight": 0.9},
        "target": {"title": words[1], "type": "entity"},
    }
    return json.dumps({"triplets": [triplet]})


def _error_body(message: str, kind: str) -> dict:
    """Returns an OpenAI-style error payload."""
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _peer_closed(sock: socket.socket) -> bool:
    """Tells whether the client has hung up (readable with EOF), without consuming any data."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


class _Handler(BaseHTTPRequestHandler):
    """Request handler; all state lives on ``self.server.fake`` (the FakeOpenAIServer)."""

    protocol_version = "HTTP/1.1"  # keep-alive, as real APIs do
    timeout = 60  # drop idle keep-alive connections eventually
    disable_nagle_algorithm = True  # headers and body go in separate writes: avoid 40 ms delayed-ACK stalls
    server_version = "FakeOpenAI/1.0"

    @property
    def fake(self) -> FakeOpenAIServer:
        return self.server.fake  # type: ignore[attr-defined]

    def setup(self) -> None:
        super().setup()
        self.fake._register(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except _QUIET_ERRORS:
            pass
        finally:
            self.fake._unregister(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silences the default per-request logging."""

    # -- helpers ---------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        """Writes one response with a Content-Length matching ``body``."""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _send_json(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode("utf-8"), headers)

    def _read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        return self.rfile.read(length) if length > 0 else b""

    # -- routes ----------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        path = self.path.split("?", 1)[0].rstrip("/")
        if path in ("/v1/models", "/models"):
            self._send_json(200, {"object": "list", "data": [{"id": self.fake.model, "object": "model"}]})
        else:
            self._send_json(404, _error_body(f"no route {path}", "not_found_error"))

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        path = self.path.split("?", 1)[0].rstrip("/")
        raw = self._read_body()  # always drain the body so keep-alive stays in sync
        if path not in ("/v1/chat/completions", "/chat/completions"):
            self._send_json(404, _error_body(f"no route {path}", "not_found_error"))
            return
        try:
            self.fake._chat(self, raw)
        except _QUIET_ERRORS:
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that keeps a back-reference and drops client hang-ups quietly."""

    daemon_threads = True
    fake: FakeOpenAIServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, _QUIET_ERRORS + (TimeoutError,)) or self.fake._stopping.is_set():
            return
        super().handle_error(request, client_address)


class FakeOpenAIServer:
    """A local OpenAI-compatible chat-completions server with seeded, injectable faults.

    Args:
        fault_rate: Probability that a chat request gets a fault instead of a normal answer.
        faults: The faults to draw from, uniformly (see the module docstring).
        seed: Seed of the fault draws (``random.Random(seed)``, shared by all requests).
        answer: ``answer(messages) -> str`` giving the assistant content; defaults to ``default_answer``.
        hang_seconds: How long a ``"timeout"`` fault hangs before answering.
        retry_after: The ``Retry-After`` header value (seconds) of a ``"429"`` fault.
        model: Model id listed by ``GET /v1/models`` (and echoed when a request names none).
        host: Interface to bind.
        port: Port to bind; 0 picks a free one at ``start()``.

    Attributes:
        base_url: ``http://HOST:PORT/v1``, set by ``start()``.
        stats: Counters (see the module docstring); updated under a lock.
        served: prompt_key -> number of successful (200, complete JSON) completions served.
    """

    def __init__(
        self,
        *,
        fault_rate: float = 0.0,
        faults: tuple[str, ...] = ALL_FAULTS,
        seed: int = 0,
        answer: Callable[[list[dict]], str] | None = None,
        hang_seconds: float = 5.0,
        retry_after: float = 0.05,
        model: str = "fake-teacher",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        unknown = set(faults) - set(ALL_FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {ALL_FAULTS}")
        if fault_rate > 0 and not faults:
            raise ValueError("fault_rate > 0 needs at least one fault")
        self.fault_rate = float(fault_rate)
        self.faults = tuple(faults)
        self.answer = answer or default_answer
        self.hang_seconds = float(hang_seconds)
        self.retry_after = retry_after
        self.model = model
        self.host = host
        self.port = port
        self.base_url = ""
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self.served: dict[str, int] = {}
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._conn_cond = threading.Condition()
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FakeOpenAIServer:
        """Binds and serves in a daemon thread.

        Returns:
            self, with ``port`` and ``base_url`` set.
        """
        if self._httpd is not None:
            raise RuntimeError("server already started")
        self._stopping.clear()
        httpd = _Server((self.host, self.port), _Handler)
        httpd.fake = self
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self.base_url = f"http://{self.host}:{self.port}/v1"
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fake-openai-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self, drain_seconds: float = 2.0) -> None:
        """Stops serving, closes open connections and waits briefly for handlers to finish.

        Hanging ``"timeout"`` replies are abandoned (not written, not counted in ``served``).

        Args:
            drain_seconds: Longest wait for in-flight handlers.
        """
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        with self._conn_cond:
            for conn in list(self._connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)  # unblocks idle keep-alive reads
                except OSError:
                    pass
            self._conn_cond.wait_for(lambda: not self._connections, timeout=drain_seconds)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=drain_seconds)
            self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def snapshot(self) -> dict:
        """Returns a consistent copy ``{"stats": ..., "served": ...}`` taken under the lock."""
        with self._lock:
            return {"stats": dict(self.stats), "served": dict(self.served)}

    # -- internals -------------------------------------------------------------------------------

    def _register(self, conn: socket.socket) -> None:
        with self._conn_cond:
            self._connections.add(conn)

    def _unregister(self, conn: socket.socket) -> None:
        with self._conn_cond:
            self._connections.discard(conn)
            self._conn_cond.notify_all()

    def _count(self, key: str, served_key: str | None = None) -> None:
        with self._lock:
            self.stats[key] += 1
            if served_key is not None:
                self.served[served_key] = self.served.get(served_key, 0) + 1

    def _draw_fault(self) -> str | None:
        with self._lock:
            if self.fault_rate > 0 and self._rng.random() < self.fault_rate:
                return self._rng.choice(self.faults)
            return None

    def _completion(self, request: dict, content: str, key: str) -> dict:
        """Builds a chat.completion payload for ``content``."""
        with self._lock:
            self._counter += 1
            n = self._counter
        messages = request["messages"]
        prompt_tokens = sum(len(_content_text(m.get("content"))) for m in messages) // 4
        completion_tokens = len(content) // 4
        return {
            "id": f"chatcmpl-{key[:12]}-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model") or self.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
                "logprobs": None,
            }],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def _hang(self, handler: _Handler) -> bool:
        """Sleeps up to ``hang_seconds``; returns False early when the client hangs up or the server stops."""
        deadline = time.monotonic() + self.hang_seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            if self._stopping.is_set() or _peer_closed(handler.connection):
                return False
            time.sleep(min(0.02, remaining))

    def _chat(self, handler: _Handler, raw: bytes) -> None:
        """Answers one chat-completions request, possibly with a fault."""
        self._count("requests")
        try:
            request = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            request = None
        messages = request.get("messages") if isinstance(request, dict) else None
        if not (isinstance(messages, list) and messages and all(isinstance(m, dict) for m in messages)):
            self._count("bad_request")
            handler._send_json(400, _error_body("body must be JSON with a non-empty 'messages' list",
                                                "invalid_request_error"))
            return

        key = prompt_key(messages)
        fault = self._draw_fault()
        if fault == "429":
            self._count("429")
            handler._send_json(429, _error_body("rate limited", "rate_limit_error"),
                               {"Retry-After": str(self.retry_after)})
            return
        if fault == "500":
            self._count("500")
            handler._send_json(500, _error_body("internal server error", "server_error"))
            return
        if fault == "nonjson":
            self._count("nonjson")
            handler._send_json(200, self._completion(request, NONJSON_CONTENT, key))
            return

        try:
            content = self.answer(messages)
        except Exception as exc:  # a broken answer callable is a test bug: make it visible
            self._count("500")
            handler._send_json(500, _error_body(f"answer() raised {exc!r}", "server_error"))
            return
        body = json.dumps(self._completion(request, content, key)).encode("utf-8")

        if fault == "truncated":
            self._count("truncated")
            handler._send(200, body[: len(body) // 2])
            handler.close_connection = True
            return
        if fault == "timeout":
            self._count("timeout")
            if not self._hang(handler):
                handler.close_connection = True  # client gone or server stopping: write nothing
                return
            try:
                handler._send(200, body)
            except (*_QUIET_ERRORS, OSError):
                handler.close_connection = True
                return
            self._count("ok", key)  # late reply actually written
            return

        handler._send(200, body)
        self._count("ok", key)


# -- process mode ----------------------------------------------------------------------------------


def _write_atomic(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` via ``path.tmp`` and a rename."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """Runs the server as a process until SIGTERM/SIGINT.

    Args:
        argv: Command-line arguments (defaults to ``sys.argv[1:]``).

    Returns:
        The exit status (0).
    """
    parser = argparse.ArgumentParser(prog="python -m tests.support.fake_openai", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--faults", default=",".join(ALL_FAULTS), help="comma-separated subset of " + ",".join(ALL_FAULTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hang-seconds", type=float, default=5.0)
    parser.add_argument("--retry-after", type=float, default=0.05)
    parser.add_argument("--model", default="fake-teacher")
    parser.add_argument("--port-file", help="write the bound port here once listening")
    parser.add_argument("--stats-file", help="on exit, write {'stats': ..., 'served': ...} here as JSON")
    args = parser.parse_args(argv)

    faults = tuple(f.strip() for f in args.faults.split(",") if f.strip())
    server = FakeOpenAIServer(fault_rate=args.fault_rate, faults=faults, seed=args.seed,
                              hang_seconds=args.hang_seconds, retry_after=args.retry_after,
                              model=args.model, host=args.host, port=args.port)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    server.start()
    if args.port_file:
        _write_atomic(args.port_file, f"{server.port}\n")
    print(server.base_url, flush=True)
    try:
        while not done.wait(0.2):
            pass
    finally:
        server.stop()
        if args.stats_file:
            _write_atomic(args.stats_file, json.dumps(server.snapshot(), indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
