"""The GPU proof: everything a short session on one GPU should measure, in one command, in about 8 minutes.

    PYTHONPATH=. python3 benchmarks/gpu_proof.py --out DIR [--budget 480] [--tiny]

Runs from a source checkout with no install, on the machine's own torch (>= 2.4). Each section runs in its own
process group (session) with its own time limit: at the limit the whole group is killed, children included (the
tests section's pytest has its own total limit below the section's and SCOREKIT_TEST_TIMEOUT per test), so a hang
or a CUDA error ends that section and nothing of it runs on while later sections measure. Each writes its results
as soon as they exist; after every section DIR/gpu_proof.json and DIR/gpu_proof.md (a table for BENCHMARKS.md) are
rewritten, so a kill at any point keeps what was measured. Sections, in order:

  env       GPU, driver, torch, CUDA, cuDNN
  peak      the bf16 matmul rate measured now (8192^3), the denominator of every utilisation figure
  tests     `pytest -m cuda` (the CUDA variants of tests/test_cuda.py and friends), each test time-boxed
  train     DDPM CIFAR-10 U-Net (35.7M) at batch 128: fp32, bf16, bf16 + torch.compile; diffusers' UNet2DModel of
            the same configuration in the same settings when diffusers imports (else it says so); images/s,
            peak memory, utilisation against the measured peak (3x the forward FLOPs per image)
  nets      NCSNv2 CIFAR-10 (29.7M) and the 256x256 DDPM U-Net (114M) at batch 64, bf16
  sample    the DDPM CIFAR-10 ancestral sampler at batch 1024: eager fp32, bf16, bf16 + CUDA graphs
            (torch.compile mode="reduce-overhead"); projected time of 50,000 samples x 1000 steps

--tiny runs the same code on the CPU with the digits networks, tiny batches and no compilation, in under two
minutes (the test suite runs it, so this script cannot rot). Targets (BENCHMARKS.md, "GPU"): DDPM CIFAR-10 training
>= 5,000 images/s on one H100-class GPU and >= 1.3x diffusers in the same run; 50,000 x 1000-step samples projected
under 30 minutes.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from _gpu_report import markdown  # noqa: E402

SECTIONS = {"env": 20, "peak": 20, "tests": 120, "train": 170, "nets": 50, "sample": 100}  # seconds each (480)
# --tiny's limits: half of those, but the nets section keeps its 50 s (it imports diffusers and builds four networks:
# 25 s was once too short on 2 loaded cores while the test suite ran on two workers)
TINY_SECTIONS = {**{k: v / 2 for k, v in SECTIONS.items()}, "nets": 50}
# (preset, overrides): --tiny's digits U-Net uses 8 GroupNorm groups everywhere so that diffusers can build it too
TINY = {"train": ("ddpm-digits", ["model.norm_groups=8"]), "ncsn": ("ncsnv2-digits", []), "big": ("ddpm-digits", [])}
FULL = {"train": ("ddpm-cifar10", []), "ncsn": ("ncsnv2-cifar10", []), "big": ("ddpm-lsun-church", [])}


class Section:
    """One section's results, written to DIR/sections/NAME.json after every measurement."""

    def __init__(self, out: Path, name: str):
        self.path = out / "sections" / f"{name}.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.data: dict = {"status": "running"}
        self.save()

    def put(self, key: str, value) -> None:
        self.data[key] = value
        self.save()
        print(f"  {key}: {json.dumps(value)[:300]}", flush=True)

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        tmp.replace(self.path)


def run_group(cmd: list[str], limit: float, **popen) -> tuple[int | None, str]:
    """Run ``cmd`` in a session of its own for at most ``limit`` seconds; then (or when it returns) kill whatever
    is left of its process group, grandchildren included. Returns (exit code, or None at the limit; its output
    if captured)."""
    proc = subprocess.Popen(cmd, start_new_session=True, **popen)
    try:
        out, _ = proc.communicate(timeout=limit)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        out, code = None, None
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the session's id is the leader's pid, even after the leader exits
    except (ProcessLookupError, PermissionError):
        pass
    if code is None:
        out, _ = proc.communicate()
    return code, out or ""


# ----- sections (each runs in its own process) ----------------------------------------------------------------

def section_env(s: Section, tiny: bool) -> None:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "cpu_count": os.cpu_count(), "platform": platform.platform()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), multiprocessors=p.multi_processor_count,
                   capability=f"{p.major}.{p.minor}")
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            env["driver"] = smi.stdout.strip() or None
        except (OSError, subprocess.TimeoutExpired):
            env["driver"] = None
    try:  # the installed version, read without importing diffusers (8 s with transformers present)
        env["diffusers"] = importlib.metadata.version("diffusers")
    except importlib.metadata.PackageNotFoundError:
        env["diffusers"] = None
    s.put("environment", env)


def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def section_peak(s: Section, tiny: bool) -> None:
    """The bf16 (CUDA) or fp32 (CPU) matmul rate of n^3 products, median of 10 after 3 warm-ups."""
    import torch
    from _common import sync

    device = _device()
    n = 1024 if tiny or device.type == "cpu" else 8192
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for i in range(13):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        if i >= 3:
            times.append(time.perf_counter() - t0)
    times.sort()
    s.put("matmul", {"n": n, "dtype": str(dtype).replace("torch.", ""),
                     "tflops": 2 * n**3 / times[len(times) // 2] / 1e12})


def section_tests(s: Section, tiny: bool) -> None:
    """`pytest -m cuda`: on a machine without a GPU every selected test is skipped (what --tiny checks)."""
    env = {**os.environ, "SCOREKIT_TEST_TIMEOUT": "60", "PYTHONPATH": f"{ROOT}{os.pathsep}"
           f"{os.environ.get('PYTHONPATH', '')}"}
    report = s.path.with_name("tests_junit.xml")
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
           str(ROOT / "tests" / ("test_cuda.py" if tiny else ""))]
    limit = max(5.0, float(os.environ.get("SCOREKIT_PROOF_LIMIT", "120")) - 10)  # the section's limit less a margin
    t0 = time.perf_counter()
    code, output = run_group(cmd, limit, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    failures = []
    if report.is_file():
        import xml.etree.ElementTree as ET

        root = ET.parse(report).getroot()
        for case in root.iter("testcase"):
            name = f"{case.get('classname')}::{case.get('name')}"
            bad = case.find("failure") if case.find("failure") is not None else case.find("error")
            if bad is not None:
                counts["failed" if bad.tag == "failure" else "errors"] += 1
                failures.append({"test": name, "message": (bad.get("message") or "")[:500]})
            elif case.find("skipped") is not None:
                counts["skipped"] += 1
            else:
                counts["passed"] += 1
    s.put("pytest_cuda", {**counts, "exit_code": code, "seconds": round(time.perf_counter() - t0, 1),
                          "stopped": None if code is not None else f"at its total limit of {limit:.0f} s",
                          "failures": failures, "tail": output[-1500:]})


def _training_rate(net, cfg, device, batch: int, steps: int, *, bf16: bool, compile_: bool) -> dict:
    import copy

    import _models as bm
    import torch

    net, x = bm.prepared(net, cfg, device, batch, train=True, channels_last=device.type == "cuda")
    ema = copy.deepcopy(net).requires_grad_(False)
    params, ema_params = list(net.parameters()), list(ema.parameters())
    opt = torch.optim.Adam(params, lr=1e-4, **({"fused": True} if device.type == "cuda" else {"foreach": True}))
    model = torch.compile(net) if compile_ else net
    eps = torch.randn_like(x)
    t = torch.randint(0, 1000, (batch,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = bm.call(model, x + eps, t)
        loss = (out.float() - eps).pow(2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        torch._foreach_lerp_(ema_params, params, 1e-4)

    t0 = time.perf_counter()
    step()  # the first step includes the compilation
    first = time.perf_counter() - t0
    seconds, memory = bm.seconds_per_step(step, device, steps, warmup=2 if compile_ else 0)
    net.cpu()
    return {"images_per_s": batch / seconds, "step_ms": 1000 * seconds, "peak_memory_gib": memory,
            "first_step_s": first}


def _utilisation(row: dict, flops_per_image: float, peak_tflops: float | None) -> None:
    if peak_tflops:
        row["utilisation"] = row["images_per_s"] * flops_per_image / (peak_tflops * 1e12)


def _peak(out: Path) -> float | None:
    try:
        return json.loads((out / "sections" / "peak.json").read_text())["matmul"]["tflops"]
    except (OSError, KeyError, ValueError):
        return None


def section_train(s: Section, tiny: bool) -> None:
    import _models as bm
    import torch

    device = _device()
    preset, overrides = (TINY if tiny else FULL)["train"]
    ours, theirs, cfg = bm.build_pair(preset, overrides)
    batch, steps = (8, 2) if tiny else (128, 20)
    flops = 3 * bm.forward_flops(ours, cfg)
    peak = _peak(s.path.parent.parent)
    s.put("config", {"preset": preset, "batch": batch, "timed_steps": steps, "train_flops_per_image": flops,
                     "diffusers": "UNet2DModel of the same configuration" if theirs is not None else
                     "not measured: diffusers does not import here"})
    variants = [("fp32", False, False), ("bf16", True, False), ("bf16+compile", True, True)]
    for label, bf16, compile_ in variants:
        for name, net in (("scorekit", ours), ("diffusers", theirs)):
            key = f"{name} {label}"
            if net is None:
                continue
            if compile_ and (tiny or device.type == "cpu"):
                s.put(key, "skipped: torch.compile takes minutes on the CPU (--tiny)")
                continue
            torch.manual_seed(0)
            try:
                row = _training_rate(net, cfg, device, batch, steps, bf16=bf16, compile_=compile_)
            except Exception as e:  # noqa: BLE001 - one variant failing must not end the section
                row = {"error": f"{e.__class__.__name__}: {str(e)[:300]}"}
            if "images_per_s" in row:
                _utilisation(row, flops, peak)
            s.put(key, row)
        a, b = s.data.get(f"scorekit {label}"), s.data.get(f"diffusers {label}")
        if isinstance(a, dict) and isinstance(b, dict) and "images_per_s" in a and "images_per_s" in b:
            s.put(f"ratio {label}", a["images_per_s"] / b["images_per_s"])


def section_nets(s: Section, tiny: bool) -> None:
    import _models as bm
    import torch

    device = _device()
    names = TINY if tiny else FULL
    peak = _peak(s.path.parent.parent)
    for key in ("ncsn", "big"):
        preset, overrides = names[key]
        ours, _, cfg = bm.build_pair(preset, overrides)
        batch, steps = (4, 2) if tiny else (64, 10)
        flops = 3 * bm.forward_flops(ours, cfg)
        torch.manual_seed(0)
        try:
            row = _training_rate(ours, cfg, device, batch, steps, bf16=device.type == "cuda", compile_=False)
            _utilisation(row, flops, peak)
        except Exception as e:  # noqa: BLE001
            row = {"error": f"{e.__class__.__name__}: {str(e)[:300]}"}
        precision = "bf16" if device.type == "cuda" else "fp32"
        s.put(f"{preset} {precision} batch {batch}", {**row, "parameters": sum(p.numel() for p in ours.parameters())})


def section_sample(s: Section, tiny: bool) -> None:
    import torch

    from scorekit.config import load_config
    from scorekit.model.factory import build_denoiser
    from scorekit.model.fastpath import fast_sampling_denoiser
    from scorekit.rng import ImageRNG
    from scorekit.samplers import sample_ancestral

    device = _device()
    preset, overrides = (TINY if tiny else FULL)["train"]
    batch, levels = (8, 3) if tiny else (1024, 20)
    cfg = load_config(preset, overrides)
    s.put("config", {"preset": preset, "batch": batch, "levels_timed": levels, "sampler": "ancestral (Algorithm 2)"})
    variants = [("eager fp32", "fp32", False), ("eager bf16", "bf16", False), ("bf16 + CUDA graphs", "bf16", True)]
    for label, precision, graphs in variants:
        if graphs and (tiny or device.type == "cpu"):
            s.put(label, "skipped: CUDA graphs need a GPU")
            continue
        torch.manual_seed(0)
        d = build_denoiser(cfg).to(device).eval()
        d, bf16 = fast_sampling_denoiser(d, precision=precision, compile=graphs)
        shape = (batch, *d.image_shape)

        def run(n_levels: int, d=d, shape=shape, bf16=bf16) -> None:
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                sample_ancestral(d, shape, ImageRNG(0, batch, device), steps=n_levels)

        try:
            t0 = time.perf_counter()
            run(2 if not graphs else 4)  # warm-up (and the graphs' recording)
            warm = time.perf_counter() - t0
            from _common import sync

            sync(device)
            t0 = time.perf_counter()
            run(levels)
            sync(device)
            seconds = time.perf_counter() - t0
            rate = batch * levels / seconds
            s.put(label, {"image_steps_per_s": rate, "warmup_s": warm,
                          "projected_50k_x_1000_steps_min": 50_000 * 1000 / rate / 60})
        except Exception as e:  # noqa: BLE001
            s.put(label, {"error": f"{e.__class__.__name__}: {str(e)[:300]}"})
        del d
        if device.type == "cuda":
            torch.cuda.empty_cache()


def write_report(out: Path, report: dict) -> None:
    report["sections"] = {}
    for name in SECTIONS:
        path = out / "sections" / f"{name}.json"
        if path.is_file():
            try:
                report["sections"][name] = json.loads(path.read_text())
            except ValueError:
                report["sections"][name] = {"status": "unreadable"}
    for name, text in (("gpu_proof.json", json.dumps(report, indent=2, default=str) + "\n"),
                       ("gpu_proof.md", markdown(report, SECTIONS))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for gpu_proof.json, gpu_proof.md and sections/")
    ap.add_argument("--tiny", action="store_true", help="the same code on the CPU with tiny networks (< 2 minutes)")
    ap.add_argument("--budget", type=float, default=480.0, help="seconds for the whole proof (default 480)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help="a subset, comma-separated")
    ap.add_argument("--section", help=argparse.SUPPRESS)  # internal: run one section in this process
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.section:
        s = Section(out, args.section)
        globals()[f"section_{args.section}"](s, args.tiny)
        if os.environ.get("SCOREKIT_PROOF_STALL") == args.section:  # the tests' hang, to check the time-box
            time.sleep(3600)
        s.data["status"] = "done"
        s.save()
        return 0
    chosen = [n for n in args.sections.split(",") if n]
    unknown = [n for n in chosen if n not in SECTIONS]
    if unknown:
        ap.error(f"unknown section {unknown[0]}; choose from {', '.join(SECTIONS)}")
    start = time.perf_counter()
    report = {"date": time.strftime("%Y-%m-%d"), "tiny": args.tiny, "status": {}, "budget_s": args.budget,
              "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "seconds": 0.0}
    for name in chosen:
        left = args.budget - (time.perf_counter() - start)
        limit = min((TINY_SECTIONS if args.tiny else SECTIONS)[name], left)
        if limit < 5:
            report["status"][name] = {"status": "not run: the budget is spent"}
            continue
        print(f"[{time.perf_counter() - start:5.0f} s] {name} (limit {limit:.0f} s)", flush=True)
        t0 = time.perf_counter()
        cmd = [sys.executable, str(Path(__file__).resolve()), "--out", str(out), "--section", name,
               *(["--tiny"] if args.tiny else [])]
        code, _ = run_group(cmd, limit, env={**os.environ, "PYTHONUNBUFFERED": "1", "SCOREKIT_PROOF_LIMIT": str(limit)})
        if code is None:
            status = f"stopped at its limit of {limit:.0f} s (results so far kept)"
        else:
            status = "done" if code == 0 else f"failed (exit code {code})"
        report["status"][name] = {"status": status, "seconds": round(time.perf_counter() - t0, 1)}
        report["seconds"] = time.perf_counter() - start
        write_report(out, report)
    report["seconds"] = time.perf_counter() - start
    write_report(out, report)
    print(f"wrote {out / 'gpu_proof.json'} and {out / 'gpu_proof.md'} in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
