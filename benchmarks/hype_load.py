"""Load on a HYPE study server: many raters answering at once against a real `scorekit hype serve` process.

    python benchmarks/hype_load.py [--raters 50] [--duration 60] [--out benchmarks/results/hype_load.json]

Each simulated rater is a thread that does what the page does, with no pause for thought: GET its state, GET
the image, POST an answer, again, for --duration seconds (new connections each time, as the server speaks
HTTP/1.0). Reported: requests and answers per second, errors (any non-2xx status or failed connection; must
be 0), the latency of an answer (POST to its acknowledgement; p50, p99, max) and of a state request, and,
after the server is stopped, whether every acknowledged answer is in the database exactly once."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import environment, write_json  # noqa: E402
from scorekit.data import digits  # noqa: E402
from scorekit.hype.study import connect, create_study, judgments  # noqa: E402


def make_study(folder: Path, n: int, per_rater: int, raters: int) -> list[str]:
    g = torch.Generator().manual_seed(0)
    fakes = (torch.rand(n + 5, 1, 8, 8, generator=g) * 255).to(torch.uint8)
    reals = digits("train").images[:n + 5]
    create_study(folder, fakes, reals, tutorial=10, per_rater=per_rater, seed=0, n_raters=raters,
                 info={"run": "synthetic (hype_load benchmark)"}, fake_sources=[f"f{i}" for i in range(len(fakes))],
                 real_sources=[f"r{i}" for i in range(len(reals))])
    conn = connect(folder)
    tokens = [r["token"] for r in conn.execute("SELECT token FROM raters ORDER BY created")]
    conn.close()
    return tokens


def request(port: int, method: str, path: str, body: dict | None = None) -> tuple[int, bytes, float]:
    t0 = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        data = json.dumps(body).encode() if body is not None else None
        c.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        r = c.getresponse()
        return r.status, r.read(), time.perf_counter() - t0
    finally:
        c.close()


def rater(port: int, token: str, until: float, log: dict, lock: threading.Lock) -> None:
    mine = {"answers": [], "state_s": [], "answer_s": [], "errors": [], "requests": 0}
    while time.perf_counter() < until:
        try:
            status, body, dt = request(port, "GET", f"/api/{token}/state")
            mine["requests"] += 1
            mine["state_s"].append(dt)
            if status != 200:
                mine["errors"].append(f"state {status}")
                continue
            s = json.loads(body)
            if s["phase"] == "done":
                break
            status, _, _ = request(port, "GET", s["image"]["url"])
            mine["requests"] += 1
            if status != 200:
                mine["errors"].append(f"image {status}")
                continue
            value = "real" if hash((token, s["image"]["id"])) % 2 else "fake"
            status, body, dt = request(port, "POST", f"/api/{token}/answer", {"image": s["image"]["id"],
                                                                             "answer": value})
            mine["requests"] += 1
            if status != 200:
                mine["errors"].append(f"answer {status}")
                continue
            mine["answer_s"].append(dt)
            mine["answers"].append((s["image"]["id"], json.loads(body)["answer"]))
        except (OSError, http.client.HTTPException, ValueError) as e:
            mine["errors"].append(f"{e.__class__.__name__}: {e}")
    with lock:
        log[token] = mine


def percentiles(values: list[float]) -> dict[str, float]:
    v = sorted(values)
    if not v:
        return {}
    pick = lambda q: v[min(len(v) - 1, int(q * len(v)))]  # noqa: E731
    return {"p50_ms": 1000 * statistics.median(v), "p99_ms": 1000 * pick(0.99), "max_ms": 1000 * v[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raters", type=int, default=50, help="raters answering at once (default 50)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    ap.add_argument("--max-connections", type=int, help="the server's --max-connections (default: its own)")
    ap.add_argument("--out", default="benchmarks/results/hype_load.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        study = Path(tmp) / "study"
        tokens = make_study(study, n=1000, per_rater=1000, raters=args.raters)
        extra = ["--max-connections", str(args.max_connections)] if args.max_connections else []
        proc = subprocess.Popen([sys.executable, "-m", "scorekit", "hype", "serve", str(study), "--port", "0", *extra],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
        line = proc.stdout.readline()
        port = int(line.split(" on ")[1].split("/ ")[0].rsplit(":", 1)[1])
        log: dict[str, dict] = {}
        lock = threading.Lock()
        t0 = time.perf_counter()
        threads = [threading.Thread(target=rater, args=(port, tok, t0 + args.duration, log, lock)) for tok in tokens]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        proc.send_signal(signal.SIGTERM)
        _, server_log = proc.communicate(timeout=30)
        conn = connect(study)
        stored = {(r["token"], r["image_id"]): r["answer"] for r in judgments(conn)}
        n_rows = conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        conn.close()
    acked = {(tok, image): value for tok, m in log.items() for image, value in m["answers"]}
    errors = [e for m in log.values() for e in m["errors"]]
    result = {
        "environment": environment(torch.device("cpu")),
        "raters": args.raters, "duration_s": round(elapsed, 1), "server_max_connections": args.max_connections,
        "requests": sum(m["requests"] for m in log.values()), "answers_acknowledged": len(acked),
        "answers_per_s": round(len(acked) / elapsed, 1),
        "requests_per_s": round(sum(m["requests"] for m in log.values()) / elapsed, 1),
        "errors": len(errors), "error_examples": errors[:5],
        "answers_stored": n_rows, "all_acknowledged_kept": all(stored.get(k) == v for k, v in acked.items()),
        "duplicates": n_rows - len(stored),
        "answer_latency": percentiles([x for m in log.values() for x in m["answer_s"]]),
        "state_latency": percentiles([x for m in log.values() for x in m["state_s"]]),
        "server_log_lines": len(server_log.strip().splitlines()) - 0,
    }
    a, s = result["answer_latency"], result["state_latency"]
    print(f"{args.raters} raters for {elapsed:.0f} s: {result['requests']} requests ({result['requests_per_s']}/s), "
          f"{len(acked)} answers ({result['answers_per_s']}/s), {len(errors)} errors; answers kept: "
          f"{result['all_acknowledged_kept']} ({n_rows} stored, {result['duplicates']} duplicates)")
    print(f"answer latency p50 {a['p50_ms']:.1f} ms, p99 {a['p99_ms']:.1f} ms, max {a['max_ms']:.1f} ms; "
          f"state p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms")
    write_json(args.out, result)


if __name__ == "__main__":
    main()
