"""`scorekit presets` and `scorekit info`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import Config, load_config, preset_dict, preset_names


def cmd_presets(args: argparse.Namespace) -> int:
    """List the shipped presets with a one-line description."""
    names = preset_names()
    width = max(len(n) for n in names)
    for name in names:
        print(f"{name:{width}}  {preset_dict(name)['description']}")
    return 0


OUTPUTS = {"eps": "predicts eps", "x0": "predicts x0", "mean": "predicts the posterior mean",
           "score": "outputs the score", "sigma_score": "outputs sigma x score (technique 3's scaling)"}


def pairing(cfg: Config) -> str:
    """Which network serves which process, in words: any network trains on either process."""
    m, p = cfg.model, cfg.process
    if m.arch == "classifier":
        return (f"noise-conditional classifier of {m.num_classes} classes on "
                f"{'DDPM' if p.kind == 'vp' else 'NCSN'}'s {p.kind.upper()} process (cross entropy)")
    net = "U-Net" if m.arch == "unet" else {"ncsn": "NCSN RefineNet (conditional)"}.get(m.arch, f"{m.arch} RefineNet")
    home = (m.arch == "unet") == (p.kind != "ve")
    process = {"vp": "DDPM's VP process", "subvp": "the sub-VP process"}.get(p.kind, "NCSN's VE process")
    if m.precond == "edm":
        what = f"EDM's F in D = c_skip x + c_out F(c_in x; ln(sigma)/4), sigma_data {m.sigma_data:g}"
    else:
        what = OUTPUTS[m.output]
    return (f"{net} on {process}, {what}, loss {cfg.training.loss}"
            + ("" if home else " (a cross pairing: the network of the other family)"))


def describe_config(cfg: Config, parameters: int) -> dict:
    d, p, m, t = cfg.data, cfg.process, cfg.model, cfg.training
    if p.kind in ("vp", "subvp"):
        process = (f"{'VP (DDPM)' if p.kind == 'vp' else 'sub-VP'}: {p.schedule} betas {p.beta_start:g}.."
                   f"{p.beta_end:g}, T = {p.num_timesteps}")
    else:
        process = f"VE (NCSN): {p.ladder} sigmas {p.sigma_begin:g}..{p.sigma_end:g}, L = {p.num_levels}"
    if m.arch == "classifier":
        network = f"classifier ch={m.ch} ch_mult={tuple(m.ch_mult)} classes={m.num_classes}"
    elif m.arch == "unet":
        network = (f"U-Net ch={m.ch} ch_mult={tuple(m.ch_mult)} res_blocks={m.num_res_blocks} "
                   f"attn={tuple(m.attn_resolutions)} dropout={m.dropout:g}")
    else:
        network = f"{m.arch} ngf={m.ngf}"
    return {"name": cfg.name, "description": cfg.description, "family": cfg.family, "process": process,
            "network": network, "pairing": pairing(cfg), "parameters": parameters, "output": m.output,
            "variance": m.variance,
            "data": f"{d.dataset} {d.channels}x{d.resolution}x{d.resolution}"
                    f"{' ' + d.path if d.path else ''}{', random flips' if d.random_flip else ''}"
                    f"{f', first {d.max_images} images' if d.max_images else ''}"
                    f"{f', non-leaky augmentation p={d.augment:g}' if d.augment else ''}",
            "training": f"{t.steps} steps, batch {t.batch_size}, Adam lr {t.lr:g} (warmup {t.warmup}), "
                        f"clip {t.grad_clip:g}, EMA {t.ema_decay:g}, loss {t.loss}"
                        + (f", post-hoc EMA snapshots every {t.snapshot_every} steps (sigma_rel "
                           f"{', '.join(f'{r:g}' for r in t.phema_sigma_rel)})" if t.snapshot_every else ""),
            "sampling": f"{cfg.sampling.sampler}", "config": cfg.to_dict()}


def cmd_info(args: argparse.Namespace) -> int:
    """Family, process, network and parameter count, data and training settings of a preset, a YAML
    config or a run directory."""
    from ..model.factory import build_net
    from ..run import RunDir

    source = Path(args.source)
    cfg = RunDir(source).read_config() if source.is_dir() else load_config(args.source, args.overrides)
    params = sum(p.numel() for p in build_net(cfg).parameters())
    info = describe_config(cfg, params)
    if source.is_dir():
        info["run"] = str(source)
        info["checkpoints"] = [step for step, _ in RunDir(source).checkpoints()]
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key in ("name", "description", "family", "process", "network", "pairing", "output", "variance", "data",
                "training", "sampling"):
        print(f"{key:12s} {info[key]}")
    print(f"{'parameters':12s} {params:,}")
    if "checkpoints" in info:
        print(f"{'checkpoints':12s} {info['checkpoints'] or 'none'}")
    return 0


def _info_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="PRESET|CONFIG.yaml|RUN", help="a preset name, a YAML file or a run directory")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="configuration overrides")
    p.add_argument("--json", action="store_true", help="print JSON (with 'parameters' and the whole config)")


COMMANDS = [
    ("presets", "list the shipped presets", lambda p: None, cmd_presets),
    ("info", "describe a preset, config or run", _info_args, cmd_info),
]
