"""EMA against no EMA (technique 5; the rebuttal: "EMA stabilizes training but sometimes may have a slightly
worse peak FID"): FD against the step with the EMA weights and with the raw weights of the same run."""

from __future__ import annotations

from .runner import (
    Arm,
    Context,
    checkpoint_steps,
    judged,
    judges_tag,
    markdown_table,
    measured,
    other_judges,
    sample_images,
    train_arms,
    write_csv,
    write_report,
)

NAME = "ema"
# NCSNv2's techniques on the main job's U-Net: the RefineNet suits 8x8 images poorly (STUDIES.md); ~6 min on 2 cores
DEFAULT_BASE, DEFAULT_STEPS = "ncsnv2-unet-digits", 2000
TITLE = "EMA weights against raw weights"


def check(cfg) -> None:
    from ..errors import ScorekitError

    if not cfg.training.ema_decay:
        raise ScorekitError(f"--base {cfg.name}: has no EMA (training.ema_decay=0); set training.ema_decay=...")


def run(ctx: Context, command: str) -> dict:
    from ..errors import ScorekitError
    from ..evaluation.plots import figure
    from ..run import load

    arm = Arm("run", "the base preset")
    cfg = ctx.config(arm)
    status = train_arms(ctx, [arm])[arm.name]
    if status:
        raise ScorekitError(f"the run stopped: {status}")
    meter = ctx.meter(cfg)
    points = []
    for step, path in checkpoint_steps(ctx, arm):
        row = {"step": step}
        for ema in (True, False):
            def compute(ema=ema, path=path):
                d = load(path, ema=ema, device=ctx.device)
                return {"step": d.checkpoint_step, "ema": d.uses_ema, "n": ctx.n,
                        **judged(meter, sample_images(d, ctx.n, seed=ctx.seed)["samples"])}

            key = f"{NAME}_step{step}_{'ema' if ema else 'raw'}_n{ctx.n}_seed{ctx.seed}{judges_tag(meter)}"
            got = measured(ctx.run_dir(arm), key, compute)
            row["fd_ema" if ema else "fd_raw"] = got["fd"]
            for other in other_judges(meter):
                row[f"{other} {'EMA' if ema else 'raw'}"] = got["fds"][other]
        points.append(row)
        ctx.say(f"    step {step}: {meter.name} EMA {row['fd_ema']:.2f}, raw {row['fd_raw']:.2f}")
    write_csv(ctx.folder / f"{NAME}.csv", points)
    with figure(ctx.folder / f"{NAME}.png", size=(7, 4.2)) as ax:
        for key, label in (("fd_ema", f"EMA {cfg.training.ema_decay:g}"), ("fd_raw", "raw weights")):
            ax.plot([p["step"] for p in points], [p[key] for p in points], "o-", label=label)
        ax.set(xlabel="training step", ylabel=f"{meter.name} ({ctx.n} samples)",
               title=f"EMA against raw weights ({ctx.base})")
        ax.legend()
        ax.grid(alpha=0.3)
    best = {k: min(points, key=lambda p: p[k]) for k in ("fd_ema", "fd_raw")}
    others = other_judges(meter)
    table = markdown_table(["Weights", f"best {meter.name} (step)", "final", "mean over checkpoints",
                            *[f"{o}: final, mean" for o in others]],
                           [[label, f"{best[k][k]:.2f} ({best[k]['step']})", points[-1][k],
                             sum(p[k] for p in points) / len(points),
                             *[f"{points[-1][f'{o} {w}']:.2f}, {sum(p[f'{o} {w}'] for p in points) / len(points):.2f}"
                               for o in others]]
                            for k, label, w in (("fd_ema", f"EMA {cfg.training.ema_decay:g}", "EMA"),
                                                ("fd_raw", "raw", "raw"))])
    body = (f"One run of {ctx.base}, {ctx.steps} steps; {meter.name} of {ctx.n} samples against "
            f"{meter.ref.description} at {ctx.checkpoints} checkpoints, each with both weights.\n\n{table}\n"
            f"![FD against the step]({NAME}.png)\n")
    write_report(ctx, NAME, TITLE, body, {"points": points, "measure": meter.describe()}, command)
    return {"points": points}
