"""Our DDPM U-Net against diffusers' UNet2DModel of the same configuration: forward and training step.

    python benchmarks/unet_speed.py [--config cifar10] [--batch 8] [--repeats 5] [--device cpu]

Both networks are built with the same configuration (the parameter counts are checked equal) and timed
interleaved in one run; the training step is forward + MSE + backward + Adam. Prints the medians and our
time as a fraction of diffusers'; writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, interleaved, write_json  # noqa: E402

from scorekit.interop.diffusers_config import unet2d_kwargs  # noqa: E402
from scorekit.nets.unet import UNET_CONFIGS, UNet  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="cifar10", choices=sorted(UNET_CONFIGS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="benchmarks/results/unet_speed.json")
    args = ap.parse_args()
    try:
        from diffusers import UNet2DModel
    except ImportError:
        sys.exit("this benchmark compares against diffusers: pip install 'scorekit[diffusers]'")

    device = torch.device(args.device)
    cfg = dict(in_ch=3, out_ch=3, num_res_blocks=2, **UNET_CONFIGS[args.config])
    torch.manual_seed(0)
    ours = UNet(**cfg).to(device)
    theirs = UNet2DModel(**unet2d_kwargs(**{**dict(num_res_blocks=2, in_ch=3, out_ch=3), **cfg})).to(device)
    n_ours, n_theirs = (sum(p.numel() for p in m.parameters()) for m in (ours, theirs))
    if n_ours != n_theirs:
        sys.exit(f"parameter counts differ: ours {n_ours:,}, diffusers {n_theirs:,}")
    R = cfg["resolution"]
    x = torch.randn(args.batch, 3, R, R, device=device)
    t = torch.randint(0, 1000, (args.batch,), device=device)
    opt_ours = torch.optim.Adam(ours.parameters(), lr=1e-4)
    opt_theirs = torch.optim.Adam(theirs.parameters(), lr=1e-4)

    def forward(m):
        def run():
            m.eval()
            with torch.no_grad():
                m(x, t)
        return run

    def train_step(m, opt, unwrap):
        def run():
            m.train()
            opt.zero_grad(set_to_none=True)
            out = m(x, t)
            out = out.sample if unwrap else out
            (out - x).pow(2).mean().backward()
            opt.step()
        return run

    res = interleaved({"ours_forward": forward(ours), "diffusers_forward": forward(theirs),
                       "ours_train_step": train_step(ours, opt_ours, False),
                       "diffusers_train_step": train_step(theirs, opt_theirs, True)}, args.repeats, device)
    ratios = {k: res[f"ours_{k}"]["median_s"] / res[f"diffusers_{k}"]["median_s"] for k in ("forward", "train_step")}
    print(f"U-Net '{args.config}' ({n_ours:,} parameters), batch {args.batch}, {device}, {args.repeats} repeats")
    for k in ("forward", "train_step"):
        ours, theirs = res["ours_" + k]["median_s"], res["diffusers_" + k]["median_s"]
        print(f"  {k:11s} ours {ours:.3f} s   diffusers {theirs:.3f} s   ratio {ratios[k]:.3f}")
    write_json(args.out, {"benchmark": "unet_speed", "config": args.config, "parameters": n_ours, "batch": args.batch,
                          "environment": environment(device), "results": res, "ratio_ours_over_diffusers": ratios,
                          "target": {"train_step_ratio_at_most": 0.8}})


if __name__ == "__main__":
    main()
