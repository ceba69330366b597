"""The rater-facing web server of a HYPE study: one page, a small JSON API, the images.

Built on the standard library (``http.server`` with a pool of threads, and ``sqlite3``): a study is served
to a handful of raters at once, so a framework would add a dependency and an attack surface for nothing.
Every answer is committed (WAL, synchronous=FULL) before it is acknowledged; the session state lives in
the database only, so a killed and restarted server resumes every rater where they were.

    GET  /r/<token>                      the page (instructions, tutorial with feedback, the study)
    GET  /api/<token>/state              the current image and the progress
    GET  /api/<token>/image/<id>.png     an image already shown to that rater
    POST /api/<token>/answer             {"image": "<id>", "answer": "real" | "fake"}

Every request gets an answer: bad requests a 4xx and ``{"error": "..."}``, a method the API does not serve
a 405, a bug a 500 with no traceback text (one line in the server's log), a client that goes away one line.
Hostile or broken clients cannot exhaust it: each connection serves one request (HTTP/1.0, so none sits idle
between requests), a fixed pool of ``max_connections`` threads serves them in the order they came, and a
request must arrive in full within ``timeout`` seconds of its connection (408 and closed otherwise).
"""

from __future__ import annotations

import json
import queue
import re
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from importlib import resources
from pathlib import Path

from .session import SessionError, answer, shown, state
from .study import connect

MAX_BODY = 4096
TIMEOUT = 5.0  # seconds: each read of a request line or header, and the whole body
MAX_CONNECTIONS = 8  # connections served at once (one worker thread each; more only contend for the GIL)
STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
_TOKEN = r"[A-Za-z0-9_-]{8,64}"
_ID = r"[0-9a-f]{16}"
_BAD_BODY = 'expected {"image": "<id>", "answer": "real" | "fake"}'


def _static(name: str) -> bytes:
    return (resources.files("scorekit.hype") / "static" / name).read_bytes()


def _log(text: str) -> None:
    sys.stderr.write(f"scorekit hype serve: {text}\n")
    sys.stderr.flush()


class _BadBody(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Handler(BaseHTTPRequestHandler):
    server_version = "scorekit-hype"
    study: Path  # set on the subclass made by make_server
    timeout = TIMEOUT  # seconds from the connection's arrival to the end of its request (see setup)

    def log_message(self, fmt: str, *args) -> None:  # one quiet line per request, only with --verbose
        if getattr(self.server, "verbose", False):
            sys.stderr.write(f"{self.address_string()} {fmt % args}\n")

    # ----- answering -------------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.answered = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (a malformed request line, an unknown method, headers too long) as JSON;
        an HTTP method that the API does not serve is a 405."""
        if code == HTTPStatus.NOT_IMPLEMENTED:
            code, message = HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed"
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # a request line without a version: answer with a status line anyway
            self.request_version = "HTTP/1.0"
        try:
            self._error(code, message or HTTPStatus(code).phrase)
        except OSError:
            pass

    def _safely(self, route) -> None:
        """Run one route: a client that went away is one log line; any other failure a JSON 500."""
        try:
            route()
        except (ConnectionError, TimeoutError) as e:
            self.close_connection = True
            _log(f"client {self.address_string()} went away during {self.command} {self.path} "
                 f"({e.__class__.__name__})")
        except Exception as e:  # noqa: BLE001 - never a traceback to the client or a dropped connection
            _log(f"internal error on {self.command} {self.path}: {e.__class__.__name__}: {e}")
            self.close_connection = True
            try:
                self._error(500, "internal error")
            except OSError:
                pass

    def _guard(self, route) -> None:
        conn = connect(self.study)
        try:
            route(conn)
        except SessionError as e:
            self._error(e.status, str(e))
        finally:
            conn.close()

    # ----- routes ----------------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._safely(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._safely(self._post)

    def _get(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            return self._send(200, b"<!doctype html><title>scorekit HYPE</title><p>Open the link you were given.",
                              "text/html; charset=utf-8")
        if path == "/favicon.ico":  # browsers ask for it unprompted: answer quietly
            return self._send(204, b"", "image/x-icon")
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

    def setup(self) -> None:
        super().setup()
        self.rfile = _DeadlineReader(self.rfile, self.connection, self.server.accepted_at() + self.timeout)
        self.answered, self.command, self.requestline, self.request_version = False, None, "", "HTTP/1.0"

    def handle_one_request(self) -> None:
        super().handle_one_request()
        if self.rfile.timed_out and not self.answered:  # http.server closes a timed-out request without a word
            self.send_error(HTTPStatus.REQUEST_TIMEOUT, "request timed out")

    def _read_body(self, length: int) -> bytes:
        """The body, within the request's deadline (see :class:`_DeadlineReader`)."""
        chunks, got = [], 0
        while got < length:
            chunk = self.rfile.read1(length - got)
            if not chunk:
                raise _BadBody(400, f"the body ended after {got} of the {length} bytes announced")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _post(self) -> None:
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
            raw = self._read_body(length)
        except TimeoutError:
            self.close_connection = True
            return self._error(408, f"the request did not arrive within {self.timeout:g} s")
        except _BadBody as e:
            self.close_connection = True
            return self._error(e.status, str(e))
        try:
            body = json.loads(raw)
            image_id, value = body["image"], body["answer"]
            if not isinstance(image_id, str) or not isinstance(value, str):
                raise TypeError
        except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: "[[[[..." nested too deeply
            return self._error(400, _BAD_BODY)
        if not re.fullmatch(_ID, image_id):
            return self._error(404, "unknown image")
        self._guard(lambda conn: self._json(200, answer(conn, m[1], image_id, value)))

    def _not_allowed(self) -> None:
        self._safely(lambda: self._error(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed"))

    do_HEAD = do_GET  # noqa: N815
    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed  # noqa: N815


class _DeadlineReader:
    """The request's input stream with one deadline: before every read the socket's timeout is set to the time
    left (TimeoutError when it passes). A client that trickles bytes cannot hold a worker past the deadline."""

    def __init__(self, raw, sock, deadline: float):
        self._raw, self._sock, self.deadline = raw, sock, deadline
        self.timed_out = False

    def _call(self, read, n: int) -> bytes:
        left = self.deadline - time.monotonic()
        try:  # past the deadline, what has already arrived is still read (a request that waited for a worker)
            self._sock.settimeout(max(left, 0.01))
            return read(n)
        except TimeoutError:
            self.timed_out = True
            raise

    def readline(self, limit: int = -1) -> bytes:
        return self._call(self._raw.readline, limit)

    def read(self, n: int = -1) -> bytes:
        return self._call(self._raw.read, n)

    def read1(self, n: int = -1) -> bytes:
        return self._call(self._raw.read1, n)

    def close(self) -> None:
        self._raw.close()


class StudyServer(HTTPServer):
    """An HTTP server with a fixed pool of ``max_connections`` worker threads. The listening loop accepts every
    connection at once and queues it with the time it arrived; a worker serves it within ``timeout`` seconds of
    that time (408 otherwise), so connections that stall cannot delay the others by more than the timeout
    however many there are. A full queue (``QUEUE`` connections waiting) is answered 503 at once."""

    QUEUE = 1024
    request_queue_size = 128

    def __init__(self, address, handler, *, max_connections: int = MAX_CONNECTIONS, verbose: bool = False):
        super().__init__(address, handler)
        self.max_connections, self.verbose = max_connections, verbose
        self._pending: queue.Queue = queue.Queue(self.QUEUE)
        self._local = threading.local()
        self._workers = [threading.Thread(target=self._work, daemon=True, name=f"hype-worker-{i}")
                         for i in range(max_connections)]
        for w in self._workers:
            w.start()

    def accepted_at(self) -> float:
        """When the connection the calling worker serves was accepted (time.monotonic)."""
        return getattr(self._local, "accepted", time.monotonic())

    def process_request(self, request, client_address) -> None:
        try:
            self._pending.put_nowait((request, client_address, time.monotonic()))
        except queue.Full:
            body = b'{"error": "the server is busy, try again"}'
            try:
                request.settimeout(0.5)
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
            except OSError:
                pass
            self.shutdown_request(request)

    def _work(self) -> None:
        while True:
            item = self._pending.get()
            if item is None:
                return
            request, client_address, self._local.accepted = item
            try:
                self.finish_request(request, client_address)
            except Exception:  # noqa: BLE001 - reported as one line by handle_error
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)

    def handle_error(self, request, client_address) -> None:  # one line, never a traceback
        e = sys.exc_info()[1]
        if isinstance(e, (ConnectionError, TimeoutError)):
            _log(f"client {client_address[0]} went away ({e.__class__.__name__})")
        else:
            _log(f"internal error with client {client_address[0]}: {e.__class__.__name__}: {e}")

    def server_close(self) -> None:
        super().server_close()
        for _ in self._workers:
            try:
                self._pending.put_nowait(None)
            except queue.Full:
                break


def make_server(study: str | Path, host: str = "127.0.0.1", port: int = 8000, *, verbose: bool = False,
                timeout: float = TIMEOUT, max_connections: int = MAX_CONNECTIONS) -> StudyServer:
    """A server for ``study`` (not started); port 0 picks a free one (see ``server.server_address``)."""
    folder = Path(study)
    connect(folder).close()  # a clear error now if this is not a study
    handler = type("StudyHandler", (Handler,), {"study": folder, "timeout": float(timeout)})
    return StudyServer((host, port), handler, max_connections=max_connections, verbose=verbose)


def serve_in_thread(study: str | Path, host: str = "127.0.0.1", port: int = 0, **options
                    ) -> tuple[StudyServer, str]:
    """Start a server in a background thread (tests, notebooks); returns it and its base URL."""
    server = make_server(study, host, port, **options)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{server.server_address[0]}:{server.server_address[1]}"
