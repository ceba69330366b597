"""Flow matching on the digits: the straight path (fm-digits) with uniform against SD3's logit-normal training
times, beside DDPM's recipe (the main job, ddpm-digits) and EDM's (edm-digits) on the same network, data, batch and
number of steps. Each run at its preset's default sampler: every judge's FD over SEEDS sample seeds with its 95%
interval and as a ratio to edm-digits' (the issue's target: fm-digits no worse at <= 35 network evaluations,
trained in <= 1.1x its time), training time from each run's logged throughput (one run after another on the same
machine), and the probability-flow ODE's bits/dim on test digits (Hutchinson's trace, uniform dequantisation).
Then reflow against consistency distillation at 1 and 2 network evaluations: reflow students (`distill --method
reflow`) of the flow, the DDPM and an NCSN teacher (ncsnv2-unet-digits, trained here at its own length), consistency
distillation (cd) of the DDPM and the NCSN teacher, each as a ratio to its teacher's default sampler (the issue's
targets: the flow's reflow at 1 NFE and the NCSN teacher's at 2 NFE within 1.15x). MeanFlow is measured apart
(BENCHMARKS.md)."""

from __future__ import annotations

from .runner import (
    Arm,
    Context,
    fd_text,
    judges_text,
    markdown_table,
    measured,
    ratio_text,
    seeded_fd,
    train_arms,
    training_cost,
    verdict_text,
    with_ratios,
    write_csv,
    write_report,
)

NAME = "flows"
DEFAULT_BASE, DEFAULT_STEPS, DEFAULT_N = "fm-digits", 1200, 2000
TITLE = "Flow matching against DDPM's and EDM's recipes"
SEEDS = 5
BPD_IMAGES = 100
REFERENCE = "edm"
ARMS = [  # (arm, label, preset, overrides)
    ("ddpm", "DDPM (ddpm-digits, the main job)", "ddpm-digits", []),
    ("edm", "EDM (edm-digits)", "edm-digits", []),
    ("fm-uniform", "flow matching, t uniform", "fm-digits", ["training.t_sampling=uniform"]),
    ("fm", "flow matching, t logit-normal (0, 1) (fm-digits)", "fm-digits", []),
]
TARGET = 1.0  # fm-digits' FD at most edm-digits'
NCSN_TEACHER = "ncsnv2-unet-digits"
STUDENTS = [("fm", "reflow"), ("ddpm", "reflow"), ("ncsnv2-unet", "reflow"), ("ddpm", "cd"), ("ncsnv2-unet", "cd")]
STUDENT_NFE = (1, 2)
PAIRS = 20000  # the reflow students' (noise, endpoint) pairs (distill's default)
# a teacher's pair sampler where its automatic one (the ODE twin of its default, else Heun 18) is not its best ODE:
# the NCSN teacher's DPM-Solver++(2M) at 5 steps scores 28.5 / 133.2 (proxy / HOG FD, 5 seeds x 2,000) against
# Heun 18's 34.0 / 136.0, in a seventh of the evaluations (README, "Flow matching")
PAIR_SAMPLER = {"ncsnv2-unet": "dpm2m 5"}
STUDENT_TARGETS = {("fm", "reflow", 1): 1.15, ("ncsnv2-unet", "reflow", 2): 1.15}


def check(cfg) -> None:
    from ..errors import ScorekitError

    if cfg.data.dataset != "digits":
        raise ScorekitError(f"--base {cfg.name}: the flows study compares the digits presets (fm-digits)")


def run(ctx: Context, command: str) -> dict:
    from ..evaluation.bpd import bits_per_dim
    from ..run import load

    arms = [Arm(name, label, [*overrides], base=preset) for name, label, preset, overrides in ARMS]
    status = train_arms(ctx, arms)
    stopped = [a.label for a in arms if status[a.name]]
    if stopped:
        from ..errors import ScorekitError

        raise ScorekitError(f"the flows study needs every run; stopped: {', '.join(stopped)}")
    meter = ctx.meter(ctx.config(arms[-1]))
    (ctx.folder / "grids").mkdir(parents=True, exist_ok=True)
    rows = []
    for arm in arms:
        run_dir = ctx.run_dir(arm)
        d = load(run_dir, device=ctx.device)
        sc = d.config.sampling
        options = {"steps": sc.steps} if sc.steps else {}
        grid = ctx.folder / "grids" / f"{arm.name}.png"
        r = seeded_fd(ctx, NAME, d, meter, run_dir, sc.sampler, options, SEEDS, grid)

        def bpd(d=d):
            out = bits_per_dim(d, split="test", n=BPD_IMAGES, seed=ctx.seed, method="ode")
            return {"bpd": out["bpd"], "bpd_sem": out["bpd_sem"], "n": out["n"]}

        b = measured(run_dir, f"{NAME}_ode_bpd_n{BPD_IMAGES}_seed{ctx.seed}", bpd)
        rows.append({"arm": arm.name, "run": arm.label, "sampler": f"{sc.sampler} {sc.steps or ''}".strip(),
                     **training_cost(run_dir, d.config), **r, "bpd": b["bpd"], "bpd_sem": b["bpd_sem"]})
        ctx.say(f"    {arm.label}: NFE {r['nfe']:.0f}, "
                + judges_text(r) + f", ODE bits/dim {b['bpd']:.3f}")
    ref = next(r for r in rows if r["arm"] == REFERENCE)
    for r in rows:
        r["time_vs_edm"] = r["train_s"] / ref["train_s"]
        with_ratios(r, ref)
    write_csv(ctx.folder / f"{NAME}.csv", [
        {**{k: v for k, v in r.items() if k != "judges"},
         **{f"{n.split()[0].lower()}_{k}": j[k] for n, j in r["judges"].items()
            for k in ("fd", "low", "high", "ratio", "ratio_low", "ratio_high")}} for r in rows])
    header = ["Run", "Sampler", "NFE"]
    for name in meter.names:
        header += [f"{name} [95% CI]", "/ EDM's [95% CI]"]
    header += ["training s", "time / EDM's", "ODE bits/dim (test)"]
    body_rows = []
    for r in rows:
        cells = [r["run"], r["sampler"], f"{r['nfe']:.0f}"]
        for name in meter.names:
            j = r["judges"][name]
            cells += [fd_text(j), ratio_text(j)]
        cells += [f"{r['train_s']:.0f}", f"{r['time_vs_edm']:.2f}", f"{r['bpd']:.3f} ± {r['bpd_sem']:.3f}"]
        body_rows.append(cells)
    fm = next(r for r in rows if r["arm"] == "fm")
    says = [verdict_text(name, j, TARGET) for name, j in fm["judges"].items()]
    verdicts = (f"- fm-digits no worse than edm-digits (FD ratio at most {TARGET:.2f}): " + "; ".join(says)
                + f"\n- fm-digits trained in at most 1.1x edm-digits' time: {fm['time_vs_edm']:.2f}x "
                f"({'met' if fm['time_vs_edm'] <= 1.1 else 'missed'})")
    body = (f"Every run trains its preset for {ctx.steps} steps (the same 0.65M-parameter U-Net, batch, learning rate "
            f"and EMA). {' and '.join(meter.names)} of {ctx.n} samples at the preset's default sampler against "
            f"{meter.ref.description}: the mean over {SEEDS} sample seeds with its 95% t interval, and the ratio to "
            f"edm-digits' with the interval of a ratio of means. Training time from each run's logged throughput. "
            f"Bits/dim: the probability-flow ODE's likelihood (Hutchinson's trace, uniform dequantisation) of "
            f"{BPD_IMAGES} test digits, ± its standard error. A target is met when the interval lies below it, "
            f"missed when above, else within noise. Grids: grids/ARM.png.\n\n"
            f"{markdown_table(header, body_rows)}\n{verdicts}\n")
    students, student_body = _students(ctx, meter, {r["arm"]: r for r in rows})
    payload = {"rows": rows, "students": students, "measure": meter.describe(), "seeds": SEEDS}
    write_report(ctx, NAME, TITLE, body + student_body, payload, command)
    return payload


def _students(ctx: Context, meter, teachers: dict) -> tuple[list[dict], str]:
    """Reflow and consistency-distillation students of the flow, DDPM and NCSN teachers at STUDENT_NFE, as ratios to
    their teacher's default sampler; the report's section."""
    from ..config import load_config
    from ..errors import ScorekitError
    from ..run import load
    from ..training import train_run
    from ..training.distill import prepare

    steps = max(1, round(load_config(NCSN_TEACHER).training.steps * ctx.steps / 1200))
    sub = Context(ctx.folder, NCSN_TEACHER, ctx.overrides, steps, n=ctx.n, checkpoints=1, seed=ctx.seed,
                  device=ctx.device, progress=ctx.progress, extractor=ctx.extractor,
                  inception_weights=ctx.inception_weights)
    ncsn = Arm("ncsnv2-unet", f"{NCSN_TEACHER} (teacher)", base=NCSN_TEACHER)
    if train_arms(sub, [ncsn])[ncsn.name]:
        raise ScorekitError(f"the teacher {NCSN_TEACHER} stopped")
    teacher_dirs = {"fm": ctx.folder / "runs" / "fm", "ddpm": ctx.folder / "runs" / "ddpm",
                    "ncsnv2-unet": sub.run_dir(ncsn)}
    if "ncsnv2-unet" not in teachers:
        d = load(teacher_dirs["ncsnv2-unet"], device=ctx.device)
        sc = d.config.sampling
        r = seeded_fd(ctx, NAME, d, meter, teacher_dirs["ncsnv2-unet"], sc.sampler,
                      {"steps": sc.steps} if sc.steps else {}, SEEDS)
        teachers["ncsnv2-unet"] = {"sampler": f"{sc.sampler} {sc.steps or ''}".strip(), **r}
    rows = []
    for tag, method in STUDENTS:
        out = ctx.folder / "runs" / f"{tag}-{method}"
        extra = [f"fewstep.pairs={PAIRS}"] if method == "reflow" else []
        if method == "reflow" and tag in PAIR_SAMPLER:
            extra.append(f"fewstep.pair_sampler={PAIR_SAMPLER[tag]}")
        run = prepare(teacher_dirs[tag], out, method, 0, [*ctx.overrides, *extra])
        if not (run.checkpoints() and run.checkpoints()[-1][0] >= run.read_config().training.steps):
            ctx.say(f"    {tag}-{method}: distilling")
            if train_run(run.path, None, [], device=ctx.device, progress=ctx.progress, evaluate=False).interrupted:
                raise KeyboardInterrupt
        d = load(out, device=ctx.device)
        teacher = teachers[tag]
        for k in STUDENT_NFE:
            sampler, options = (("euler", {"steps": k, "schedule": "auto"}) if method == "reflow"
                                else ("consistency", {"steps": k}))
            r = seeded_fd(ctx, NAME, d, meter, out, sampler, options, SEEDS,
                          ctx.folder / "grids" / f"{tag}-{method}-{k}.png")
            with_ratios(r, teacher)
            rows.append({"teacher": tag, "method": method, "nfe": k, **training_cost(out, d.config), **r})
            ctx.say(f"    {method} from {tag}, {k} NFE: " + judges_text(r))
    header = ["Student", "NFE", "training s"]
    for name in meter.names:
        header += [f"{name} [95% CI]", "/ teacher's [95% CI]"]
    table = [[f"{r['method']} from {r['teacher']}", f"{r['nfe']:.0f}", f"{r['train_s']:.0f}",
              *[c for j in r["judges"].values()
                for c in (fd_text(j), ratio_text(j))]] for r in rows]
    lines = []
    for (tag, method, k), target in STUDENT_TARGETS.items():
        r = next(r for r in rows if (r["teacher"], r["method"], r["nfe"]) == (tag, method, k))
        lines.append(f"- {method} from {tag}, {k} NFE, within {target:g}x its teacher: " + "; ".join(
            verdict_text(n, j, target) for n, j in r["judges"].items()))
    teacher_line = "; ".join(f"{tag}: {t['sampler']}, " + ", ".join(f"{n} {fd_text(j)}" for n, j in
                                                                     t["judges"].items())
                             for tag, t in teachers.items() if tag in teacher_dirs)
    body = (f"\n## Reflow against consistency distillation\n\nStudents of three teachers ({teacher_line}): reflow "
            f"({PAIRS} pairs from the teacher's deterministic sampler, the straight path between them, Euler steps "
            f"uniform in t) and consistency distillation (cd, multistep consistency sampling), each with "
            f"`scorekit distill`'s defaults; {SEEDS} seeds of {ctx.n} samples, ratios to the teacher's default "
            f"sampler with their 95% intervals. Training time: the student's own (the pairs' generation not "
            f"counted).\n\n{markdown_table(header, table)}\n" + "\n".join(lines) + "\n")
    return rows, body
