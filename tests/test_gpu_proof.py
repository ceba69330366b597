"""The GPU proof cannot rot: `benchmarks/gpu_proof.py --tiny` runs the same code on the CPU (tiny networks, no
compilation) and writes its JSON and its Markdown table; a section that hangs is stopped at its limit while the
others and what it measured before are kept."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_proof.py"


def _proof(out, *args, env=None):
    return subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--tiny", *args], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, capture_output=True, text=True,
                          timeout=300)


def test_the_tiny_proof_measures_every_section_on_the_cpu(tmp_path):
    done = _proof(tmp_path, "--budget", "115")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "gpu_proof.json").read_text())
    assert report["tiny"] and report["seconds"] < 120
    assert {k: v["status"] for k, v in report["status"].items()} == dict.fromkeys(
        ("env", "peak", "tests", "train", "nets", "sample"), "done")
    sec = report["sections"]
    assert sec["env"]["environment"]["torch"] and sec["peak"]["matmul"]["tflops"] > 0
    tests = sec["tests"]["pytest_cuda"]
    if sec["env"]["environment"].get("gpu") is None:  # no GPU: every CUDA test is collected and skipped
        assert tests["skipped"] > 5 and tests["passed"] == tests["failed"] == tests["errors"] == 0
    fp32 = sec["train"]["scorekit fp32"]
    assert fp32["images_per_s"] > 0 and 0 < fp32["utilisation"] < 1
    assert sec["train"]["scorekit bf16+compile"].startswith("skipped")
    if sec["env"]["environment"]["diffusers"]:
        assert sec["train"]["ratio fp32"] > 0
    assert all(v["images_per_s"] > 0 for k, v in sec["nets"].items() if k != "status")
    assert sec["sample"]["eager fp32"]["projected_50k_x_1000_steps_min"] > 0
    md = (tmp_path / "gpu_proof.md").read_text()
    assert "| fp32 |" in md and "| eager fp32 |" in md and "50k x 1000 steps" in md


def test_a_hanging_section_is_stopped_and_the_rest_is_kept(tmp_path):
    done = _proof(tmp_path, "--sections", "env,peak", "--budget", "60", env={"SCOREKIT_PROOF_STALL": "peak"})
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "gpu_proof.json").read_text())
    assert report["status"]["env"]["status"] == "done"
    assert report["status"]["peak"]["status"].startswith("stopped at its limit")
    assert report["sections"]["peak"]["matmul"]["tflops"] > 0  # measured before the hang, kept
    assert "| peak | stopped at its limit" in (tmp_path / "gpu_proof.md").read_text()


def _alive(pid: int) -> bool:
    """True for a running process (a zombie, killed but not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_stalled_pytest_and_its_children_are_killed_with_the_tests_section(tmp_path):
    """The tests section's pytest hangs (deaf to the per-test alarm) with a child of its own: the section stops it
    at its total limit and kills its whole process group, so nothing of it runs on while later sections measure.
    Before the fix only the section's own process was killed and pytest ran on."""
    pids = tmp_path / "pids"
    started = __import__("time").monotonic()
    done = _proof(tmp_path / "proof", "--sections", "tests", "--budget", "20", env={"SCOREKIT_TEST_STALL": str(pids)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert __import__("time").monotonic() - started < 60
    report = json.loads((tmp_path / "proof" / "gpu_proof.json").read_text())
    status = report["status"]["tests"]["status"]
    tests = report["sections"].get("tests", {}).get("pytest_cuda", {})
    assert status.startswith("stopped at its limit") or (status == "done" and tests["stopped"]), (status, tests)
    found = [int(p) for p in pids.read_text().split()]
    assert len(found) == 2 and not any(_alive(p) for p in found), found
