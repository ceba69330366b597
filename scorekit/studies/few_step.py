"""Few-step generation on the digits: each distillation method (consistency distillation, consistency tuning,
progressive distillation) from two teachers (the main job's DDPM and the NCSN side's ncsnv2-unet-digits) at 1, 2
and 4 network evaluations, beside the teacher at its default sampler and with its full chain, and consistency
training from scratch (ct-digits). FD against NFE, and the training cost of each relative to its teacher's: wall
time (from each run's logged throughput, every run trained in this study on the same machine) and images seen.
Every FD is the mean and standard deviation over SEEDS sample seeds (the DDPM teacher's 1000-step chain: one)."""

from __future__ import annotations

import json

import numpy as np

from .runner import Arm, Context, markdown_table, measured, sample_images, train_arms, write_csv, write_report

NAME = "few-step"
DEFAULT_BASE, DEFAULT_STEPS, DEFAULT_N = "ddpm-digits", 1200, 2000
TITLE = "Few-step generation: distillation and consistency training"
SEEDS = 5
TEACHERS = ("ddpm-digits", "ncsnv2-unet-digits")
METHODS = ("cd", "ect", "pd")
NFE = (1, 2, 4)
CT = "ct-digits"


def check(cfg) -> None:
    from ..errors import ScorekitError

    if cfg.data.dataset != "digits":
        raise ScorekitError(f"--base {cfg.name}: the few-step study compares on the digits (ddpm-digits)")


def _teacher_steps(ctx: Context, preset: str) -> int:
    """The teacher's own training length, scaled as --steps scales the main job's (1200)."""
    from ..config import load_config

    return max(1, round(load_config(preset).training.steps * ctx.steps / DEFAULT_STEPS))


def _train_students(ctx: Context, teacher_run, tag: str) -> dict[str, object]:
    """Distil every method from the teacher (resuming what a previous run of the study started)."""
    from ..run import RunDir
    from ..training import train_run
    from ..training.distill import prepare

    runs = {}
    for method in METHODS:
        out = ctx.folder / "runs" / f"{tag}-{method}"
        run = prepare(teacher_run, out, method, 0, list(ctx.overrides))
        done = run.checkpoints() and run.checkpoints()[-1][0] >= run.read_config().training.steps
        ctx.say(f"    {tag}-{method}: " + ("trained, skipped" if done else "distilling"))
        if not done:
            result = train_run(run.path, None, [], device=ctx.device, progress=ctx.progress, evaluate=False)
            if result.interrupted:
                raise KeyboardInterrupt
        runs[method] = RunDir(out).path
    return runs


def _specs(cfg, role: str) -> list[tuple[str, str, dict, int]]:
    """(label, sampler, options, seeds) measured for a run. The teacher's full chain (1000 evaluations per image on
    the VP side) is measured with one seed: three would cost more than the rest of the study."""
    if role == "teacher":
        sc = cfg.sampling
        own = (f"{sc.sampler} {sc.steps or ''} (default)".replace("  ", " "), sc.sampler,
               {"steps": sc.steps} if sc.steps else {}, SEEDS)
        if cfg.process.kind == "ve":
            full = ("annealed Langevin (the paper's)", "langevin", {}, SEEDS)
        else:
            full = (f"ancestral {cfg.process.num_timesteps} (all levels)", "ancestral",
                    {"steps": cfg.process.num_timesteps, "schedule": "uniform"}, 1)
        return [own, full]
    if cfg.training.loss == "pd":  # its own levels at its trained steps; other budgets on Karras levels
        k = cfg.fewstep.pd_final
        return [(f"DDIM {k} (its levels)", "euler", {"steps": k, "schedule": "auto"}, SEEDS)] + [
            (f"DDIM {n} (Karras levels)", "euler", {"steps": n, "schedule": "karras"}, SEEDS) for n in NFE if n != k]
    return [(f"consistency {n}", "consistency", {"steps": n}, SEEDS) for n in NFE]


def _fd(ctx: Context, denoiser, meter, run, sampler: str, options: dict, seeds: int) -> dict:
    def compute(seed: int) -> dict:
        denoiser.nfe = 0
        out = sample_images(denoiser, ctx.n, seed=seed, sampler=sampler, options=options, batch_size=500)
        return {"fd": meter(out["samples"]), "nfe": denoiser.nfe / -(-ctx.n // 500), "n": ctx.n, "seed": seed}

    opts = "_".join(f"{k}{v}" for k, v in sorted(options.items()))
    rows = [measured(run, f"{NAME}_{sampler}_{opts}_n{ctx.n}_seed{s}", lambda s=s: compute(s))
            for s in range(ctx.seed, ctx.seed + seeds)]
    fds = [r["fd"] for r in rows]
    return {"fd": float(np.mean(fds)), "fd_std": float(np.std(fds, ddof=1)) if len(fds) > 1 else 0.0, "fds": fds,
            "seeds": len(fds), "nfe": rows[0]["nfe"]}


def _cost(run, cfg) -> dict:
    """Training wall time from the run's logged throughput, and the images it saw."""
    total, last = 0.0, 0
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row.get("images_per_s", 0) > 0:
            total += (row["step"] - last) * cfg.training.batch_size / row["images_per_s"]
            last = row["step"]
    return {"train_s": total, "images": cfg.training.steps * cfg.training.batch_size}


def run(ctx: Context, command: str) -> dict:
    from ..errors import ScorekitError
    from ..run import load

    runs: list[tuple[str, str, str, object]] = []  # (teacher tag, role, label, run dir)
    for preset in TEACHERS:
        tag = preset.removesuffix("-digits")
        arm = Arm(tag, preset, [f"training.steps={_teacher_steps(ctx, preset)}"], base=preset)
        sub = Context(ctx.folder, preset, ctx.overrides, _teacher_steps(ctx, preset), n=ctx.n, checkpoints=1,
                      seed=ctx.seed, device=ctx.device, progress=ctx.progress, extractor=ctx.extractor,
                      inception_weights=ctx.inception_weights)
        status = train_arms(sub, [arm])
        if status[arm.name]:
            raise ScorekitError(f"the teacher {preset} stopped: {status[arm.name]}")
        runs.append((tag, "teacher", f"{preset} (teacher)", sub.run_dir(arm)))
        for method, path in _train_students(ctx, sub.run_dir(arm), tag).items():
            runs.append((tag, method, f"{method} from {preset}", path))
    ct = Arm("ct", f"{CT} (from scratch)", base=CT)
    sub = Context(ctx.folder, CT, ctx.overrides, _teacher_steps(ctx, CT), n=ctx.n, checkpoints=1, seed=ctx.seed,
                  device=ctx.device, progress=ctx.progress, extractor=ctx.extractor,
                  inception_weights=ctx.inception_weights)
    if train_arms(sub, [ct])[ct.name]:
        raise ScorekitError("ct-digits stopped")
    runs.append(("ddpm", "ct", f"{CT} (from scratch)", sub.run_dir(ct)))
    meter = ctx.meter(load(runs[0][3]).config)
    rows = []
    for tag, role, label, run_dir in runs:
        d = load(run_dir, device=ctx.device)
        cost = _cost(run_dir, d.config)
        for spec, sampler, options, seeds in _specs(d.config, "teacher" if role == "teacher" else role):
            r = _fd(ctx, d, meter, run_dir, sampler, options, seeds)
            rows.append({"teacher": tag, "method": role, "run": label, "sampler": spec, **cost, **r})
            ctx.say(f"    {label}, {spec}: NFE {r['nfe']:.0f}, {meter.name} {_fd_text(r)}")
    return _report(ctx, command, meter, rows)


def _fd_text(r: dict) -> str:
    return f"{r['fd']:.2f} ± {r['fd_std']:.2f}" if r["seeds"] > 1 else f"{r['fd']:.2f} (1 seed)"


def _report(ctx: Context, command: str, meter, rows: list[dict]) -> dict:
    from ..plots import figure

    teacher_cost = {r["teacher"]: r for r in rows if r["method"] == "teacher"}
    for r in rows:
        base = teacher_cost[r["teacher"]]
        r["time_vs_teacher"] = r["train_s"] / base["train_s"] if base["train_s"] else None
        r["images_vs_teacher"] = r["images"] / base["images"]
    write_csv(ctx.folder / f"{NAME}.csv", [{k: v for k, v in r.items() if k != "fds"} for r in rows])
    tags = list(dict.fromkeys(r["teacher"] for r in rows))
    with figure(ctx.folder / f"{NAME}.png", ncols=len(tags), size=(6 * len(tags), 4.4)) as axes:
        for ax, tag in zip(np.atleast_1d(axes), tags):
            for i, method in enumerate(dict.fromkeys(r["method"] for r in rows if r["teacher"] == tag)):
                pts = sorted((r for r in rows if r["teacher"] == tag and r["method"] == method), key=lambda r: r["nfe"])
                ax.errorbar([r["nfe"] for r in pts], [r["fd"] for r in pts], yerr=[r["fd_std"] for r in pts],
                            fmt="o-" if method != "teacher" else "s", color=f"C{i}", capsize=3, label=pts[0]["run"])
            ax.set(xscale="log", yscale="log", xlabel="network evaluations per image",
                   ylabel=f"{meter.name} ({ctx.n} samples, mean of {SEEDS} seeds)", title=f"teacher: {tag}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    table = markdown_table(
        ["Run", "Sampler", "NFE", f"{meter.name} (mean ± sd)", "training s", "time / teacher's", "images / teacher's"],
        [[r["run"], r["sampler"], f"{r['nfe']:.0f}", _fd_text(r), f"{r['train_s']:.0f}",
          f"{r['time_vs_teacher']:.2f}" if r["time_vs_teacher"] is not None else "–", f"{r['images_vs_teacher']:.2f}"]
         for r in rows])
    body = (f"{meter.name} of {ctx.n} samples against {meter.ref.description}, mean ± standard deviation over "
            f"{SEEDS} sample seeds; NFE per image counted. Training time from each run's logged throughput (all "
            f"runs trained in this study, one after another on the same machine).\n\n{table}\n"
            f"![FD against NFE]({NAME}.png)\n")
    payload = {"rows": rows, "measure": meter.describe(), "seeds": SEEDS}
    write_report(ctx, NAME, TITLE, body, payload, command)
    return payload
