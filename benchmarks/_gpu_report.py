"""The GPU proof's report in Markdown (benchmarks/gpu_proof.py writes it after every section)."""

from __future__ import annotations


def _fmt(row, key="images_per_s", unit="img/s") -> str:
    if isinstance(row, str):
        return row
    if not isinstance(row, dict):
        return "not measured"
    if "error" in row:
        return f"error: {row['error'][:80]}"
    text = f"{row[key]:,.0f} {unit}"
    if row.get("utilisation") is not None:
        text += f", {100 * row['utilisation']:.1f}% of peak"
    if row.get("peak_memory_gib") is not None:
        text += f", {row['peak_memory_gib']:.1f} GiB"
    return text


def markdown(report: dict, sections) -> str:
    """gpu_proof.md: the environment, each section's status and its results as tables."""
    sec = report["sections"]
    env = sec.get("env", {}).get("environment", {})
    lines = [f"# GPU proof, {report['date']}", "",
             f"Device: {env.get('gpu', 'CPU (--tiny)' if report['tiny'] else 'CPU')}; driver {env.get('driver')}; "
             f"torch {env.get('torch')}, CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}; diffusers "
             f"{env.get('diffusers') or 'not installed'}. Command: `{report['command']}`; "
             f"{report['seconds']:.0f} s in all.",
             "", "| section | status | seconds |", "| --- | --- | --- |"]
    for name in sections:
        info = report["status"].get(name, {})
        lines.append(f"| {name} | {info.get('status', 'not run')} | {info.get('seconds', '')} |")
    peak = sec.get("peak", {}).get("matmul")
    if peak:
        lines += ["", f"Measured matmul peak: {peak['tflops']:.3g} TFLOP/s ({peak['dtype']}, n = {peak['n']})."]
    tests = sec.get("tests", {}).get("pytest_cuda")
    if tests:
        lines += ["", f"`pytest -m cuda`: {tests['passed']} passed, {tests['failed']} failed, {tests['errors']} "
                      f"errors, {tests['skipped']} skipped ({tests['seconds']} s)."]
        lines += [f"- FAILED {f['test']}: {f['message'][:200]}" for f in tests["failures"]]
    train = sec.get("train", {})
    if "config" in train:
        c = train["config"]
        lines += ["", f"Training, {c['preset']} at batch {c['batch']} ({c['diffusers']}):", "",
                  "| variant | scorekit | diffusers | ratio |", "| --- | --- | --- | --- |"]
        for label in ("fp32", "bf16", "bf16+compile"):
            ratio = train.get(f"ratio {label}")
            ours, theirs = _fmt(train.get(f"scorekit {label}")), _fmt(train.get(f"diffusers {label}"))
            lines.append(f"| {label} | {ours} | {theirs} | {f'{ratio:.2f}x' if ratio else ''} |")
    nets = {k: v for k, v in sec.get("nets", {}).items() if k != "status"}
    if nets:
        lines += ["", "| network | training |", "| --- | --- |"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in nets.items()]
    smp = sec.get("sample", {})
    if "config" in smp:
        c = smp["config"]
        lines += ["", f"Sampling, {c['preset']} at batch {c['batch']}, {c['sampler']}:", "",
                  "| variant | image-steps/s | 50k x 1000 steps |", "| --- | --- | --- |"]
        for label in ("eager fp32", "eager bf16", "bf16 + CUDA graphs"):
            row = smp.get(label)
            if isinstance(row, dict) and "image_steps_per_s" in row:
                lines.append(f"| {label} | {row['image_steps_per_s']:,.0f} | "
                             f"{row['projected_50k_x_1000_steps_min']:,.1f} min |")
            else:
                lines.append(f"| {label} | {_fmt(row)} | |")
    return "\n".join(lines) + "\n"
