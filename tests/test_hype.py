"""HYPE_inf studies: the statistics on simulated judgments, the server over HTTP (sessions, idempotent
answers, a killed server, bad requests), the command line, and a real browser completing a study."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scorekit.cli import main
from scorekit.data import digits
from scorekit.hype.report import Judgments, bootstrap, hype_scores, markdown, summarize
from scorekit.hype.server import serve_in_thread
from scorekit.hype.study import blinding_warning, connect, create_study, judgments

# ----- statistics -----------------------------------------------------------------------------------------


def simulate(rng, n_raters=30, per_rater=40, n_images=300, fake_error=0.3, real_error=0.1, spread=0.1):
    """Judgments with known error rates: each image has its own error probability (Beta around the rate,
    so images differ in difficulty) and each rater judges per_rater images, half real and half fake."""
    fake = np.arange(n_images) < n_images // 2
    mean = np.where(fake, fake_error, real_error)
    k = mean * (1 - mean) / spread**2 - 1
    p_image = rng.beta(mean * k, (1 - mean) * k)
    rows = []
    for r in range(n_raters):
        chosen = np.concatenate([rng.choice(np.flatnonzero(fake), per_rater // 2, replace=False),
                                 rng.choice(np.flatnonzero(~fake), per_rater // 2, replace=False)])
        for i in chosen:
            rows.append((r, i, fake[i], rng.random() < p_image[i]))
    a = np.array(rows, dtype=np.int64)
    return Judgments(a[:, 0], a[:, 1], a[:, 2].astype(bool), a[:, 3].astype(bool))


def test_bootstrap_intervals_cover_the_true_error_rates_at_about_their_level():
    rng = np.random.default_rng(0)
    truth = {"hype": 20.0, "fakes_error": 30.0, "reals_error": 10.0}
    covered = Counter()
    sims = 40
    for s in range(sims):
        j = simulate(rng)
        ci = bootstrap(j, n_boot=400, seed=s)["ci"]
        for k, v in truth.items():
            covered[k] += ci[k][0] <= v <= ci[k][1]
    for k in truth:  # 95% intervals: 38 of 40 expected; fewer than 34 would happen with probability < 1%
        assert covered[k] >= 34, (k, covered[k])
    j = simulate(np.random.default_rng(1), n_raters=60, per_rater=100)
    s = hype_scores(j)
    assert abs(s["fakes_error"] - 30) < 3 and abs(s["reals_error"] - 10) < 2 and abs(s["hype"] - 20) < 2


def test_a_rater_answering_at_random_scores_about_50_percent():
    rng = np.random.default_rng(2)
    n = 4000
    j = Judgments(np.zeros(n, np.int64), np.arange(n), np.arange(n) % 2 == 0, rng.random(n) < 0.5)
    s = hype_scores(j)
    assert abs(s["hype"] - 50) < 2.5 and abs(s["fakes_error"] - 50) < 3.5 and abs(s["reals_error"] - 50) < 3.5


def _rows(token, tutorial_right, test):
    rows = [{"token": token, "label": token, "image_id": f"t{i}", "kind": "real", "phase": "tutorial",
             "correct": int(i < tutorial_right)} for i in range(4)]
    rows += [{"token": token, "label": token, "image_id": img, "kind": kind, "phase": "test", "correct": int(c)}
             for img, kind, c in test]
    return rows


def test_summary_excludes_raters_below_the_tutorial_threshold_and_counts_everything():
    good = _rows("a", 4, [("x", "fake", 0), ("y", "real", 1)])
    bad = _rows("b", 1, [("x", "fake", 1), ("y", "real", 0)])
    rep = summarize(good + bad, threshold=0.5, n_boot=200)
    assert rep["excluded_raters"] == ["b"] and rep["raters"] == 1 and rep["judgments"] == 2
    assert rep["hype"] == 50.0 and rep["fakes_error"] == 100.0 and rep["reals_error"] == 0.0
    assert {p["image"]: p["judged"] for p in rep["per_image"]} == {"x": 1, "y": 1}
    rep0 = summarize(good + bad, threshold=0.0, n_boot=200)
    assert rep0["judgments"] == 4 and rep0["hype"] == 50.0
    table = markdown(rep0, "digits")
    assert table.splitlines()[0].startswith("| Model | HYPE∞ (%) | Fakes Error (%) | Reals Error (%) | Std. | 95% CI")
    assert "| digits | 50.00 | 50.00 | 50.00 |" in table


# ----- a study on disk --------------------------------------------------------------------------------------

def make_study(folder, n=10, tutorial=2, per_rater=4, raters=3, seed=0):
    """n fakes (noise) and n reals (digits) plus the tutorial halves."""
    g = torch.Generator().manual_seed(seed)
    fakes = (torch.rand(n + tutorial // 2, 1, 8, 8, generator=g) * 255).to(torch.uint8)
    reals = digits("test").images[:n + tutorial // 2]
    create_study(folder, fakes, reals, tutorial=tutorial, per_rater=per_rater, seed=seed, n_raters=raters,
                 info={"run": "synthetic"}, fake_sources=[f"f{i}" for i in range(len(fakes))],
                 real_sources=[f"r{i}" for i in range(len(reals))])
    conn = connect(folder)
    truth = {r["id"]: r["kind"] for r in conn.execute("SELECT id, kind FROM images")}
    tokens = [r["token"] for r in conn.execute("SELECT token FROM raters ORDER BY created")]
    conn.close()
    return truth, tokens


def test_study_files_do_not_reveal_real_or_fake(tmp_path):
    truth, tokens = make_study(tmp_path / "s")
    names = sorted(p.name for p in (tmp_path / "s" / "images").iterdir())
    assert len(names) == len(truth) == 22 and len(tokens) == 3
    assert all(len(n) == len("0123456789abcdef.png") for n in names)  # opaque ids, one format
    assert sorted(truth) == sorted(n[:-4] for n in names)
    proto = json.loads((tmp_path / "s" / "protocol.json").read_text())
    assert (proto["n_fake"], proto["n_real"], proto["tutorial"], proto["per_rater"]) == (10, 10, 2, 4)
    assert connect(tmp_path / "s").execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(Exception, match="never overwritten"):
        make_study(tmp_path / "s")


def _seeded_kinds(seed, n_fake_total, n_real_total):
    """The attack on studies made before the blinding of format 2: rebuild the id -> kind map from the seed and
    the counts (the items listed fakes first, shuffled and given ids by one ``random.Random(seed)``)."""
    rng = random.Random(seed)
    order = list(range(n_fake_total + n_real_total))
    rng.shuffle(order)
    ids = []
    while len(ids) < len(order):
        candidate = f"{rng.getrandbits(64):016x}"
        if candidate not in ids:
            ids.append(candidate)
    return {i: "fake" if k < n_fake_total else "real" for i, k in zip(ids, order)}


def test_the_seed_and_the_counts_reveal_no_kind(tmp_path):
    """Before the fix the replay rebuilt 22 of 22 kinds of this study."""
    truth_a, _ = make_study(tmp_path / "a", seed=0)
    truth_b, _ = make_study(tmp_path / "b", seed=0)
    assert not set(truth_a) & set(truth_b)  # same seed, same counts: no id in common
    replayed = _seeded_kinds(0, 11, 11)
    assert not set(replayed) & set(truth_a)  # the replay names none of the study's ids, so recovers no kind
    # every file of the study is the same kind of PNG and the same number of bytes, real or fake
    files = sorted((tmp_path / "a" / "images").iterdir())
    assert len({f.stat().st_size for f in files}) == 1
    for f in files:
        with Image.open(f) as img:
            assert (img.mode, img.size, img.info) == ("L", (8, 8), {})
    conn = connect(tmp_path / "a")
    assert json.loads(conn.execute("SELECT value FROM meta").fetchone()[0])["blinding"] == 2
    assert blinding_warning(conn, tmp_path / "a") is None
    conn.execute("UPDATE meta SET value = ? WHERE key = 'protocol'", (json.dumps({"per_rater": 4}),))
    assert "make it again with `scorekit hype create`" in blinding_warning(conn, tmp_path / "a")
    conn.close()


def test_a_raters_order_does_not_follow_from_the_seed_and_their_token(tmp_path):
    """Before the fix a rater's order came from random.Random(f"{seed}:{token}") applied to the reals followed by
    the fakes; knowing the seed (default 0) and their token, a rater could undo the shuffle (20 of 20 kinds)."""
    truth, tokens = make_study(tmp_path / "s", n=20, per_rater=20, raters=1)
    server, base = serve_in_thread(tmp_path / "s")
    try:
        token = tokens[0]
        complete(base, token, truth)
    finally:
        server.shutdown()
    conn = connect(tmp_path / "s")
    test_ids = [r[0] for r in conn.execute("SELECT image_id FROM assignments WHERE token = ? AND phase = 'test' "
                                           "ORDER BY position", (token,))]
    n_test_images = conn.execute("SELECT COUNT(*) FROM images WHERE phase = 'test'").fetchone()[0]
    n_tutorial = conn.execute("SELECT COUNT(*) FROM images WHERE phase = 'tutorial'").fetchone()[0]
    conn.close()
    rng = random.Random(f"0:{token}")
    rng.shuffle(list(range(n_tutorial)))
    for _ in range(n_test_images):  # one tie-break draw per test image
        rng.random()
    order = list(range(len(test_ids)))
    rng.shuffle(order)  # position j held item order[j]; items 0 .. per_rater/2 - 1 were the reals
    guessed = ["real" if k < len(test_ids) // 2 else "fake" for k in order]
    hits = sum(g == truth[i] for g, i in zip(guessed, test_ids))
    assert hits < len(test_ids)  # now chance (all 20 right with probability 1 / 184,756)


# ----- the server over HTTP ---------------------------------------------------------------------------------

def http(base, method, path, body=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def jhttp(base, method, path, body=None, raw=None):
    status, data = http(base, method, path, body, raw)
    return status, json.loads(data)


def complete(base, token, truth, answer=lambda kind: "real", stop=None):
    """Answer until done (or ``stop`` answers); returns the answers given, by image id."""
    given = {}
    while True:
        status, s = jhttp(base, "GET", f"/api/{token}/state")
        assert status == 200
        if s["phase"] == "done" or (stop is not None and len(given) >= stop):
            return given
        image = s["image"]["id"]
        assert http(base, "GET", s["image"]["url"])[0] == 200
        status, res = jhttp(base, "POST", f"/api/{token}/answer", {"image": image, "answer": answer(truth[image])})
        assert status == 200 and not res["duplicate"]
        given[image] = res["answer"]
        if s["phase"] == "tutorial":
            assert res["truth"] == truth[image] and res["correct"] == (res["answer"] == truth[image])
        else:
            assert "truth" not in res and "correct" not in res  # no feedback in the study itself


def test_a_full_session_balanced_assignments_and_idempotent_answers(tmp_path):
    truth, tokens = make_study(tmp_path / "s", n=10, per_rater=10, raters=6)
    server, base = serve_in_thread(tmp_path / "s")
    try:
        wrong = {"real": "fake", "fake": "real"}
        for token in tokens:
            complete(base, token, truth, answer=lambda kind: wrong[kind] if hash(kind) % 3 else kind)
        conn = connect(tmp_path / "s")
        rows = judgments(conn)
        per_image = Counter(r["image_id"] for r in rows if r["phase"] == "test")
        assert set(per_image.values()) == {3}  # 6 raters x 10 images over 20 test images: 3 each
        for token in tokens:
            mine = [r for r in rows if r["token"] == token]
            assert Counter(r["kind"] for r in mine if r["phase"] == "test") == {"real": 5, "fake": 5}
            assert sum(r["phase"] == "tutorial" for r in mine) == 2
        # a retry of an answer is stored once, and the first answer stands
        token, image = rows[0]["token"], rows[0]["image_id"]
        for value in (rows[0]["answer"], wrong[rows[0]["answer"]]):
            status, res = jhttp(base, "POST", f"/api/{token}/answer", {"image": image, "answer": value})
            assert status == 200 and res["duplicate"] and res["answer"] == rows[0]["answer"]
        assert len(judgments(conn)) == len(rows) == 6 * 12
        conn.close()
    finally:
        server.shutdown()


def test_bad_requests_get_4xx_json_errors(tmp_path):
    truth, tokens = make_study(tmp_path / "s")
    server, base = serve_in_thread(tmp_path / "s")
    try:
        a, b = tokens[:2]
        _, s = jhttp(base, "GET", f"/api/{a}/state")
        current = s["image"]["id"]
        jhttp(base, "GET", f"/api/{b}/state")  # b's assignment takes images too
        conn = connect(tmp_path / "s")
        mine = {r[0] for r in conn.execute("SELECT image_id FROM assignments WHERE token = ?", (a,))}
        later = conn.execute("SELECT image_id FROM assignments WHERE token = ? AND position = 3", (a,)).fetchone()[0]
        not_mine = next(i for i in truth if i not in mine)
        conn.close()
        cases = [
            ("GET", "/api/nosuchtoken123/state", None, None, 404),
            ("GET", "/r/nosuchtoken123", None, None, 404),
            ("POST", "/api/nosuchtoken123/answer", {"image": current, "answer": "real"}, None, 404),
            ("POST", f"/api/{a}/answer", {"image": "0" * 16, "answer": "real"}, None, 404),
            ("POST", f"/api/{a}/answer", {"image": "not-an-id", "answer": "real"}, None, 404),
            ("POST", f"/api/{a}/answer", {"image": current, "answer": "maybe"}, None, 400),
            ("POST", f"/api/{a}/answer", {"image": current}, None, 400),
            ("POST", f"/api/{a}/answer", ["image", current], None, 400),
            ("POST", f"/api/{a}/answer", None, b"{not json", 400),
            ("POST", f"/api/{a}/answer", None, b"x" * 5000, 413),
            ("POST", f"/api/{a}/answer", {"image": not_mine, "answer": "real"}, None, 403),
            ("POST", f"/api/{a}/answer", {"image": later, "answer": "real"}, None, 409),
            ("GET", f"/api/{a}/image/{not_mine}.png", None, None, 403),
            ("GET", f"/api/{a}/image/{later}.png", None, None, 409),
            ("GET", "/etc/passwd", None, None, 404),
            ("GET", "/static/../study.sqlite", None, None, 404),
            ("DELETE", f"/r/{a}", None, None, 405),
            ("POST", "/r/x", {"a": 1}, None, 404),
        ]
        for method, path, body, raw, expected in cases:
            status, data = http(base, method, path, body, raw)
            assert status == expected, (method, path, status, data)
            if status >= 400:
                assert "error" in json.loads(data) and b"Traceback" not in data
        req = urllib.request.Request(base + f"/api/{a}/answer", data=None, method="POST")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert 400 <= e.value.code < 500
        assert jhttp(base, "GET", f"/api/{a}/state")[1]["answered"] == 0  # nothing was recorded
    finally:
        server.shutdown()


def _start(study, port=0):
    proc = subprocess.Popen([sys.executable, "-m", "scorekit", "hype", "serve", str(study), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("serving"), line + proc.stderr.read()
    return proc, line.split(" on ")[1].split("/ ")[0]


def test_a_killed_server_loses_no_acknowledged_answer_and_the_rater_continues(tmp_path):
    truth, tokens = make_study(tmp_path / "s", per_rater=10)
    proc, base = _start(tmp_path / "s")
    try:
        given = complete(base, tokens[0], truth, stop=5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc, base = _start(tmp_path / "s")
        _, s = jhttp(base, "GET", f"/api/{tokens[0]}/state")
        assert s["answered"] == 5 and s["phase"] == "test" and s["position"] == 3  # 2 tutorial + 3 test done
        conn = connect(tmp_path / "s")
        assert {r["image_id"]: r["answer"] for r in judgments(conn)} == given
        conn.close()
        given.update(complete(base, tokens[0], truth))
        assert len(given) == 12
    finally:
        proc.kill()
        proc.wait(10)


# ----- the command line -------------------------------------------------------------------------------------

def test_create_report_and_export_through_the_cli(tmp_path, capsys):
    samples = (np.random.RandomState(0).rand(30, 8, 8, 1) * 255).astype(np.uint8)
    np.savez(tmp_path / "samples.npz", samples=samples)
    study = tmp_path / "study"
    assert main(["hype", "create", str(tmp_path / "samples.npz"), "--data", "digits", "--out", str(study),
                 "--n-fake", "20", "--n-real", "20", "--per-rater", "6", "--tutorial", "4", "--raters", "2"]) == 0
    assert "study with 20 fakes and 20 reals" in capsys.readouterr().out
    assert main(["hype", "create", str(tmp_path / "samples.npz"), "--data", "digits", "--out", str(study)]) == 2
    assert "never overwritten" in capsys.readouterr().err
    assert main(["hype", "create", str(tmp_path / "samples.npz"), "--data", "digits", "--out", str(tmp_path / "x"),
                 "--n-fake", "29"]) == 2
    assert "holds 30 samples" in capsys.readouterr().err and not (tmp_path / "x").exists()
    conn = connect(study)
    truth = {r["id"]: r["kind"] for r in conn.execute("SELECT id, kind FROM images")}
    tokens = [r["token"] for r in conn.execute("SELECT token FROM raters")]
    conn.close()
    server, base = serve_in_thread(study)
    try:
        for token in tokens:  # a perfect tutorial, then every image called real: fakes error 100%, reals 0%
            complete(base, token, truth, answer=lambda kind: "real")
    finally:
        server.shutdown()
    assert main(["hype", "report", str(study), "--json", "--bootstrap", "200", "--threshold", "0"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["report"]["judgments"] == 12 and rep["report"]["hype"] == 50.0
    assert rep["report"]["fakes_error"] == 100.0 and rep["report"]["reals_error"] == 0.0
    assert rep["protocol"]["per_rater"] == 6 and rep["protocol"]["samples"].endswith("samples.npz")
    assert main(["hype", "report", str(study), "--bootstrap", "200", "--threshold", "0.9"]) == 0
    assert "2 excluded" in capsys.readouterr().out  # tutorial accuracy 0.5 < 0.9
    assert (study / "report.md").read_text().startswith("| Model | HYPE∞")
    assert main(["hype", "export", str(study), "--csv", "--out", str(tmp_path / "a.csv")]) == 0
    assert "20 answers ->" in capsys.readouterr().out
    lines = (tmp_path / "a.csv").read_text().splitlines()
    assert lines[0].startswith("label,token,image_id,kind,phase") and len(lines) == 1 + 2 * (4 + 6)
    assert main(["hype", "raters", str(study), "--add", "1"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3


# ----- a real browser ---------------------------------------------------------------------------------------

def _browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        chromium = None
    if not (chromium and driver):
        message = ("needs a browser: apt-get install chromium chromium-driver, and pip install selenium "
                   "(or pip install -e '.[dev]')")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=700,720"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts)


def test_a_browser_completes_a_study_with_the_keyboard(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    truth, tokens = make_study(tmp_path / "s", n=6, tutorial=2, per_rater=4, raters=1)
    server, base = serve_in_thread(tmp_path / "s")
    artifacts = Path(os.environ.get("SCOREKIT_TEST_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    browser = _browser()
    try:
        wait = WebDriverWait(browser, 15)
        browser.get(f"{base}/r/{tokens[0]}")
        wait.until(ec.visibility_of_element_located((By.ID, "intro")))
        intro = browser.find_element(By.ID, "progress").text  # the tutorial has not started yet
        assert intro == "Ahead: a tutorial of 2 images, then 4 images", intro
        browser.save_screenshot(str(artifacts / "hype_intro.png"))
        body = browser.find_element(By.TAG_NAME, "body")
        body.send_keys(" ")
        pressed = []

        def image_id():
            wait.until(lambda b: b.execute_script(
                "const i = document.getElementById('image'); return i.complete && i.naturalWidth > 0"))
            return browser.find_element(By.ID, "image").get_attribute("src").rsplit("/", 1)[1][:-4]

        for i in range(2):  # the tutorial: answer, read the feedback, continue
            wait.until(ec.visibility_of_element_located((By.ID, "image")))
            img = image_id()
            key = "f" if i == 0 else "j"
            body.send_keys(key)
            wait.until(ec.visibility_of_element_located((By.ID, "feedback")))
            feedback = browser.find_element(By.ID, "feedback-text").text
            assert f"this image is {truth[img]}" in feedback
            pressed.append((img, {"f": "fake", "j": "real"}[key]))
            body.send_keys(" ")
        wait.until(ec.visibility_of_element_located((By.ID, "between")))
        assert "Tutorial finished" in browser.find_element(By.ID, "between-text").text
        body.send_keys(" ")
        for i in range(4):  # the study itself: no feedback, straight to the next image
            wait.until(ec.text_to_be_present_in_element((By.ID, "progress"), f"Image {i + 1} of 4"))
            img = image_id()
            if i == 1:
                browser.save_screenshot(str(artifacts / "hype_page.png"))
            key = "jfjf"[i]
            body.send_keys(key)
            pressed.append((img, {"f": "fake", "j": "real"}[key]))
        wait.until(ec.visibility_of_element_located((By.ID, "done")))
    finally:
        browser.quit()
        server.shutdown()
    conn = connect(tmp_path / "s")
    rows = judgments(conn)
    conn.close()
    assert [(r["image_id"], r["answer"]) for r in rows] == pressed
    rep = summarize(rows, threshold=0.0, n_boot=200)
    assert rep["judgments"] == 4
    wrong = sum((a == "real") != (truth[i] == "real") for i, a in pressed[2:])
    assert rep["hype"] == pytest.approx(100 * wrong / 4)
    assert (artifacts / "hype_page.png").stat().st_size > 5000
