"""One rater's session, in the database: the assignment (made on the first visit), where the rater is, and
recording an answer exactly once. No HTTP here: the server maps these results and errors to responses.

Assignment: every rater sees all tutorial images (with feedback), then ``per_rater`` test images, half real
and half fake, in an order shuffled for that rater. The test images are those judged by the fewest raters
so far (ties broken at random), so every image is judged by about the same number of raters.
"""

from __future__ import annotations

import random
import sqlite3
import time

from .study import protocol, write_transaction


class SessionError(Exception):
    """A request the session refuses; ``status`` is the HTTP status the server answers with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _rater(conn: sqlite3.Connection, token: str) -> None:
    if conn.execute("SELECT 1 FROM raters WHERE token = ?", (token,)).fetchone() is None:
        raise SessionError(404, "unknown rater token")


def _assign(conn: sqlite3.Connection, token: str) -> None:
    """Give ``token`` its tutorial and test images, once (inside one write transaction)."""
    proto = protocol(conn)
    with write_transaction(conn):
        if conn.execute("SELECT 1 FROM assignments WHERE token = ? LIMIT 1", (token,)).fetchone() is None:
            rng = random.SystemRandom()  # never the study's seed: a rater knows their token and maybe the seed
            tutorial = [r["id"] for r in conn.execute("SELECT id FROM images WHERE phase = 'tutorial' ORDER BY id")]
            rng.shuffle(tutorial)
            counts = conn.execute("""
                SELECT i.id, i.kind, COUNT(s.token) AS n FROM images i
                LEFT JOIN assignments s ON s.image_id = i.id
                WHERE i.phase = 'test' GROUP BY i.id""").fetchall()
            test = []
            for kind in ("real", "fake"):
                pool = [(r["n"], rng.random(), r["id"]) for r in counts if r["kind"] == kind]
                test += [image_id for _, _, image_id in sorted(pool)[:proto["per_rater"] // 2]]
            rng.shuffle(test)
            rows = [(token, i, image_id, "tutorial") for i, image_id in enumerate(tutorial)]
            rows += [(token, len(tutorial) + i, image_id, "test") for i, image_id in enumerate(test)]
            conn.executemany("INSERT INTO assignments (token, position, image_id, phase) VALUES (?, ?, ?, ?)", rows)


def state(conn: sqlite3.Connection, token: str) -> dict:
    """Where the rater is: the phase, the image to judge now (its opaque id) and the progress."""
    _rater(conn, token)
    if conn.execute("SELECT 1 FROM assignments WHERE token = ? LIMIT 1", (token,)).fetchone() is None:
        _assign(conn, token)
    counts = {r["phase"]: r for r in conn.execute("""
        SELECT s.phase, COUNT(*) AS total, COUNT(a.token) AS answered, COALESCE(SUM(a.correct), 0) AS correct
        FROM assignments s LEFT JOIN answers a ON a.token = s.token AND a.image_id = s.image_id
        WHERE s.token = ? GROUP BY s.phase""", (token,))}
    nxt = conn.execute("""
        SELECT s.position, s.image_id, s.phase FROM assignments s
        LEFT JOIN answers a ON a.token = s.token AND a.image_id = s.image_id
        WHERE s.token = ? AND a.token IS NULL ORDER BY s.position LIMIT 1""", (token,)).fetchone()
    tut, test = counts.get("tutorial"), counts.get("test")
    n_tutorial = tut["total"] if tut else 0
    out = {"tutorial_total": n_tutorial, "tutorial_correct": tut["correct"] if tut else 0,
           "test_total": test["total"] if test else 0,
           "answered": sum(r["answered"] for r in counts.values()), "total": sum(r["total"] for r in counts.values())}
    if nxt is None:
        return {**out, "phase": "done", "image": None}
    in_phase = nxt["position"] - (0 if nxt["phase"] == "tutorial" else n_tutorial)
    return {**out, "phase": nxt["phase"], "position": in_phase,
            "image": {"id": nxt["image_id"], "url": f"/api/{token}/image/{nxt['image_id']}.png"}}


def shown(conn: sqlite3.Connection, token: str, image_id: str) -> sqlite3.Row:
    """The assignment of ``image_id`` to ``token`` if the rater has reached it (answered or current)."""
    _rater(conn, token)
    row = conn.execute("""
        SELECT s.position, s.phase, i.kind FROM assignments s JOIN images i ON i.id = s.image_id
        WHERE s.token = ? AND s.image_id = ?""", (token, image_id)).fetchone()
    if row is None:
        if conn.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone() is None:
            raise SessionError(404, "unknown image")
        raise SessionError(403, "this image is not assigned to this rater")
    first_open = conn.execute("""
        SELECT MIN(s.position) FROM assignments s LEFT JOIN answers a ON a.token = s.token AND a.image_id = s.image_id
        WHERE s.token = ? AND a.token IS NULL""", (token,)).fetchone()[0]
    if first_open is not None and row["position"] > first_open:
        raise SessionError(409, "this image has not been shown to this rater yet")
    return row


def answer(conn: sqlite3.Connection, token: str, image_id: str, value: str) -> dict:
    """Record the rater's answer ('real' or 'fake') to an image shown to them, committed before returning.
    An answer sent again (a retry, a double click, the back button) is stored once: the first one counts.
    Returns whether it was a duplicate, the stored answer, its correctness (given in the tutorial only)
    and the rater's new state."""
    if value not in ("real", "fake"):
        raise SessionError(400, "answer must be 'real' or 'fake'")
    row = shown(conn, token, image_id)
    correct = int(value == row["kind"])
    with write_transaction(conn):
        cur = conn.execute("INSERT OR IGNORE INTO answers (token, image_id, answer, correct, answered_at) "
                           "VALUES (?, ?, ?, ?, ?)", (token, image_id, value, correct, time.time()))
    stored = conn.execute("SELECT answer, correct FROM answers WHERE token = ? AND image_id = ?",
                          (token, image_id)).fetchone()
    out = {"duplicate": cur.rowcount == 0, "answer": stored["answer"], "state": state(conn, token)}
    if row["phase"] == "tutorial":
        out.update(correct=bool(stored["correct"]), truth=row["kind"])
    return out
