#!/usr/bin/env python3
"""llm_double.py -- a TEST DOUBLE of an OpenAI-compatible LLM endpoint.

It is not a model and answers nothing by itself: it replays a script of
canned answers, in order, to POST /v1/chat/completions (and /chat/completions),
and logs every request, so tests of the openai generator plugin can check
what was sent (headers, Authorization included, and the JSON body) and how
errors, retries and Retry-After are handled.  Standard library only.

    python3 tests/llm/llm_double.py --script SCRIPT.json --port-file FILE \\
            --log REQUESTS.jsonl

SCRIPT.json is a JSON array (or an object {"entries": [...]}) of entries:
    {"status": 200, "content": "```c\\n...\\n```", "delay_ms": 0,
     "headers": {"Retry-After": "1"}}
    {"status": 503, "body": "overloaded"}
    {"content_file": "reply.md"}          (path relative to the script)
An entry with "content" or "content_file" gets an OpenAI-shaped
chat.completion JSON answer (status 200 unless given); one with "body" gets
that body (a string as text/plain, anything else as JSON).  When the script
is used up every request gets 500 "script exhausted".

It binds 127.0.0.1 on a free port, writes the port to FILE once it listens
(atomically: a temporary file renamed), appends one JSON line per request to
the log, and exits on SIGTERM or SIGINT.
"""

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMPLETION_PATHS = ("/v1/chat/completions", "/chat/completions")
MAX_BODY = 64 * 1024 * 1024


class Script:
    """The entries to replay, handed out one per request, and the log."""

    def __init__(self, path, log_path):
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if isinstance(data, dict):
            data = data.get("entries", [])
        if not isinstance(data, list):
            raise ValueError(f"{path}: the script must be a JSON array of entries")
        base = os.path.dirname(os.path.abspath(path))
        self.entries = []
        for i, e in enumerate(data):
            if not isinstance(e, dict):
                raise ValueError(f"{path}: entry {i} is not an object")
            e = dict(e)
            if "content_file" in e:
                cf = e.pop("content_file")
                cf = cf if os.path.isabs(cf) else os.path.join(base, cf)
                with open(cf, encoding="utf-8") as f:
                    e["content"] = f.read()
            self.entries.append(e)
        self.next = 0
        self.lock = threading.Lock()
        self.log_path = log_path

    def take(self):
        with self.lock:
            if self.next >= len(self.entries):
                return None
            e = self.entries[self.next]
            self.next += 1
            return e

    def log(self, record):
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self.lock:
            if self.log_path:
                with open(self.log_path, "a", encoding="utf-8") as f:
                    f.write(line)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "llm-double/1.0"

    def log_message(self, fmt, *args):  # quiet: the request log is the record
        pass

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_BODY:
                    raise ValueError("body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length", "0") or "0")
        if n > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(n) if n > 0 else b""

    def send(self, status, body, ctype, headers=None):
        data = body if isinstance(body, bytes) else body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(str(k), str(v))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path in ("/v1/models", "/models"):
            self.send(200, json.dumps({"object": "list", "data": [
                {"id": "llm-double", "object": "model"}]}), "application/json")
        else:
            self.send(404, "not found", "text/plain")

    def do_POST(self):
        script = self.server.script
        try:
            raw = self.read_body()
        except (ValueError, OSError) as exc:
            self.send(400, str(exc), "text/plain")
            return
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            body = raw.decode("utf-8", "replace")
        script.log({"time": time.time(), "method": "POST", "path": self.path,
                    "headers": dict(self.headers.items()), "body": body})
        if self.path not in COMPLETION_PATHS:
            self.send(404, "not found", "text/plain")
            return
        entry = script.take()
        if entry is None:
            self.send(500, "script exhausted", "text/plain")
            return
        delay = entry.get("delay_ms", 0)
        if delay:
            time.sleep(delay / 1000.0)
        headers = entry.get("headers", {})
        if "content" in entry:
            model = body.get("model", "llm-double") if isinstance(body, dict) else "llm-double"
            answer = {
                "id": f"chatcmpl-double-{script.next}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0,
                             "message": {"role": "assistant", "content": entry["content"]},
                             "finish_reason": entry.get("finish_reason", "stop")}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            }
            self.send(entry.get("status", 200), json.dumps(answer), "application/json",
                      headers)
            return
        payload = entry.get("body", "")
        if isinstance(payload, str):
            self.send(entry.get("status", 200), payload, "text/plain", headers)
        else:
            self.send(entry.get("status", 200), json.dumps(payload), "application/json",
                      headers)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that gave up (its timeout, a reply over its size limit) is
        # part of what is tested, not a fault of the double.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser(
        description="TEST DOUBLE of an OpenAI-compatible LLM endpoint: replays a script "
                    "of canned answers to POST /v1/chat/completions and logs every request. "
                    "Not a model.")
    ap.add_argument("--script", required=True, help="JSON array of canned answers")
    ap.add_argument("--port-file", required=True,
                    help="where to write the port once listening on 127.0.0.1")
    ap.add_argument("--log", help="append one JSON line per request here")
    args = ap.parse_args()

    try:
        script = Script(args.script, args.log)
    except (OSError, ValueError) as exc:
        print(f"llm_double: {exc}", file=sys.stderr)
        return 2

    server = Server(("127.0.0.1", 0), Handler)
    server.script = script

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    tmp = args.port_file + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"{server.server_address[1]}\n")
    os.replace(tmp, args.port_file)
    try:
        server.serve_forever(poll_interval=0.1)
    except SystemExit:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
