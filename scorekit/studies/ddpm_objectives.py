"""DDPM's objective ablation (Ho et al. 2020, Table 2): what the network predicts (the posterior mean ~mu or
the noise eps) crossed with the objective (the true variational bound L with a learned diagonal or a fixed
isotropic variance, or the unweighted MSE: ||~mu - ~mu_theta||^2, or L_simple for eps). The learned
diagonal variance is the network's log-variance output trained with the true bound (the original
diffusion model with a modern network). FD of samples and bits/dim of the bound on test images per row;
a row whose training diverges is reported as unstable, as in the paper."""

from __future__ import annotations

from .runner import (
    Arm,
    Context,
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

NAME = "ddpm-objectives"
DEFAULT_BASE, DEFAULT_STEPS = "ddpm-digits", 1200
TITLE = "DDPM's objectives (Table 2)"
BPD_IMAGES = 100

ROWS = [  # (group, row label, arm name, overrides)
    ("~μ prediction (baseline)", "L, learned diagonal Σ", "mean_l_learned",
     ["model.output=mean", "model.variance=learned", "training.loss=kl"]),
    ("~μ prediction (baseline)", "L, fixed isotropic Σ", "mean_l_fixed",
     ["model.output=mean", "model.variance=fixedlarge", "training.loss=kl"]),
    ("~μ prediction (baseline)", "‖~μ − ~μθ‖²", "mean_mse",
     ["model.output=mean", "model.variance=fixedlarge", "training.loss=mse"]),
    ("ε prediction (ours)", "L, learned diagonal Σ", "eps_l_learned",
     ["model.output=eps", "model.variance=learned", "training.loss=kl"]),
    ("ε prediction (ours)", "L, fixed isotropic Σ", "eps_l_fixed",
     ["model.output=eps", "model.variance=fixedlarge", "training.loss=kl"]),
    ("ε prediction (ours)", "‖ε̃ − εθ‖² (L_simple)", "eps_simple",
     ["model.output=eps", "model.variance=fixedlarge", "training.loss=mse"]),
]


def check(cfg) -> None:
    from ..errors import ScorekitError

    if cfg.family != "ddpm":
        raise ScorekitError(f"--base {cfg.name}: DDPM's objective ablation needs a DDPM preset (e.g. ddpm-digits)")


def run(ctx: Context, command: str) -> dict:
    from ..evaluation.bpd import bits_per_dim
    from ..run import load

    base = ctx.config(Arm("base", "base"))
    arms = [Arm(name, f"{group.split(' (')[0]}, {label}", overrides) for group, label, name, overrides in ROWS]
    status = train_arms(ctx, arms)
    meter = ctx.meter(base)
    rows = []
    for (group, label, name, _), arm in zip(ROWS, arms):
        row = {"group": group, "objective": label, "arm": name, "status": status[name] or "trained"}
        if not status[name]:
            def compute(arm=arm):
                d = load(ctx.run_dir(arm), device=ctx.device)
                fds = judged(meter, sample_images(d, ctx.n, seed=ctx.seed)["samples"])
                bpd = bits_per_dim(d, split="test", n=BPD_IMAGES, seed=ctx.seed)
                return {"step": d.checkpoint_step, "n": ctx.n, **fds, "bpd": bpd["bpd"], "bpd_sem": bpd["bpd_sem"],
                        "bpd_images": bpd["n"]}

            row.update(measured(ctx.run_dir(arm), f"{NAME}_n{ctx.n}_seed{ctx.seed}{judges_tag(meter)}", compute))
            ctx.say(f"    {label} ({group}): {meter.name} {row['fd']:.2f}, bits/dim {row['bpd']:.3f}")
        rows.append(row)
    write_csv(ctx.folder / f"{NAME}.csv", [{k: v for k, v in r.items() if k != "fds"} for r in rows])
    others = other_judges(meter)
    table_rows, last_group = [], None
    for r in rows:
        if r["group"] != last_group:
            table_rows.append([f"**{r['group']}**", "", *["" for _ in others], ""])
            last_group = r["group"]
        if r["status"] == "trained":
            table_rows.append([r["objective"], r["fd"], *[r["fds"][o] for o in others],
                               f"{r['bpd']:.3f} ± {r['bpd_sem']:.3f}"])
        else:
            table_rows.append([r["objective"], f"unstable ({r['status']})", *["–" for _ in others], "–"])
    table = markdown_table(["Objective", f"{meter.name}", *others, "bits/dim (test)"], table_rows)
    body = (f"Each row trains {ctx.base} for {ctx.steps} steps with the objective named; {meter.name} of {ctx.n} "
            f"samples (the preset's sampler, EMA weights) against {meter.ref.description}; bits/dim is the full "
            f"variational bound on {BPD_IMAGES} test images.\n\n{table}")
    write_report(ctx, NAME, TITLE, body, {"rows": rows, "measure": meter.describe()}, command)
    return {"rows": rows}
