"""Autoguidance (Karras et al. 2024) on an unconditional digits model, and every sampler at equal cost.

Part 1: the run (the base preset, keeping its guide at GUIDE_AT of its steps) autoguided, D_w = D_G + w (D - D_G), by
each kind of guide a run can have cheaply: the EMA weights kept at GUIDE_AT of the steps (training.guide_at, no
extra training), the run's raw weights at the end (the shortest EMA profile, no extra training), and a smaller
network (half the channels) trained for half the steps (EDM2's degradation: less capacity and less training). FD
(every judge, SEEDS sample seeds, 95% intervals) against the weight w, without and with the guidance interval
(Kynkaanniemi et al. 2024), at the run's default sampler, as a ratio to the unguided run. The best guide and weight
(lowest worst-judge ratio) is measured again on VERDICT_SEEDS seeds for the issue's target (at most 0.85x).

Part 2: FD against network evaluations (BUDGETS) for every sampler that runs on the model, at its budget plan
(:mod:`scorekit.samplers.budget`), on the same run."""

from __future__ import annotations

from .runner import (
    Arm,
    Context,
    fd_text,
    judges_text,
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

NAME = "autoguidance"
DEFAULT_BASE, DEFAULT_STEPS, DEFAULT_N = "ddpm-digits", 1200, 2000
TITLE = "Autoguidance and the samplers at equal cost"
SEEDS, VERDICT_SEEDS = 3, 5
GUIDE_AT = 0.6
WEIGHTS = (1.15, 1.3, 1.6, 2.0, 3.0)
INTERVAL, INTERVAL_WEIGHTS = (0.28, 5.42), (1.3, 2.0)  # EDM2-S's guidance interval in sigma (Kynkaanniemi et al.)
BUDGETS = (3, 5, 8, 10, 20)
SAMPLERS = ("ancestral", "ddim", "euler", "heun", "dpm2m", "euler_ancestral", "edm_stochastic", "dpm2m_sde",
            "restart", "ipndm", "unipc", "dpm3m_sde")
TARGET = 0.85
GUIDES = {"kept": f"the EMA weights kept at {GUIDE_AT:g} of the steps (training.guide_at)",
          "raw": "the run's raw weights at the end (no EMA)",
          "small": "a smaller network (half the channels), half the steps"}


def check(cfg) -> None:
    from ..errors import ScorekitError

    if cfg.model.num_classes or cfg.model.consistency or cfg.training.ema_decay <= 0:
        raise ScorekitError(f"--base {cfg.name}: the autoguidance study guides an unconditional model with EMA "
                            "weights (e.g. ddpm-digits, ncsnv2-unet-digits)")


def run(ctx: Context, command: str) -> dict:
    from ..model.autoguidance import autoguided
    from ..run import RunDir, load

    base = ctx.config(Arm("main", "main"))
    half = ([f"model.ngf={max(4, base.model.ngf // 2)}"] if base.model.arch == "ncsnv2" else
            [f"model.ch={max(4, base.model.ch // 2)}", f"model.norm_groups={max(1, base.model.norm_groups // 2)}"])
    arms = [Arm("main", f"the run (keeps its guide at {GUIDE_AT:g} of the steps)", [f"training.guide_at={GUIDE_AT}"]),
            Arm("small", GUIDES["small"], [*half, f"training.steps={max(1, ctx.steps // 2)}", "training.guide_at=0",
                                           f"training.checkpoint_every={max(1, ctx.steps // 2)}"])]
    status = train_arms(ctx, arms)
    stopped = [a.label for a in arms if status[a.name]]
    if stopped:
        from ..errors import ScorekitError

        raise ScorekitError(f"the autoguidance study needs every run; stopped: {', '.join(stopped)}")
    main_dir, small_dir = ctx.run_dir(arms[0]), ctx.run_dir(arms[1])
    d = load(main_dir, device=ctx.device)
    guides = {"kept": load(RunDir(main_dir).guide_path, device=ctx.device),
              "raw": load(main_dir, ema=False, device=ctx.device), "small": load(small_dir, device=ctx.device)}
    cost = {"kept": 0.0, "raw": 0.0,
            "small": training_cost(small_dir, guides["small"].config)["train_s"] / training_cost(main_dir, d.config)[
                "train_s"]}
    meter = ctx.meter(d.config)
    sc = d.config.sampling
    sampler, options = sc.sampler, ({"steps": sc.steps} if sc.steps else {})
    sampler_text = f"{sampler} {sc.steps}" if sc.steps else sampler
    (ctx.folder / "grids").mkdir(parents=True, exist_ok=True)

    def guided_key(kind: str, w: float, interval) -> str:
        return f"{NAME}_{kind}_w{w:g}" + (f"_i{interval[0]:g}-{interval[1]:g}" if interval else "")

    none = seeded_fd(ctx, f"{NAME}_none", d, meter, main_dir, sampler, options, SEEDS,
                     ctx.folder / "grids" / "none.png")
    ctx.say(f"    unguided ({sampler_text}): {judges_text(none)}")
    rows = []
    for kind, guide in guides.items():
        for interval, weights in ((None, WEIGHTS), (INTERVAL, INTERVAL_WEIGHTS)):
            for w in weights:
                g = autoguided(d, guide, w, interval)
                key = guided_key(kind, w, interval)
                r = with_ratios(seeded_fd(ctx, key, g, meter, main_dir, sampler, options, SEEDS,
                                     ctx.folder / "grids" / f"{key[len(NAME) + 1:]}.png"), none)
                rows.append({"guide": kind, "weight": w, "interval": list(interval) if interval else None,
                             "cost": cost[kind], **r})
                ctx.say(f"    {kind} w={w:g}{' interval ' + str(interval) if interval else ''}: {judges_text(r)}")
    best = min(rows, key=_worse)
    none5 = seeded_fd(ctx, f"{NAME}_none", d, meter, main_dir, sampler, options, VERDICT_SEEDS)
    g = autoguided(d, guides[best["guide"]], best["weight"], tuple(best["interval"]) if best["interval"] else None)
    chosen = with_ratios(seeded_fd(ctx, guided_key(best["guide"], best["weight"], best["interval"]), g, meter, main_dir,
                              sampler, options, VERDICT_SEEDS), none5)
    ctx.say(f"    chosen {best['guide']} w={best['weight']:g} on {VERDICT_SEEDS} seeds: {judges_text(chosen)}")
    record = _record_choice(main_dir, rows, sampler)
    ctx.say(f"    recorded for --guide self: w={record['guidance']:g}")

    sweep = []
    for name in SAMPLERS:
        from ..samplers import DISCRETE, unhonoured
        from ..samplers.budget import options_for, plan

        if unhonoured(d, name) is not None:
            continue
        for nfe in BUDGETS:
            opts = plan(name, nfe, d.process.num_levels)
            if opts is None:
                continue
            opts = {**options_for(d, opts), "schedule": "uniform" if name in DISCRETE else sc.schedule}
            r = seeded_fd(ctx, f"{NAME}_nfe{nfe}", d, meter, main_dir, name, opts, SEEDS)
            sweep.append({"sampler": name, "budget": nfe, "schedule": opts["schedule"], **r})
            ctx.say(f"    {name} at {nfe} NFE ({r['nfe']:.0f} spent): {judges_text(r)}")

    _figures(ctx, meter, none, rows, sweep)
    flat = [{"guide": r["guide"], "weight": r["weight"], "interval": r["interval"], "cost": r["cost"],
             **{f"{n.split()[0].lower()}_{k}": j[k] for n, j in r["judges"].items()
                for k in ("fd", "low", "high", "ratio", "ratio_low", "ratio_high")}} for r in rows]
    write_csv(ctx.folder / f"{NAME}.csv", flat)
    write_csv(ctx.folder / f"{NAME}_samplers.csv", [
        {"sampler": r["sampler"], "budget": r["budget"], "nfe": r["nfe"], "schedule": r["schedule"],
         **{f"{n.split()[0].lower()}_{k}": j[k] for n, j in r["judges"].items() for k in ("fd", "low", "high")}}
        for r in sweep])

    header = ["Guide", "w", "interval (sigma)", "guide's training / the run's"]
    for name in meter.names:
        header += [f"{name} [95% CI]", "/ unguided [95% CI]"]
    table = [["none", "1", "", "", *[c for j in none["judges"].values() for c in (fd_text(j), "1")]]]
    for r in rows:
        table.append([r["guide"], f"{r['weight']:g}", f"({r['interval'][0]:g}, {r['interval'][1]:g}]"
                      if r["interval"] else "everywhere", f"{r['cost']:.2f}",
                      *[c for j in r["judges"].values()
                        for c in (fd_text(j), ratio_text(j))]])
    says = [verdict_text(n, j, TARGET) for n, j in chosen["judges"].items()]
    nfe_header = ["Sampler", "schedule", *[f"{b} NFE" for b in BUDGETS]]
    nfe_rows = []
    for name in dict.fromkeys(r["sampler"] for r in sweep):
        mine = {r["budget"]: r for r in sweep if r["sampler"] == name}
        nfe_rows.append([name, next(iter(mine.values()))["schedule"],
                         *[" / ".join(f"{j['fd']:.1f}" for j in mine[b]["judges"].values()) if b in mine else "-"
                           for b in BUDGETS]])
    best_at = {b: min((r for r in sweep if r["budget"] == b),
                      key=lambda r: max(j["fd"] / none["judges"][n]["fd"] for n, j in r["judges"].items()))
               for b in BUDGETS if any(r["budget"] == b for r in sweep)}
    body = (f"{ctx.base}, {ctx.steps} steps, keeping its guide at {GUIDE_AT:g} of them. Guides: "
            + "; ".join(f"**{k}**: {v}" for k, v in GUIDES.items())
            + f". Every point: {' and '.join(meter.names)} of {ctx.n} samples at the run's sampler ({sampler} "
            f"{sc.steps or ''}, {sc.schedule}) against {meter.ref.description}, the mean over {SEEDS} sample seeds "
            f"with its 95% t interval, and the ratio to the unguided run's with the interval of a ratio of means. "
            f"Guide training time from the runs' logged throughput. Grids: grids/.\n\n"
            f"{markdown_table(header, table)}\n"
            f"- The best guide and weight (lowest worse-judge ratio on {SEEDS} seeds): {best['guide']}, w = "
            f"{best['weight']:g}{', interval ' + str(tuple(best['interval'])) if best['interval'] else ''}; on "
            f"{VERDICT_SEEDS} seeds against the unguided run (target at most {TARGET:g}x): " + "; ".join(says) + "\n"
            f"- Recorded for `--guide self` (RUN/checkpoints/guide.json, the kept guide's best weight; 1 when no "
            f"weight lowered both judges' FD): w = {record['guidance']:g}\n\n"
            f"![autoguidance]({NAME}.png)\n\n"
            f"## FD against network evaluations, every sampler\n\nThe same run, unguided; each sampler at the "
            f"options that spend at most the budget (scorekit.samplers.budget.plan; Heun-type samplers spend an odd "
            f"number), the run's schedule ({sc.schedule}; the discrete samplers on DDIM's uniform levels); cells: "
            f"{' / '.join(meter.names)}, the mean over {SEEDS} seeds (intervals in {NAME}.json).\n\n"
            f"{markdown_table(nfe_header, nfe_rows)}\n"
            + "".join(f"- Best at {b} NFE: {r['sampler']}, " + judges_text(r) + " (the unguided default sampler: "
                      + ", ".join(f"{n} {j['fd']:.2f}" for n, j in none["judges"].items()) + ")\n"
                      for b, r in best_at.items())
            + f"\n![samplers]({NAME}_samplers.png)\n")
    payload = {"none": none, "rows": rows, "chosen": {**chosen, "guide": best["guide"], "weight": best["weight"],
                                                       "interval": best["interval"]},
               "sweep": sweep, "measure": meter.describe(), "seeds": SEEDS, "verdict_seeds": VERDICT_SEEDS}
    write_report(ctx, NAME, f"{TITLE}: {ctx.base}", body, payload, command)
    return payload


def _worse(r: dict) -> float:
    """A row's worse-judge ratio to the unguided run."""
    return max(j["ratio"] for j in r["judges"].values())


def _record_choice(run, rows: list[dict], sampler: str) -> dict:
    """RUN/checkpoints/guide.json: the weight (and interval) that served the kept guide best (w = 1, unguided, when
    no weight lowered both judges' FD), read by ``--guide self`` without ``--guidance``."""
    import json

    from ..images import atomic_write_bytes
    from ..run import RunDir

    kept = min((r for r in rows if r["guide"] == "kept"), key=_worse)
    helps = _worse(kept) < 1
    record = {"guidance": kept["weight"] if helps else 1.0, "guidance_interval": kept["interval"] if helps else None,
              "measured_by": f"scorekit study {NAME}", "sampler": sampler, "seeds": SEEDS,
              "ratios": {n: [j["ratio"], j["ratio_low"], j["ratio_high"]] for n, j in kept["judges"].items()},
              "best_weight_tried": kept["weight"]}
    atomic_write_bytes(RunDir(run).guide_choice_path, (json.dumps(record, indent=2) + "\n").encode())
    return record


def _figures(ctx: Context, meter, none: dict, rows: list[dict], sweep: list[dict]) -> None:
    from ..evaluation.plots import figure

    names = meter.names
    with figure(ctx.folder / f"{NAME}.png", ncols=len(names), size=(6.5 * len(names), 4.5)) as axes:
        for ax, judge in zip(axes if len(names) > 1 else [axes], names):
            for kind in GUIDES:
                for interval, style in ((None, "o-"), (INTERVAL, "s--")):
                    pts = [(1.0, none["judges"][judge])] + [
                        (r["weight"], r["judges"][judge]) for r in rows
                        if r["guide"] == kind and (r["interval"] is not None) == (interval is not None)]
                    ax.errorbar([p[0] for p in pts], [p[1]["fd"] for p in pts],
                                yerr=[[p[1]["fd"] - (p[1]["low"] or p[1]["fd"]) for p in pts],
                                      [(p[1]["high"] or p[1]["fd"]) - p[1]["fd"] for p in pts]],
                                fmt=style, capsize=3, label=f"{kind}" + (" (interval)" if interval else ""))
            ax.set(xlabel="autoguidance weight w (1: unguided)", ylabel=f"{judge} ({ctx.n} samples)",
                   title=f"{judge} against w")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
    with figure(ctx.folder / f"{NAME}_samplers.png", ncols=len(names), size=(6.5 * len(names), 4.5)) as axes:
        for ax, judge in zip(axes if len(names) > 1 else [axes], names):
            for i, name in enumerate(dict.fromkeys(r["sampler"] for r in sweep)):  # past 10 colours: new marks
                pts = sorted((r["nfe"], r["judges"][judge]["fd"]) for r in sweep if r["sampler"] == name)
                ax.plot([p[0] for p in pts], [p[1] for p in pts], ("o-", "s--", "^:")[i // 10 % 3], label=name,
                        alpha=0.8)
            ax.axhline(none["judges"][judge]["fd"], color="k", ls="--", label="the run's default sampler")
            ax.set(xscale="log", yscale="log", xlabel="network evaluations (NFE)", ylabel=judge,
                   title=f"{judge} against NFE")
            ax.legend(fontsize=7, ncol=2)
            ax.grid(alpha=0.3)
