"""Training recipes at equal training steps (EDM, Karras et al. 2022; EDM2, Karras et al. 2024): the base
preset's own recipe, EDM's preconditioning and loss, EDM + non-leaky augmentation, the same two on a
300-image subset, the NCSNv2 digits network with its own recipe and with EDM's, and post-hoc EMA: FD against
sigma_rel reconstructed from one run's snapshots beside EMAs of the same training tracked one by one.
Every FD is the mean (and spread) over SEEDS sample seeds; network evaluations (NFE) are counted."""

from __future__ import annotations

import numpy as np

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

NAME = "recipes"
DEFAULT_BASE, DEFAULT_STEPS = "ddpm-digits", 1200
TITLE = "Training recipes: DDPM's, EDM's loss, augmentation, post-hoc EMA"
SEEDS = 3
SUBSET = 300  # images of the small-data arms
AUGMENT = 0.15  # probability of each transform
NCSN_BASE = "ncsnv2-digits"
DIRECT = (0.03, 0.05, 0.075, 0.10, 0.15, 0.20)  # EMAs tracked one by one (the same training trajectory)
SWEEP = (0.02, 0.03, 0.04, 0.05, 0.075, 0.10, 0.13, 0.15, 0.20, 0.25)
HEUN = {"schedule": "karras"}


def edm(sigma_data: float = 0.5) -> list[str]:
    return ["model.precond=edm", "training.loss=edm", "model.output=x0", f"model.sigma_data={sigma_data}",
            "sampling.sampler=heun", "sampling.steps=18", "sampling.schedule=karras", "sampling.clip_denoised=false"]


def arms(steps: int) -> list[Arm]:
    snap = [f"training.snapshot_every={max(1, steps // 12)}"]
    return [
        Arm("base", "the base preset's recipe"),
        Arm("edm", "EDM preconditioning and loss", edm() + snap),
        Arm("edm_direct", "EDM, EMAs tracked one by one", edm() + [f"training.snapshot_every={steps}",
                                                                    f"training.phema_sigma_rel={list(DIRECT)}"]),
        Arm("edm_aug", f"EDM + augmentation p={AUGMENT}", edm() + [f"data.augment={AUGMENT}"]),
        Arm("edm_300", f"EDM, {SUBSET} images", edm() + [f"data.max_images={SUBSET}"]),
        Arm("edm_300_aug", f"EDM + augmentation, {SUBSET} images", edm() + [f"data.max_images={SUBSET}",
                                                                           f"data.augment={AUGMENT}"]),
        Arm("ncsnv2", f"{NCSN_BASE}'s own recipe", base=NCSN_BASE),
        # the VE process's data are in [0, 1]: sigma_data 0.25 is EDM's 0.5 for data in [-1, 1]
        Arm("ncsnv2_edm", f"{NCSN_BASE}'s network, EDM loss", edm(0.25), base=NCSN_BASE),
    ]


def samplers(cfg) -> list[tuple[str, dict]]:
    """The (sampler, options) pairs measured for an arm: its own first, then the ancestral sampler at 250 and 50
    steps (VP processes) and EDM's Heun at 18, 9 and 5 steps (35, 17 and 9 evaluations)."""
    sc, T = cfg.sampling, cfg.process.num_timesteps
    out = [(sc.sampler, {"steps": sc.steps} if sc.steps else {})]
    extra = [("ancestral", {"steps": min(250, T), "schedule": "uniform"}),  # DDPM's respacing, whatever the preset's
             ("ancestral", {"steps": min(50, T), "schedule": "uniform"})] \
        if cfg.process.kind == "vp" else []
    for name, opts in extra + [("heun", {"steps": s, **HEUN}) for s in (18, 9, 5)]:
        if not any(name == n and opts["steps"] == o.get("steps") for n, o in out):
            out.append((name, opts))
    return out


def check(cfg) -> None:
    from ..errors import ScorekitError

    if cfg.family != "ddpm" or cfg.data.dataset != "digits":
        raise ScorekitError(f"--base {cfg.name}: the recipes study compares on the digits from a DDPM preset "
                            "(ddpm-digits)")


def fd_seeds(ctx: Context, denoiser, meter, run, key: str, sampler: str, options: dict) -> dict:
    """FD over SEEDS sample seeds (each kept in the run's eval/ folder) and the NFE per image."""
    def compute(seed: int) -> dict:
        denoiser.nfe = 0
        out = sample_images(denoiser, ctx.n, seed=seed, sampler=sampler, options=options, batch_size=500)
        batches = -(-ctx.n // 500)
        return {**judged(meter, out["samples"]), "nfe": denoiser.nfe / batches, "n": ctx.n, "seed": seed}

    opts = "_".join(f"{k}{v}" for k, v in sorted(options.items()))
    rows = [measured(run, f"{NAME}_{key}_{sampler}_{opts}_n{ctx.n}_seed{s}{judges_tag(meter)}", lambda s=s: compute(s))
            for s in range(ctx.seed, ctx.seed + SEEDS)]
    fds = [r["fd"] for r in rows]
    others = {o: [r["fds"][o] for r in rows] for o in other_judges(meter)}
    return {"fd": float(np.mean(fds)), "fd_std": float(np.std(fds, ddof=1)), "fds": fds, "nfe": rows[0]["nfe"],
            "others": {o: {"fd": float(np.mean(v)), "fd_std": float(np.std(v, ddof=1))} for o, v in others.items()}}


def train_seconds(run, batch_size: int) -> float:
    """Training time from the logged throughput (images/s over each logging window)."""
    import json

    total, last = 0.0, 0
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "images_per_s" in row and row["images_per_s"] > 0:
            total += (row["step"] - last) * batch_size / row["images_per_s"]
            last = row["step"]
    return total


def run(ctx: Context, command: str) -> dict:
    from ..ema.power import list_snapshots, load_snapshot, reconstruct
    from ..errors import ScorekitError
    from ..run import load

    all_arms = arms(ctx.steps)
    status = train_arms(ctx, all_arms)
    failed = {k: v for k, v in status.items() if v}
    if failed:
        raise ScorekitError(f"runs stopped: {failed}")
    meter = ctx.meter(ctx.config(all_arms[0]))
    rows = []
    for arm in all_arms:
        if arm.name == "edm_direct":
            continue
        cfg, run_dir = ctx.config(arm), ctx.run_dir(arm)
        d = load(run_dir, device=ctx.device)
        secs = train_seconds(run_dir, cfg.training.batch_size)
        for sampler, options in samplers(cfg):
            r = fd_seeds(ctx, d, meter, run_dir, "ema", sampler, options)
            label = f"{sampler} {options.get('steps', cfg.sampling.steps or '')}".strip()
            rows.append({"arm": arm.name, "recipe": arm.label, "sampler": label, "train_s": secs, **r})
            ctx.say(f"    {arm.label}, {label}: NFE {r['nfe']:.0f}, {meter.name} {r['fd']:.2f} ± {r['fd_std']:.2f}")
    # post-hoc EMA: the sweep from the edm arm's snapshots, the direct EMAs from the edm_direct arm
    edm_run, direct_run = ctx.run_dir(all_arms[1]), ctx.run_dir(all_arms[2])
    d = load(edm_run, device=ctx.device)
    heun18 = ("heun", {"steps": 18, **HEUN})
    sweep = []
    for r in SWEEP:
        d.net.load_state_dict(reconstruct(edm_run / "checkpoints" / "phema", r)[0])
        sweep.append({"sigma_rel": r, **fd_seeds(ctx, d, meter, edm_run, f"posthoc{r:g}", *heun18)})
        ctx.say(f"    post-hoc EMA sigma_rel {r:g}: {meter.name} {sweep[-1]['fd']:.2f} ± {sweep[-1]['fd_std']:.2f}")
    final = list_snapshots(direct_run / "checkpoints" / "phema")[-1][1]
    direct = []
    for i, r in enumerate(DIRECT):
        d.net.load_state_dict(load_snapshot(final, i)[0])
        direct.append({"sigma_rel": r, **fd_seeds(ctx, d, meter, direct_run, f"direct{r:g}", *heun18)})
        ctx.say(f"    EMA sigma_rel {r:g} tracked directly: {meter.name} {direct[-1]['fd']:.2f}")
    return _report(ctx, command, meter, rows, sweep, direct)


def _report(ctx: Context, command: str, meter, rows: list[dict], sweep: list[dict], direct: list[dict]) -> dict:
    from ..evaluation.plots import figure

    write_csv(ctx.folder / f"{NAME}.csv", [{k: v for k, v in r.items() if k not in ("fds", "others")} for r in rows])
    with figure(ctx.folder / f"{NAME}.png", ncols=2, size=(12, 4.4)) as (ax, ax2):
        for i, arm in enumerate(dict.fromkeys(r["arm"] for r in rows)):
            pts = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["nfe"])
            heun = [r for r in pts if r["sampler"].startswith("heun")]
            others = [r for r in pts if not r["sampler"].startswith("heun")]
            ax.errorbar([r["nfe"] for r in heun], [r["fd"] for r in heun], yerr=[r["fd_std"] for r in heun],
                        fmt="o-", color=f"C{i}", capsize=3, label=pts[0]["recipe"])
            ax.errorbar([r["nfe"] for r in others], [r["fd"] for r in others], yerr=[r["fd_std"] for r in others],
                        fmt="s", color=f"C{i}", capsize=3)
        ax.set(xscale="log", yscale="log", xlabel="network evaluations per image",
               ylabel=f"{meter.name} ({ctx.n} samples, mean of {SEEDS} seeds)",
               title="FD against NFE (lines: Heun; squares: the arm's own / ancestral)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax2.errorbar([r["sigma_rel"] for r in sweep], [r["fd"] for r in sweep], yerr=[r["fd_std"] for r in sweep],
                     fmt="o-", capsize=3, label="post-hoc (from the 0.05 / 0.10 snapshots)")
        ax2.errorbar([r["sigma_rel"] for r in direct], [r["fd"] for r in direct], yerr=[r["fd_std"] for r in direct],
                     fmt="s", capsize=3, label="tracked one by one")
        ax2.set(xscale="log", xlabel="sigma_rel", ylabel=meter.name, title="EMA length chosen after training (Heun 18)")
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=8)
    others = other_judges(meter)
    table = markdown_table(["Recipe", "Sampler", "NFE", f"{meter.name} (mean ± sd)",
                            *[f"{o} (mean ± sd)" for o in others], "training s"],
                           [[r["recipe"], r["sampler"], f"{r['nfe']:.0f}", f"{r['fd']:.2f} ± {r['fd_std']:.2f}",
                             *[f"{r['others'][o]['fd']:.2f} ± {r['others'][o]['fd_std']:.2f}" for o in others],
                             f"{r['train_s']:.0f}"] for r in rows])
    ema_table = markdown_table(["sigma_rel", "post-hoc", "tracked directly"],
                               [[f"{s:g}", _cell(sweep, s), _cell(direct, s)] for s in sorted({*SWEEP, *DIRECT})])
    best_post, best_direct = min(sweep, key=lambda r: r["fd"]), min(direct, key=lambda r: r["fd"])
    own = {(r["arm"], r["sampler"]): r for r in rows}
    base_ref = own.get(("base", "ancestral 250"))
    edm_heun = own.get(("edm", "heun 18"))
    small = own.get(("edm_300", "heun 18")), own.get(("edm_300_aug", "heun 18"))
    findings = [
        f"- EDM (Heun 18, {edm_heun['nfe']:.0f} NFE): {edm_heun['fd']:.2f} ± {edm_heun['fd_std']:.2f} against the base "
        f"recipe's ancestral 250 steps: {base_ref['fd']:.2f} ± {base_ref['fd_std']:.2f}; training "
        f"{edm_heun['train_s']:.0f} s against {base_ref['train_s']:.0f} s." if base_ref and edm_heun else "",
        f"- {SUBSET} images: augmentation {small[1]['fd']:.2f} ± {small[1]['fd_std']:.2f} against none "
        f"{small[0]['fd']:.2f} ± {small[0]['fd_std']:.2f}." if all(small) else "",
        f"- Post-hoc EMA: best sigma_rel {best_post['sigma_rel']:g}, {best_post['fd']:.2f} ± "
        f"{best_post['fd_std']:.2f}; best tracked one by one: {best_direct['sigma_rel']:g}, "
        f"{best_direct['fd']:.2f} ± {best_direct['fd_std']:.2f} "
        f"(no extra training for the sweep: {len(SWEEP)} EMA lengths from one run's snapshots).",
    ]
    body = (f"Every run trains {ctx.steps} steps; {meter.name} of {ctx.n} samples against {meter.ref.description}, "
            f"mean ± standard deviation over {SEEDS} sample seeds; NFE per image counted.\n\n"
            + "\n".join(f for f in findings if f) + f"\n\n{table}\n![FD against NFE]({NAME}.png)\n\n"
            f"### Post-hoc EMA (Heun 18)\n\n{ema_table}\n")
    payload = {"rows": rows, "posthoc": sweep, "direct": direct, "measure": meter.describe(), "seeds": SEEDS}
    write_report(ctx, NAME, TITLE, body, payload, command)
    return payload


def _cell(rows: list[dict], s: float) -> str:
    hit = [r for r in rows if abs(r["sigma_rel"] - s) < 1e-9]
    return f"{hit[0]['fd']:.2f} ± {hit[0]['fd_std']:.2f}" if hit else "–"
