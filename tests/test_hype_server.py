"""The HYPE server under hostile and broken clients, through a real `scorekit hype serve` process: every
request is answered (JSON 4xx / 405 / 500, never a dropped connection or a traceback), stalled clients cannot
hold the workers past the timeout, and a browser dropping a connection is one log line."""

import json
import signal
import socket
import subprocess
import sys
import time

from test_hype import jhttp, make_study


def _serve(study, *options):
    proc = subprocess.Popen([sys.executable, "-m", "scorekit", "hype", "serve", str(study), "--port", "0", *options],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("serving"), line + proc.stderr.read()
    base = line.split(" on ")[1].split("/ ")[0]
    return proc, base, int(base.rsplit(":", 1)[1])


def _stop(proc) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return out, err


def raw(port, data: bytes, timeout=10.0) -> tuple[int | None, bytes]:
    """Send bytes as they are; the status and the body of the answer (None: no answer at all)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    if not got.startswith(b"HTTP/1."):
        return None, got
    head, _, body = got.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def post(token, body: bytes, length=None) -> bytes:
    return (f"POST /api/{token}/answer HTTP/1.0\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n\r\n").encode() + body


def test_every_hostile_request_gets_a_json_answer_and_no_traceback(tmp_path):
    truth, tokens = make_study(tmp_path / "s")
    proc, base, port = _serve(tmp_path / "s")
    try:
        a = tokens[0]
        _, s = jhttp(base, "GET", f"/api/{a}/state")
        image = s["image"]["id"]
        cases = [
            (post(a, b"[" * 4000), 400),                                    # RecursionError in json.loads before
            (post(a, b'{"image": ' + b"[" * 2000 + b"]" * 2000 + b"}"), 400),
            (post(a, b'{"image": "' + image.encode() + b'", "answer": ' + b"{" * 2000 + b"}"), 400),
            (post(a, b"\xff\xfe\x00"), 400),                                 # not UTF-8
            (post(a, b'{"image": 1e999999, "answer": "real"}'), 400),
            (post(a, b"{}", length=-5), 400),
            (post(a, b"x" * 10, length="ten"), 411),
            (post(a, b"", length=10_000_000), 413),
            (post(a, b'{"image"', length=100), 408),           # announces 100 bytes, sends 8
            (b"BREW /pot HTTP/1.0\r\n\r\n", 405),                           # a method nobody serves
            (f"PUT /api/{a}/answer HTTP/1.0\r\nContent-Length: 2\r\n\r\n{{}}".encode(), 405),
            (b"DELETE / HTTP/1.0\r\n\r\n", 405),
            (b"OPTIONS * HTTP/1.0\r\n\r\n", 405),
            (b"garbage\r\n\r\n", 400),                                       # no version
            (b"GET / HTTP/9.9\r\n\r\n", 505),
            (b"GET /" + b"a" * 70_000 + b" HTTP/1.0\r\n\r\n", 414),
            (b"GET / HTTP/1.0\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", 431),  # too many headers
            (b"GET /favicon.ico HTTP/1.0\r\n\r\n", 204),                    # asked for by every browser
            (b"GET /static/../../etc/passwd HTTP/1.0\r\n\r\n", 404),
            (b"GET /api/" + a.encode() + b"/image/" + b"0" * 16 + b".png HTTP/1.0\r\n\r\n", 404),
            (b"HEAD /r/" + a.encode() + b" HTTP/1.0\r\n\r\n", 200),
        ]
        for request, expected in cases:
            status, body = raw(port, request)
            assert status == expected, (request[:60], status, body[:200])
            if status >= 400 and request[:4] != b"HEAD":
                assert "error" in json.loads(body) and b"Traceback" not in body
        # clients that go away: before sending anything, mid-request, and with a reset while the answer is written
        for data in (b"", b"GET /api/", post(a, b'{"image": "')):
            with socket.create_connection(("127.0.0.1", port)) as c:
                c.sendall(data)
        for _ in range(20):
            c = socket.create_connection(("127.0.0.1", port))
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            c.sendall(f"GET /r/{a} HTTP/1.0\r\n\r\n".encode())
            c.close()  # a reset, not a FIN
        status, s = jhttp(base, "GET", f"/api/{a}/state")
        assert status == 200 and s["answered"] == 0  # still serving; nothing was recorded
    finally:
        out, err = _stop(proc)
    assert "Traceback" not in err and "Error:" not in err.replace("RecursionError", ""), err
    for line in err.strip().splitlines():  # a dropped connection is one short line
        assert line.startswith("scorekit hype serve: client") and "went away" in line, line


def test_stalled_clients_cannot_keep_a_rater_waiting_past_the_timeout(tmp_path):
    truth, tokens = make_study(tmp_path / "s")
    proc, base, port = _serve(tmp_path / "s", "--max-connections", "2", "--timeout", "1.5")
    stalled = []
    try:
        for i in range(8):  # four times as many stalled connections as the server has workers
            c = socket.create_connection(("127.0.0.1", port), timeout=10)
            c.sendall(post(tokens[0], b'{"image": "', length=100) if i % 2 else b"GET /api/")
            stalled.append(c)
        t0 = time.monotonic()
        status, s = jhttp(base, "GET", f"/api/{tokens[1]}/state")
        waited = time.monotonic() - t0
        assert status == 200 and s["phase"] == "tutorial"
        assert waited < 1.5 + 1.0, waited  # within the timeout (and a margin for a loaded machine)
        for c in stalled:  # each stalled connection got its 408 and was closed
            got = b""
            while chunk := c.recv(4096):
                got += chunk
            assert got.startswith(b"HTTP/1.0 408") and b'"error"' in got, got[:100]
    finally:
        for c in stalled:
            c.close()
        _, err = _stop(proc)
    assert "Traceback" not in err


def test_create_balances_the_pool_and_serve_says_what_its_counts_mean(tmp_path, capsys):
    import numpy as np

    from scorekit.cli import main

    samples = (np.random.RandomState(0).rand(30, 8, 8, 1) * 255).astype(np.uint8)
    np.savez(tmp_path / "samples.npz", samples=samples)
    study = tmp_path / "study"
    assert main(["hype", "create", str(tmp_path / "samples.npz"), "--data", "digits", "--out", str(study),
                 "--n-fake", "20", "--per-rater", "6", "--tutorial", "4", "--raters", "2"]) == 0
    assert "20 fakes and 20 reals" in capsys.readouterr().out  # not all 1,495 training digits
    proc, base, _ = _serve(study)
    try:
        lines = [proc.stdout.readline() for _ in range(2)]
    finally:
        _stop(proc)
    assert all(line.rstrip().endswith("(not started)") for line in lines), lines
    tokens = [line.split("/r/")[1].split()[0] for line in lines]
    assert main(["hype", "raters", str(study)]) == 0
    assert capsys.readouterr().out.count("not started") == 2 and tokens


def test_serve_warns_once_about_a_study_made_before_the_blinding_fix(tmp_path):
    """A study made before ids came from `secrets` (no "blinding" in its protocol) is served with one line saying
    that its ids are predictable and how to make it again; a new study gets no such line."""
    import json

    from scorekit.hype.study import connect

    make_study(tmp_path / "new")
    make_study(tmp_path / "old")
    conn = connect(tmp_path / "old")
    proto = json.loads(conn.execute("SELECT value FROM meta WHERE key = 'protocol'").fetchone()[0])
    del proto["blinding"]
    conn.execute("UPDATE meta SET value = ? WHERE key = 'protocol'", (json.dumps(proto),))
    conn.close()
    errs = {}
    for name in ("new", "old"):
        proc, _, _ = _serve(tmp_path / name)
        errs[name] = _stop(proc)[1]
    assert "predict" not in errs["new"] and "hype create" not in errs["new"]
    lines = [line for line in errs["old"].splitlines() if "hype create" in line]
    assert len(lines) == 1 and "seed" in lines[0] and "Traceback" not in errs["old"]
