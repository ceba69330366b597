"""Few-step generation on the digits: each distillation method (consistency distillation, consistency tuning,
progressive distillation) from two teachers (the main job's DDPM and the NCSN side's ncsnv2-unet-digits) at 1, 2
and 4 network evaluations, beside the teacher at its default sampler and with its full chain, and consistency
training from scratch (ct-digits). FD against NFE, and the training cost of each relative to its teacher's: wall
time (from each run's logged throughput, every run trained in this study on the same machine) and images seen.
Every FD is the mean over SEEDS sample seeds with its 95% interval (the DDPM teacher's 1000-step chain: one seed),
under both digits judges (the proxy and the HOG FD), each row also as a ratio to its teacher's default sampler
with the interval of that ratio; the report says which targets are met, missed or within noise."""

from __future__ import annotations

import numpy as np

from ..metrics.intervals import fmt_interval, ratio_interval, verdict
from .runner import (
    Arm,
    Context,
    fd_text,
    markdown_table,
    ratio_text,
    seeded_fd,
    train_arms,
    training_cost,
    verdict_text,
    with_ratios,
    write_csv,
    write_report,
)

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
    (ctx.folder / "grids").mkdir(parents=True, exist_ok=True)
    for tag, role, label, run_dir in runs:
        d = load(run_dir, device=ctx.device)
        cost = training_cost(run_dir, d.config)
        for spec, sampler, options, seeds in _specs(d.config, "teacher" if role == "teacher" else role):
            grid = ctx.folder / "grids" / f"{run_dir.name}_{sampler}_{'_'.join(map(str, options.values()))}.png"
            r = seeded_fd(ctx, NAME, d, meter, run_dir, sampler, options, seeds, grid)
            rows.append({"teacher": tag, "method": role, "run": label, "sampler": spec, "grid": str(grid), **cost,
                         **r})
            ctx.say(f"    {label}, {spec}: NFE {r['nfe']:.0f}, "
                    + ", ".join(f"{name} {fd_text(j)}" for name, j in r["judges"].items()))
    return _report(ctx, command, meter, rows)


def _ratios(rows: list[dict]) -> None:
    """Each row's FD over its teacher's default sampler's, per judge, with the 95% interval over seeds."""
    default = {r["teacher"]: r for r in rows if r["method"] == "teacher" and "(default)" in r["sampler"]}
    for r in rows:
        base = default[r["teacher"]] if r["method"] != "ct" else default["ddpm"]
        with_ratios(r, base)


TARGETS = [  # (teacher tag, method, NFE, at most this ratio to the teacher's default sampler), issue 36
    ("ddpm", "cd", 2, 1.10), ("ddpm", "cd", 1, 1.30), ("ncsnv2-unet", "cd", 2, 1.15)]


def _verdicts(rows: list[dict], names: list[str]) -> list[str]:
    lines = []
    for tag, method, nfe, target in TARGETS:
        found = [r for r in rows if r["teacher"] == tag and r["method"] == method and round(r["nfe"]) == nfe]
        if not found:
            continue
        says = [verdict_text(name, found[0]["judges"][name], target) for name in names]
        lines.append(f"- {method} from {tag}, {nfe} NFE, at most {target:.2f}x its teacher: " + "; ".join(says))
    for tag in dict.fromkeys(r["teacher"] for r in rows):
        two = [r for r in rows if r["teacher"] == tag and r["method"] == "cd" and round(r["nfe"]) in (1, 2)]
        if len(two) == 2:
            one, both = sorted(two, key=lambda r: r["nfe"])
            says = []
            for name in names:
                ratio, lo, hi = ratio_interval(both["judges"][name]["values"], one["judges"][name]["values"])
                says.append(f"{name} 2 NFE / 1 NFE {fmt_interval(ratio, lo, hi)} ({verdict(lo, hi, 1.0)})")
            lines.append(f"- cd from {tag}, 2 NFE better than 1 NFE: " + "; ".join(says))
    return lines


def _report(ctx: Context, command: str, meter, rows: list[dict]) -> dict:
    from ..evaluation.plots import figure

    names = meter.names
    _ratios(rows)
    teacher_cost = {r["teacher"]: r for r in rows if r["method"] == "teacher"}
    for r in rows:
        base = teacher_cost[r["teacher"]]
        r["time_vs_teacher"] = r["train_s"] / base["train_s"] if base["train_s"] else None
        r["images_vs_teacher"] = r["images"] / base["images"]
    flat = []
    for r in rows:
        row = {k: v for k, v in r.items() if k != "judges"}
        for name, j in r["judges"].items():
            key = name.split()[0].lower()
            row.update({f"{key}_fd": j["fd"], f"{key}_fd_low": j["low"], f"{key}_fd_high": j["high"],
                        f"{key}_ratio": j["ratio"], f"{key}_ratio_low": j["ratio_low"],
                        f"{key}_ratio_high": j["ratio_high"]})
        flat.append(row)
    write_csv(ctx.folder / f"{NAME}.csv", flat)
    tags = list(dict.fromkeys(r["teacher"] for r in rows))
    with figure(ctx.folder / f"{NAME}.png", nrows=len(names), ncols=len(tags),
                size=(6 * len(tags), 4.4 * len(names))) as axes:
        axes = np.asarray(axes).reshape(len(names), len(tags))
        for row_axes, name in zip(axes, names):
            for ax, tag in zip(row_axes, tags):
                for i, method in enumerate(dict.fromkeys(r["method"] for r in rows if r["teacher"] == tag)):
                    pts = sorted((r for r in rows if r["teacher"] == tag and r["method"] == method),
                                 key=lambda r: r["nfe"])
                    js = [r["judges"][name] for r in pts]
                    err = [[j["fd"] - (j["low"] if j["low"] is not None else j["fd"]) for j in js],
                           [(j["high"] if j["high"] is not None else j["fd"]) - j["fd"] for j in js]]
                    ax.errorbar([r["nfe"] for r in pts], [j["fd"] for j in js], yerr=err,
                                fmt="o-" if method != "teacher" else "s", color=f"C{i}", capsize=3,
                                label=pts[0]["run"])
                ax.set(xscale="log", yscale="log", xlabel="network evaluations per image",
                       ylabel=f"{name} ({ctx.n} samples, mean and 95% CI)", title=f"teacher: {tag}")
                ax.grid(alpha=0.3)
                ax.legend(fontsize=7)
    header = ["Run", "Sampler", "NFE"]
    for name in names:
        header += [f"{name} [95% CI]", f"{name.split()[0]} ratio [95% CI]"]
    header += ["training s", "time / teacher's", "images / teacher's"]
    body_rows = []
    for r in rows:
        cells = [r["run"], r["sampler"], f"{r['nfe']:.0f}"]
        for name in names:
            j = r["judges"][name]
            cells += [fd_text(j), ratio_text(j)]
        cells += [f"{r['train_s']:.0f}", f"{r['time_vs_teacher']:.2f}" if r["time_vs_teacher"] is not None else "–",
                  f"{r['images_vs_teacher']:.2f}"]
        body_rows.append(cells)
    table = markdown_table(header, body_rows)
    verdicts = "\n".join(_verdicts(rows, names))
    body = (f"{' and '.join(names)} of {ctx.n} samples against {meter.ref.description}: the mean over {SEEDS} sample "
            f"seeds with its 95% t interval; ratios to the teacher's default sampler (ct-digits: to the main job's "
            f"teacher) with the 95% interval of a ratio of means (delta method on the log, Welch's df). NFE per "
            f"image counted. Training time from each run's logged throughput (all runs trained in this study, one "
            f"after another on the same machine). A target is met when the interval lies below it, missed when "
            f"above, else within noise.\n\n{table}\n{verdicts}\n\n![FD against NFE]({NAME}.png)\n")
    payload = {"rows": rows, "measure": meter.describe(), "seeds": SEEDS}
    write_report(ctx, NAME, TITLE, body, payload, command)
    return payload
