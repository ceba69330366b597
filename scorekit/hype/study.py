"""A HYPE_inf study on disk: the images under opaque ids, and a SQLite database (WAL) that records the
protocol, which image is real or fake, the rater tokens, each rater's assignment and every answer.

HYPE_inf (Zhou et al., NeurIPS 2019) shows raters a balanced, shuffled mix of real and generated images
with no time limit, after a short tutorial with feedback; the score is the percentage of wrong judgments.
Nothing a rater can see says which image is which (the blinding, format 2): ids come from ``secrets`` (never
from the study's seed, which decides only which reals are drawn and how fakes are sampled), the files are
written in an order shuffled by the operating system's random source, and every image is the same kind of PNG
(one mode, no metadata, deflate without compression), so every file of a study has the same byte size. Only
the database knows the kind. Studies made before format 2 drew their ids from the seed: ``hype serve`` warns.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import torch

from ..errors import ScorekitError
from ..images import atomic_write_bytes, png_bytes

DB_NAME = "study.sqlite"
BLINDING = 2  # the protocol's "blinding": 2 = ids from secrets, equal-size PNGs; absent = seeded ids (predictable)
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('real', 'fake')),
    phase TEXT NOT NULL CHECK (phase IN ('tutorial', 'test')),
    source TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS raters (token TEXT PRIMARY KEY, label TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS assignments (
    token TEXT NOT NULL REFERENCES raters (token),
    position INTEGER NOT NULL,
    image_id TEXT NOT NULL REFERENCES images (id),
    phase TEXT NOT NULL,
    PRIMARY KEY (token, position),
    UNIQUE (token, image_id)
);
CREATE TABLE IF NOT EXISTS answers (
    token TEXT NOT NULL,
    image_id TEXT NOT NULL,
    answer TEXT NOT NULL CHECK (answer IN ('real', 'fake')),
    correct INTEGER NOT NULL,
    answered_at REAL NOT NULL,
    PRIMARY KEY (token, image_id),
    FOREIGN KEY (token, image_id) REFERENCES assignments (token, image_id)
);
"""


def connect(folder: str | Path) -> sqlite3.Connection:
    """The study's database: autocommit (writes open their own BEGIN IMMEDIATE), WAL, fsync on commit."""
    path = Path(folder) / DB_NAME
    if not path.is_file():
        raise ScorekitError(f"{folder}: not a HYPE study (no {DB_NAME}; make one with `scorekit hype create`)")
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def protocol(conn: sqlite3.Connection) -> dict:
    row = conn.execute("SELECT value FROM meta WHERE key = 'protocol'").fetchone()
    return json.loads(row["value"]) if row else {}


_WRITER = threading.Lock()


@contextlib.contextmanager
def write_transaction(conn: sqlite3.Connection):
    """One write transaction (BEGIN IMMEDIATE ... COMMIT, rolled back on any error). The writers of this process
    take turns on a lock first: SQLite's own busy handler, which other processes still meet, waits by sleeping
    in steps of up to 100 ms, which under many concurrent raters costs seconds."""
    with _WRITER:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def add_raters(conn: sqlite3.Connection, n: int) -> list[str]:
    """``n`` new rater tokens (unguessable: from ``secrets``, never from the study's seed)."""
    with write_transaction(conn):
        start = conn.execute("SELECT COUNT(*) FROM raters").fetchone()[0]
        tokens = [secrets.token_urlsafe(12) for _ in range(n)]
        conn.executemany("INSERT INTO raters (token, label, created) VALUES (?, ?, ?)",
                         [(t, f"rater {start + i + 1}", time.time()) for i, t in enumerate(tokens)])
    return tokens


def raters(conn: sqlite3.Connection) -> list[dict]:
    """Every rater with the number of answers given and assigned."""
    rows = conn.execute("""
        SELECT r.token, r.label,
               (SELECT COUNT(*) FROM answers a WHERE a.token = r.token) AS answered,
               (SELECT COUNT(*) FROM assignments s WHERE s.token = r.token) AS assigned
        FROM raters r ORDER BY r.created, r.label""").fetchall()
    return [dict(r) for r in rows]


def create_study(folder: str | Path, fakes: torch.Tensor, reals: torch.Tensor, *, tutorial: int, per_rater: int,
                 seed: int, n_raters: int, info: dict, fake_sources: list[str], real_sources: list[str]) -> Path:
    """Write a study: ``fakes`` and ``reals`` are uint8 (N, C, H, W); the last ``tutorial // 2`` of each form
    the tutorial, the rest the test pool. Built in a temporary folder and renamed into place, so a study
    folder is either complete or absent."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ScorekitError(f"--out {folder}: exists and is not an empty folder (a study is never overwritten)")
    if fakes.dtype != torch.uint8 or reals.dtype != torch.uint8 or fakes.shape[1:] != reals.shape[1:]:
        raise ScorekitError(f"hype study: fakes ({fakes.dtype}, {tuple(fakes.shape[1:])}) and reals ({reals.dtype}, "
                            f"{tuple(reals.shape[1:])}) must both be uint8 images of one shape")
    half_t = tutorial // 2
    n_fake, n_real = len(fakes) - half_t, len(reals) - half_t
    items = ([("fake", "test" if i < n_fake else "tutorial", fake_sources[i], fakes[i]) for i in range(len(fakes))]
             + [("real", "test" if i < n_real else "tutorial", real_sources[i], reals[i]) for i in range(len(reals))])
    random.SystemRandom().shuffle(items)  # the files' order (and times) say nothing about their kind
    ids: list[str] = []
    while len(ids) < len(items):  # unguessable, like the rater tokens; nothing to do with ``seed``
        candidate = secrets.token_hex(8)
        if candidate not in ids:
            ids.append(candidate)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "images").mkdir(parents=True)
        conn = sqlite3.connect(tmp / DB_NAME, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA)
        conn.execute("BEGIN")
        for image_id, (kind, phase, source, img) in zip(ids, items):
            atomic_write_bytes(tmp / "images" / f"{image_id}.png", png_bytes(img.permute(1, 2, 0).numpy(), stored=True))
            conn.execute("INSERT INTO images (id, kind, phase, source) VALUES (?, ?, ?, ?)",
                         (image_id, kind, phase, source))
        proto = {**info, "n_fake": n_fake, "n_real": n_real, "tutorial": tutorial, "per_rater": per_rater,
                 "seed": seed, "blinding": BLINDING, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                 "image_shape": list(fakes.shape[1:])}
        conn.execute("INSERT INTO meta (key, value) VALUES ('protocol', ?)", (json.dumps(proto),))
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        atomic_write_bytes(tmp / "protocol.json", (json.dumps(proto, indent=2) + "\n").encode())
        if folder.exists():
            folder.rmdir()
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if n_raters:
        conn = connect(folder)
        add_raters(conn, n_raters)
        conn.close()
    return folder


def blinding_warning(conn: sqlite3.Connection, folder: str | Path) -> str | None:
    """One line if the study was made before the blinding of format 2 (its ids follow from its seed)."""
    if protocol(conn).get("blinding", 1) >= BLINDING:
        return None
    return (f"warning: {folder} was made before scorekit drew image ids from `secrets`: its ids are predictable "
            f"from its seed, so a rater who knows the seed can tell real from fake; make it again with "
            f"`scorekit hype create` (same options, a new --out) and give raters the new links")


def judgments(conn: sqlite3.Connection) -> list[dict]:
    """Every answer with its rater, image, kind and phase (what the report and the CSV export read)."""
    rows = conn.execute("""
        SELECT a.token, r.label, a.image_id, i.kind, i.phase, i.source, s.position, a.answer, a.correct,
               a.answered_at
        FROM answers a JOIN images i ON i.id = a.image_id JOIN raters r ON r.token = a.token
        JOIN assignments s ON s.token = a.token AND s.image_id = a.image_id
        ORDER BY r.created, r.label, s.position""").fetchall()
    return [dict(r) for r in rows]
