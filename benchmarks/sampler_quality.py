"""Sample quality against cost for every sampler on the digits DDPM and NCSNv2 models.

    python benchmarks/sampler_quality.py --ddpm runs/digits --ncsn runs/ncsnv2-digits [--n 500]

For each family and sampler, the digits proxy FD of N samples (against the 300 test digits; the
real-vs-real floor at the same N is printed too) at several network-evaluation budgets (NFE, counted by
the denoiser). Runs that do not exist yet are trained first with their presets. Writes
benchmarks/results/sampler_quality.json and .png.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from _common import environment, write_json  # noqa: E402

from scorekit.images import to_uint8  # noqa: E402
from scorekit.metrics.proxy import proxy_metrics  # noqa: E402
from scorekit.rng import ImageRNG  # noqa: E402
from scorekit.run import RunDir, load  # noqa: E402
from scorekit.samplers import accepted_options, sample, sampling_options  # noqa: E402

BUDGETS = (10, 20, 50, 100)


def plan(name: str, nfe: int, levels: int) -> dict | None:
    """Sampler options that spend about ``nfe`` network evaluations (None if the budget does not fit)."""
    if name in ("ancestral", "ddim", "euler", "dpm2m", "euler_ancestral"):
        return {"steps": min(nfe, levels) if name in ("ancestral", "ddim") else nfe}
    if name == "heun":
        return {"steps": (nfe + 1) // 2}
    if name == "pc":
        return {"steps": min(nfe // 2, levels)} if nfe >= 4 else None
    if name == "langevin":
        return {"n_steps_each": max(1, (nfe - 1) // levels)} if nfe >= levels + 1 else None
    raise ValueError(name)


def evaluate(denoiser, name: str, options: dict, n: int, seed: int) -> dict:
    """FD of n samples; the run's sampling settings (x0 clipping, Langevin step size, ...) unless overridden."""
    options = {**sampling_options(denoiser.config.sampling), **options}
    denoiser.nfe = 0
    t0 = time.perf_counter()
    x = torch.cat([sample(denoiser, name, (len(ix), *denoiser.image_shape), ImageRNG(seed, ix), **options)
                   for ix in (range(s, min(n, s + 250)) for s in range(0, n, 250))])
    nfe = denoiser.nfe // -(-n // 250)  # evaluations per image batch
    m = proxy_metrics(to_uint8(x, denoiser.data_range))
    shown = {k: v for k, v in accepted_options(name, options).items() if v is not None}
    return {"sampler": name, "options": shown, "nfe": nfe, "proxy_fd": m["proxy_fd"], "floor": m["proxy_fd_floor"],
            "proxy_is": m["proxy_is"], "seconds": round(time.perf_counter() - t0, 1)}


def ensure_run(path: str | None, preset: str) -> Path:
    from scorekit.train import train_run

    run = Path(path or f"runs/{preset}")
    if RunDir(run).latest() is None:
        print(f"training {preset} into {run} first")
        train_run(preset, run, device="cpu", progress=False)
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ddpm", help="a trained ddpm-digits run (default runs/ddpm-digits, trained if absent)")
    ap.add_argument("--ncsn", help="a trained ncsnv2-digits run (default runs/ncsnv2-digits, trained if absent)")
    ap.add_argument("--n", type=int, default=500, help="samples per point")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/sampler_quality.json")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    results = {}
    for family, preset, path in (("ddpm", "ddpm-digits", args.ddpm), ("ncsnv2", "ncsnv2-digits", args.ncsn)):
        d = load(ensure_run(path, preset))
        levels = d.process.num_levels
        rows = []
        reference = ("ancestral", {"steps": levels}) if family == "ddpm" else (
            "langevin", {"n_steps_each": d.config.sampling.n_steps_each})
        rows.append({**evaluate(d, *reference, args.n, args.seed), "reference": True})
        print(f"{family} reference {rows[-1]}", flush=True)
        done = [reference]
        for name in ("ancestral", "ddim", "euler", "heun", "dpm2m", "euler_ancestral", "pc", "langevin"):
            for nfe in (*BUDGETS, 1000):
                if nfe == 1000 and name not in ("pc", "langevin"):
                    continue
                opts = plan(name, nfe, levels)
                if opts is None or (name, opts) in done:
                    continue
                done.append((name, opts))
                rows.append(evaluate(d, name, opts, args.n, args.seed))
                print(f"{family} {rows[-1]}", flush=True)
        for tol in (1e-1, 1e-2, 1e-3):
            rows.append(evaluate(d, "rk45", {"rtol": tol, "atol": tol}, args.n, args.seed))
            print(f"{family} {rows[-1]}", flush=True)
        ref_fd = rows[0]["proxy_fd"]
        cheap = [r for r in rows if r["nfe"] <= 20]
        best = min(cheap, key=lambda r: r["proxy_fd"])
        results[family] = {"run": str(path), "rows": rows, "reference": rows[0],
                           "best_at_most_20_nfe": best, "within_10_percent": best["proxy_fd"] <= 1.1 * ref_fd}
        print(f"{family}: reference {rows[0]['sampler']} FD {ref_fd:.2f} at {rows[0]['nfe']} NFE; best at <= 20 NFE: "
              f"{best['sampler']} {best['options']} FD {best['proxy_fd']:.2f} at {best['nfe']} NFE", flush=True)
    write_json(args.out, {"benchmark": "sampler_quality", "n": args.n, "environment": environment(torch.device("cpu")),
                          "results": results})
    plot(Path(args.out).with_suffix(".png"), results)


def plot(path: Path, results: dict) -> None:
    from scorekit.plots import figure

    with figure(path, ncols=len(results), size=(7 * len(results), 5)) as axes:
        for ax, (family, res) in zip(axes if len(results) > 1 else [axes], results.items()):
            by = {}
            for r in res["rows"][1:]:
                by.setdefault(r["sampler"], []).append((r["nfe"], r["proxy_fd"]))
            for name, pts in by.items():
                pts.sort()
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=name)
            ref = res["reference"]
            ax.axhline(ref["proxy_fd"], color="k", ls="--", label=f"reference ({ref['sampler']}, {ref['nfe']} NFE)")
            ax.axhline(ref["floor"], color="gray", ls=":", label="real-vs-real floor")
            ax.set(xscale="log", xlabel="network evaluations (NFE)", ylabel="proxy FD",
                   title=f"{family} on the digits", ylim=(0, min(300, max(r['proxy_fd'] for r in res['rows']) * 1.05)))
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
