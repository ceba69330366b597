"""NCSNv2's technique ablation (the rebuttal's figure and its table): NCSN, NCSN_{1,2,4}, NCSN_{1,2,4,5} and
NCSNv2 trained on the same data for the same steps; FD against the training step for each (a checkpoint
sweep), and the best FD with and without the final denoising step x + sigma_L^2 s(x, sigma_L).

Techniques (Song & Ermon 2020): 1, 2 and 4 are sigma_1, the number of levels and the Langevin step size
from ``plan-noise`` on the data; 5 is the EMA of the weights; 3 is the NCSNv2 network (unconditional,
output divided by sigma). NCSN is the original configuration: the conditional RefineNet, sigma 1 to 0.01
over 10 levels, 100 Langevin steps of 2e-5 per level, no EMA.
"""

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

NAME = "ncsn-techniques"
DEFAULT_BASE, DEFAULT_STEPS = "ncsnv2-digits", 1500
TITLE = "NCSNv2's techniques, one at a time"


def plan(ctx: Context) -> dict:
    """Techniques 1, 2, 4 on the base data (at most 20,000 images for technique 1's maximum distance)."""
    from ..data.sources import build_source
    from ..processes.techniques import plan_noise

    cfg = ctx.config(Arm("base", "base"))
    src = build_source(cfg.data, "train")
    import torch

    n = min(len(src), 20_000)
    images = src.images[:n] if src.images is not None else torch.stack([src[i] for i in range(n)])
    p = plan_noise(images.double() / 255.0, sigma_end=cfg.process.sigma_end, n_steps_each=cfg.sampling.n_steps_each)
    return {"sigma_begin": round(p.sigma_begin, 4), "num_levels": p.num_levels, "step_lr": float(f"{p.step_lr:.3g}"),
            "n_steps_each": p.n_steps_each, "ema_decay": cfg.training.ema_decay or 0.999}


# NCSN's own configuration (NCSN v1): sigma 1 to 0.01 over 10 levels, 100 Langevin steps of 2e-5 per level
NCSN_V1 = ["process.sigma_begin=1", "process.sigma_end=0.01", "process.num_levels=10", "sampling.n_steps_each=100",
           "sampling.step_lr=0.00002"]


def arms(ctx: Context, techniques: dict) -> list[Arm]:
    planned = [f"process.sigma_begin={techniques['sigma_begin']}", f"process.num_levels={techniques['num_levels']}",
               f"sampling.step_lr={techniques['step_lr']}", f"sampling.n_steps_each={techniques['n_steps_each']}"]
    v1 = ["model.arch=ncsn", "model.output=score", "sampling.denoise=true"]
    return [
        Arm("ncsn", "NCSN", [*v1, "training.ema_decay=0", *NCSN_V1]),
        Arm("ncsn_124", "NCSN_{1,2,4}", [*v1, *planned, "training.ema_decay=0"]),
        Arm("ncsn_1245", "NCSN_{1,2,4,5}", [*v1, *planned, f"training.ema_decay={techniques['ema_decay']}"]),
        Arm("ncsnv2", "NCSNv2", [*planned, f"training.ema_decay={techniques['ema_decay']}", "sampling.denoise=true"]),
    ]


def check(cfg) -> None:
    from ..errors import ScorekitError

    if cfg.family != "ncsn":
        raise ScorekitError(f"--base {cfg.name}: the technique ablation needs an NCSN preset (e.g. ncsnv2-digits)")


def run(ctx: Context, command: str) -> dict:
    from ..evaluation.plots import figure
    from ..run import load

    cfg = ctx.config(Arm("base", "base"))
    techniques = measured(ctx.folder, "techniques", lambda: plan(ctx))
    study_arms = arms(ctx, techniques)
    status = train_arms(ctx, study_arms)
    meter = ctx.meter(cfg)
    rows, curves = [], {}
    for arm in study_arms:
        if status[arm.name]:
            rows.append({"model": arm.label, "status": status[arm.name]})
            continue
        run_dir = ctx.run_dir(arm)
        points = []
        for step, path in checkpoint_steps(ctx, arm):
            def compute(path=path):
                d = load(path, device=ctx.device)
                s = sample_images(d, ctx.n, seed=ctx.seed, final_level=True)
                without = judged(meter, s["before_denoising"])
                return {"step": d.checkpoint_step, "ema": d.uses_ema, "n": ctx.n, **judged(meter, s["samples"]),
                        "fd_without_denoising": without["fd"], "fds_without_denoising": without["fds"]}

            points.append(measured(run_dir, f"{NAME}_step{step}_n{ctx.n}_seed{ctx.seed}{judges_tag(meter)}",
                                   compute))
            ctx.say(f"    {arm.label} step {step}: {meter.name} {points[-1]['fd']:.2f} "
                    f"(without denoising {points[-1]['fd_without_denoising']:.2f})")
        curves[arm.label] = points
        best = min(points, key=lambda p: p["fd"])
        best_raw = min(points, key=lambda p: p["fd_without_denoising"])
        rows.append({"model": arm.label, "best_fd": best["fd"], "best_step": best["step"],
                     "best_fd_without_denoising": best_raw["fd_without_denoising"],
                     "best_step_without_denoising": best_raw["step"], "final_fd": points[-1]["fd"],
                     "final_fd_without_denoising": points[-1]["fd_without_denoising"], "status": "trained",
                     "final_fds": points[-1]["fds"],
                     "final_fds_without_denoising": points[-1]["fds_without_denoising"]})
    write_csv(ctx.folder / f"{NAME}.csv", [{"model": m, **{k: v for k, v in p.items() if not k.startswith("fds")}}
                                           for m, pts in curves.items() for p in pts])
    with figure(ctx.folder / f"{NAME}.png", size=(7.5, 4.5)) as ax:
        for i, (label, pts) in enumerate(curves.items()):
            color = f"C{i}"
            ax.plot([p["step"] for p in pts], [p["fd"] for p in pts], "o-", color=color, label=label)
            ax.plot([p["step"] for p in pts], [p["fd_without_denoising"] for p in pts], "x--", color=color, alpha=0.6)
        ax.set(xlabel="training step", ylabel=f"{meter.name} ({ctx.n} samples)", yscale="log",
               title="NCSNv2 techniques: FD against the step (dashed: without the final denoising step)")
        ax.legend()
        ax.grid(alpha=0.3)
    others = other_judges(meter)
    table = markdown_table(
        ["Model", f"best {meter.name} (step)", "best without denoising (step)", "final", "final without denoising",
         *[f"{o}: final (without denoising)" for o in others]],
        [[r["model"], f"{r['best_fd']:.2f} ({r['best_step']})",
          f"{r['best_fd_without_denoising']:.2f} ({r['best_step_without_denoising']})", r["final_fd"],
          r["final_fd_without_denoising"],
          *[f"{r['final_fds'][o]:.2f} ({r['final_fds_without_denoising'][o]:.2f})" for o in others]]
         if r["status"] == "trained" else [r["model"], r["status"], "", "", "", *["" for _ in others]]
         for r in rows])
    body = (f"Techniques 1, 2, 4 on the data: sigma_1 = {techniques['sigma_begin']}, L = {techniques['num_levels']}, "
            f"step_lr = {techniques['step_lr']} at T = {techniques['n_steps_each']}; technique 5: EMA "
            f"{techniques['ema_decay']}. {ctx.steps} steps each; {meter.name} of {ctx.n} samples against "
            f"{meter.ref.description} ({meter.ref.n} images) at {ctx.checkpoints} checkpoints.\n\n{table}\n"
            f"![FD against the step]({NAME}.png)\n")
    write_report(ctx, NAME, TITLE, body, {"techniques": techniques, "rows": rows, "curves": curves,
                                          "measure": meter.describe()}, command)
    return {"rows": rows, "curves": curves}
