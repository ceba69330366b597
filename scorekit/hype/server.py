"""The rater-facing web server of a HYPE study: one page, a small JSON API, the images.

Built on the standard library (``http.server.ThreadingHTTPServer`` and ``sqlite3``): a study is served
to a handful of raters at once, so a framework would add a dependency and an attack surface for nothing.
Every answer is committed (WAL, synchronous=FULL) before it is acknowledged; the session state lives in
the database only, so a killed and restarted server resumes every rater where they were.

    GET  /r/<token>                      the page (instructions, tutorial with feedback, the study)
    GET  /api/<token>/state              the current image and the progress
    GET  /api/<token>/image/<id>.png     an image already shown to that rater
    POST /api/<token>/answer             {"image": "<id>", "answer": "real" | "fake"}

Bad requests get a 4xx status and ``{"error": "..."}``; nothing else is served.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

from .session import SessionError, answer, shown, state
from .study import connect

MAX_BODY = 4096
STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
_TOKEN = r"[A-Za-z0-9_-]{8,64}"
_ID = r"[0-9a-f]{16}"


def _static(name: str) -> bytes:
    return (resources.files("scorekit.hype") / "static" / name).read_bytes()


class Handler(BaseHTTPRequestHandler):
    server_version = "scorekit-hype"
    study: Path  # set on the subclass made by make_server

    def log_message(self, fmt: str, *args) -> None:  # one quiet line per request, only with --verbose
        if getattr(self.server, "verbose", False):
            sys.stderr.write(f"{self.address_string()} {fmt % args}\n")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _guard(self, route) -> None:
        conn = None
        try:
            conn = connect(self.study)
            route(conn)
        except SessionError as e:
            self._error(e.status, str(e))
        except Exception as e:  # noqa: BLE001 - never a traceback to the client
            sys.stderr.write(f"scorekit hype serve: internal error on {self.command} {self.path}: "
                             f"{e.__class__.__name__}: {e}\n")
            self._error(500, "internal error")
        finally:
            if conn is not None:
                conn.close()

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            return self._send(200, b"<!doctype html><title>scorekit HYPE</title><p>Open the link you were given.",
                              "text/html; charset=utf-8")
        if path.startswith("/static/") and path[8:] in STATIC:
            return self._send(200, _static(path[8:]), STATIC[path[8:]])
        if m := re.fullmatch(rf"/r/({_TOKEN})", path):
            def page(conn):
                state(conn, m[1])  # 404 for a token that was not created for this study
                self._send(200, _static("index.html"), "text/html; charset=utf-8")

            return self._guard(page)
        if m := re.fullmatch(rf"/api/({_TOKEN})/state", path):
            return self._guard(lambda conn: self._json(200, state(conn, m[1])))
        if m := re.fullmatch(rf"/api/({_TOKEN})/image/({_ID})\.png", path):
            def image(conn):
                shown(conn, m[1], m[2])
                self._send(200, (self.study / "images" / f"{m[2]}.png").read_bytes(), "image/png")

            return self._guard(image)
        self._error(404, "not found")

    def do_POST(self) -> None:  # noqa: N802
        m = re.fullmatch(rf"/api/({_TOKEN})/answer", self.path.split("?", 1)[0])
        if m is None:
            return self._error(404, "not found")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self._error(411, "a Content-Length is required")
        if not 0 < length <= MAX_BODY:
            return self._error(413 if length > MAX_BODY else 400, "the body must be a small JSON object")
        try:
            body = json.loads(self.rfile.read(length))
            image_id, value = body["image"], body["answer"]
            if not isinstance(image_id, str) or not isinstance(value, str):
                raise TypeError
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return self._error(400, 'expected {"image": "<id>", "answer": "real" | "fake"}')
        if not re.fullmatch(_ID, image_id):
            return self._error(404, "unknown image")
        self._guard(lambda conn: self._json(200, answer(conn, m[1], image_id, value)))

    def _not_allowed(self) -> None:
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed")

    do_HEAD = do_GET  # noqa: N815
    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed  # noqa: N815


def make_server(study: str | Path, host: str = "127.0.0.1", port: int = 8000, *, verbose: bool = False
                ) -> ThreadingHTTPServer:
    """A server for ``study`` (not started); port 0 picks a free one (see ``server.server_address``)."""
    folder = Path(study)
    connect(folder).close()  # a clear error now if this is not a study
    handler = type("StudyHandler", (Handler,), {"study": folder})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    server.verbose = verbose
    return server


def serve_in_thread(study: str | Path, host: str = "127.0.0.1", port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """Start a server in a background thread (tests, notebooks); returns it and its base URL."""
    server = make_server(study, host, port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{server.server_address[0]}:{server.server_address[1]}"
