"""Flow matching on the digits: the straight path (fm-digits) with uniform against SD3's logit-normal training
times, beside DDPM's recipe (the main job, ddpm-digits) and EDM's (edm-digits) on the same network, data, batch and
number of steps. Each run at its preset's default sampler: every judge's FD over SEEDS sample seeds with its 95%
interval and as a ratio to edm-digits' (the issue's target: fm-digits no worse at <= 35 network evaluations,
trained in <= 1.1x its time), training time from each run's logged throughput (one run after another on the same
machine), and the probability-flow ODE's bits/dim on test digits (Hutchinson's trace, uniform dequantisation).
Reflow and MeanFlow arms are not part of this study yet."""

from __future__ import annotations

from .runner import (
    Arm,
    Context,
    fd_text,
    markdown_table,
    measured,
    seeded_fd,
    train_arms,
    training_cost,
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


def check(cfg) -> None:
    from ..errors import ScorekitError

    if cfg.data.dataset != "digits":
        raise ScorekitError(f"--base {cfg.name}: the flows study compares the digits presets (fm-digits)")


def run(ctx: Context, command: str) -> dict:
    from ..evaluation.bpd import bits_per_dim
    from ..metrics.intervals import fmt_interval, ratio_interval, verdict
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
                + ", ".join(f"{name} {fd_text(j)}" for name, j in r["judges"].items())
                + f", ODE bits/dim {b['bpd']:.3f}")
    ref = next(r for r in rows if r["arm"] == REFERENCE)
    for r in rows:
        r["time_vs_edm"] = r["train_s"] / ref["train_s"]
        for name in meter.names:
            ratio, lo, hi = ratio_interval(r["judges"][name]["values"], ref["judges"][name]["values"])
            r["judges"][name].update(ratio=ratio, ratio_low=lo, ratio_high=hi)
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
            cells += [fd_text(j), fmt_interval(j["ratio"], j["ratio_low"], j["ratio_high"])]
        cells += [f"{r['train_s']:.0f}", f"{r['time_vs_edm']:.2f}", f"{r['bpd']:.3f} ± {r['bpd_sem']:.3f}"]
        body_rows.append(cells)
    fm = next(r for r in rows if r["arm"] == "fm")
    says = [f"{name} {fmt_interval(j['ratio'], j['ratio_low'], j['ratio_high'])} "
            f"({verdict(j['ratio_low'], j['ratio_high'], TARGET)})" for name, j in fm["judges"].items()]
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
    payload = {"rows": rows, "measure": meter.describe(), "seeds": SEEDS}
    write_report(ctx, NAME, TITLE, body, payload, command)
    return payload
