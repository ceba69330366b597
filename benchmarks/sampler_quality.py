"""Sample quality against cost: every sampler and schedule on the digits DDPM and NCSNv2 models.

    python benchmarks/sampler_quality.py --ddpm runs/digits --ncsn runs/ncsnv2-digits \
        [--n 2000] [--seeds 0,1,2] [--families ddpm,ncsnv2] [--tune]

For each family: the reference (DDPM: Algorithm 2 on all 1000 levels; NCSNv2: annealed Langevin, the best
of several steps per level) on every seed; a sweep of every sampler at 5, 10, 20 and 50 network
evaluations (NFE) with its default schedule, and at 10 and 20 NFE with each other schedule, on the first
seed; then the best configurations at <= 10 and <= 20 NFE on every seed (mean and spread). With --tune, a
schedule searched by ``scorekit tune-schedule`` (on seed 100, 256 samples) for the best samplers at 10
and 20 NFE joins the comparison. The measure is the digits proxy FD of N samples against the 300 test
digits. Writes benchmarks/results/sampler_quality.json and .png.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from _common import environment, write_json  # noqa: E402

from scorekit.evaluation.generate import samples_u8  # noqa: E402
from scorekit.metrics.proxy import proxy_metrics  # noqa: E402
from scorekit.rng import ImageRNG  # noqa: E402
from scorekit.run import load  # noqa: E402
from scorekit.samplers import DISCRETE, accepted_options, sample, sampling_options  # noqa: E402
from scorekit.samplers.budget import options_for, plan  # noqa: E402

BUDGETS = (5, 10, 20, 50)
SWEEP = ("ancestral", "ddim", "pc", "euler", "heun", "dpm2m", "euler_ancestral", "edm_stochastic", "dpm2m_sde",
         "restart")
DEFAULT_SCHEDULE = {"ancestral": "uniform", "pc": "uniform", "ddim": "uniform"}
OTHER_SCHEDULES = {"discrete": ("quad", "karras"), "sigma": ("logsnr", "uniform")}


def evaluate(denoiser, name: str, opts: dict, n: int, seed: int, schedule: str | None = None) -> dict:
    """Proxy FD of n samples with the run's sampling settings (x0 clipping, Langevin step size) unless overridden."""
    options = {**sampling_options(denoiser.config.sampling), **options_for(denoiser, opts)}
    options["schedule"] = schedule or options.get("schedule", "auto")
    denoiser.nfe = 0
    t0 = time.perf_counter()
    batches = [range(s, min(n, s + 500)) for s in range(0, n, 500)]
    x = torch.cat([sample(denoiser, name, (len(ix), *denoiser.image_shape), ImageRNG(seed, ix), **options)
                   for ix in batches])
    m = proxy_metrics(samples_u8(x, denoiser))
    shown = {k: (v if not isinstance(v, list) else "searched") for k, v in accepted_options(name, options).items()
             if v is not None and k not in ("clip_denoised", "denoise")}
    return {"sampler": name, "options": shown, "schedule": shown.get("schedule", "searched" if
            ("sigmas" in options or "timesteps" in options) else "default"), "nfe": denoiser.nfe // len(batches),
            "seed": seed, "proxy_fd": m["proxy_fd"], "floor": m["proxy_fd_floor"], "hog_fd": m["hog_fd"],
            "hog_floor": m["hog_fd_floor"],
            "seconds": round(time.perf_counter() - t0, 1)}


def over_seeds(denoiser, name, opts, n, seeds, schedule=None, first: dict | None = None) -> dict:
    rows = ([first] if first else []) + [evaluate(denoiser, name, opts, n, s, schedule) for s in seeds
                                         if not first or s != first["seed"]]
    fds, hogs = [r["proxy_fd"] for r in rows], [r["hog_fd"] for r in rows]
    return {**rows[0], "proxy_fd": statistics.mean(fds), "proxy_fd_std": statistics.stdev(fds) if len(fds) > 1 else 0.0,
            "per_seed": fds, "seeds": [r["seed"] for r in rows], "hog_fd": statistics.mean(hogs),
            "hog_fd_std": statistics.stdev(hogs) if len(hogs) > 1 else 0.0, "hog_per_seed": hogs}


def family_run(d, family: str, args) -> dict:
    levels = d.process.num_levels
    seeds = args.seeds
    log = lambda r: print(f"{family} {r['sampler']} {r['options']} NFE {r['nfe']}: FD {r['proxy_fd']:.2f}"  # noqa: E731
                          + (f" +- {r['proxy_fd_std']:.2f} ({len(r['per_seed'])} seeds)" if "per_seed" in r else "")
                          + f", HOG FD {r['hog_fd']:.2f}", flush=True)
    if family == "ddpm":
        references = [over_seeds(d, "ancestral", {"steps": levels}, args.n, seeds)]
    else:  # annealed Langevin with T steps per level, each with technique 4's step size for that T
        from scorekit.processes.techniques import step_size_for

        p = d.process
        gamma = (p.sigma_max / p.sigma_min) ** (1 / (levels - 1))
        references = [over_seeds(d, "langevin", {"n_steps_each": t,
                                                 "step_lr": float(f"{step_size_for(t, gamma, p.sigma_min):.3g}")},
                                 args.n, seeds) for t in (3, 5, 10)]
    for r in references:
        log(r)
    reference = min(references, key=lambda r: r["proxy_fd"])
    sweep = []
    for name in SWEEP:
        kind = "discrete" if name in DISCRETE else "sigma"
        for nfe in BUDGETS:
            opts = plan(name, nfe, levels)
            if opts is None:
                continue
            schedules = [None] + (list(OTHER_SCHEDULES[kind]) if nfe in (10, 20) else [])
            for sch in schedules:
                if name == "ddim" and sch == "uniform":
                    continue
                sweep.append(evaluate(d, name, opts, args.n, seeds[0], sch or DEFAULT_SCHEDULE.get(name, "karras")))
                log(sweep[-1])
    tuned = []
    best = {}
    for budget in (10, 20):
        pool = sorted((r for r in sweep if r["nfe"] <= budget), key=lambda r: r["proxy_fd"])
        best[budget] = [over_seeds(d, r["sampler"], {k: v for k, v in r["options"].items() if k != "schedule"},
                                   args.n, seeds, r["options"].get("schedule"), first=r) for r in pool[:3]]
        for r in best[budget]:
            log(r)
        if args.tune:
            from scorekit.evaluation.quality import FrechetMeter
            from scorekit.evaluation.schedule_search import search_schedule
            from scorekit.run import save_schedule

            top = best[budget][0]
            steps = top["options"].get("steps")
            done = any(t["sampler"] == top["sampler"] and t["options"].get("steps") == steps for t in tuned)
            if top["sampler"] not in ("langevin", "rk45") and steps and not done:
                meter = FrechetMeter(d.config)
                res = search_schedule(d, top["sampler"], steps, meter, n=256, seed=100, validate_seeds=())
                save_schedule(args.run_dirs[family], top["sampler"], steps, res, "proxy FD of 256 samples")
                key = f"{top['sampler']}:{steps}"
                d.schedules = {**(getattr(d, "schedules", None) or {}), key: {"schedule": res["schedule"]}}
                opts = {k: v for k, v in top["options"].items() if k != "schedule"}
                tuned.append(over_seeds(d, top["sampler"], opts, args.n, seeds, "auto"))
                log(tuned[-1])
    ranked = {b: min(best[b] + [t for t in tuned if t["nfe"] <= b], key=lambda r: r["proxy_fd"]) for b in (10, 20)}
    for b, r in ranked.items():
        print(f"{family}: best at <= {b} NFE: {r['sampler']} {r['options']} FD {r['proxy_fd']:.2f} +- "
              f"{r['proxy_fd_std']:.2f}; reference {reference['sampler']} FD {reference['proxy_fd']:.2f} +- "
              f"{reference['proxy_fd_std']:.2f} ({r['proxy_fd'] / reference['proxy_fd'] - 1:+.1%})", flush=True)
    return {"references": references, "reference": reference, "sweep": sweep, "best": best, "tuned": tuned,
            "ranked": ranked, "within_10_percent_at_20": ranked[20]["proxy_fd"] <= 1.1 * reference["proxy_fd"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ddpm", default="runs/digits", help="a trained ddpm-digits run")
    ap.add_argument("--ncsn", default="runs/ncsnv2-digits", help="a trained ncsnv2-digits run")
    ap.add_argument("--families", default="ddpm,ncsnv2")
    ap.add_argument("--n", type=int, default=2000, help="samples per point")
    ap.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1, 2])
    ap.add_argument("--tune", action="store_true", help="search schedules for the best samplers (saved in the runs)")
    ap.add_argument("--out", default="benchmarks/results/sampler_quality.json")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    args.run_dirs = {"ddpm": args.ddpm, "ncsnv2": args.ncsn}
    results = {}
    for family in args.families.split(","):
        results[family] = family_run(load(args.run_dirs[family]), family, args)
        results[family]["run"] = args.run_dirs[family]
        write_json(args.out, {"benchmark": "sampler_quality", "n": args.n, "seeds": args.seeds,
                              "environment": environment(torch.device("cpu")), "results": results})
    plot(Path(args.out).with_suffix(".png"), results)


def plot(path: Path, results: dict) -> None:
    from scorekit.evaluation.plots import figure

    with figure(path, ncols=len(results), size=(7.5 * len(results), 5.2)) as axes:
        for ax, (family, res) in zip(axes if len(results) > 1 else [axes], results.items()):
            by: dict[str, list] = {}
            for r in res["sweep"]:
                if r["options"].get("schedule") in (None, "karras", DEFAULT_SCHEDULE.get(r["sampler"])):
                    by.setdefault(r["sampler"], []).append((r["nfe"], r["proxy_fd"]))
            for name, pts in by.items():
                pts.sort()
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=name, alpha=0.8)
            for r in res["ranked"].values():
                ax.errorbar([r["nfe"]], [r["proxy_fd"]], yerr=[r["proxy_fd_std"]], fmt="*", color="k", markersize=12)
            ref = res["reference"]
            ax.axhline(ref["proxy_fd"], color="k", ls="--",
                       label=f"reference: {ref['sampler']} at {ref['nfe']} NFE ({ref['proxy_fd']:.1f})")
            ax.axhline(1.1 * ref["proxy_fd"], color="k", ls=":", alpha=0.5, label="reference + 10%")
            ax.axhline(ref["floor"], color="gray", ls="-.", label="real-vs-real floor")
            top = min(200.0, max(r["proxy_fd"] for r in res["sweep"]) * 1.05)
            ax.set(xscale="log", xlabel="network evaluations (NFE)", ylabel="proxy FD (2,000 samples)",
                   title=f"{family} digits: FD against NFE (default schedules; stars: best, mean of seeds)",
                   ylim=(0, top))
            ax.legend(fontsize=7, ncol=2)
            ax.grid(alpha=0.3)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
