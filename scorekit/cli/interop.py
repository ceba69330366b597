"""`scorekit convert` (diffusers, pytorch-diffusion, ncsnv2 checkpoints to runs) and `scorekit export`."""

from __future__ import annotations

import argparse
from pathlib import Path

from .args import existing_path


def cmd_convert(args: argparse.Namespace) -> int:
    """Turn published weights into a scorekit run that samples and evaluates like any other. Nothing in
    the files is executed: safetensors and JSON are read as data, torch files with weights_only=True.

      diffusers DIR            a diffusers DDPM folder (model_index.json, unet/, scheduler/), e.g. the
                               published google/ddpm-cifar10-32 conversion
      pytorch-diffusion CKPT   pesser/pytorch_diffusion's port of the authors' DDPM weights (--preset)
      ncsnv2 CKPT              an ermongroup/ncsnv2 checkpoint (checkpoint.pth; --preset); EMA by default
    """
    from ..errors import ScorekitError
    from ..interop.authors import import_ncsnv2, import_pytorch_diffusion
    from ..interop.diffusers import import_diffusers
    from ..run import RunDir

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ScorekitError(f"--out {out}: exists and is not a folder")
    if RunDir(out).latest() is not None:
        raise ScorekitError(f"--out {out}: already holds checkpoints; choose a new folder")
    if args.format == "diffusers":
        run = import_diffusers(args.source, args.out)
    else:
        if not args.preset:
            raise ScorekitError(f"convert {args.format} needs --preset (e.g. "
                                f"{'ddpm-cifar10' if args.format == 'pytorch-diffusion' else 'ncsnv2-cifar10'})")
        if args.format == "pytorch-diffusion":
            run = import_pytorch_diffusion(args.source, args.preset, args.out)
        else:
            run = import_ncsnv2(args.source, args.preset, args.out, ema=not args.no_ema)
    print(f"converted {args.source} -> {run} (try: scorekit sample {run} --n 16)")
    return 0


def _convert_args(p: argparse.ArgumentParser) -> None:
    from ..config import preset_names

    p.add_argument("format", choices=["diffusers", "pytorch-diffusion", "ncsnv2"],
                   help="diffusers: a DDPMPipeline folder; pytorch-diffusion / ncsnv2: the authors' checkpoint file")
    p.add_argument("source", metavar="DIR|CKPT", type=existing_path, help="the folder or checkpoint to import")
    p.add_argument("--out", required=True, metavar="RUN", help="new run directory")
    p.add_argument("--preset", choices=preset_names(), metavar="PRESET",
                   help="the preset the checkpoint was trained with (authors' formats; see `scorekit presets`)")
    p.add_argument("--no-ema", action="store_true", help="ncsnv2: keep the raw weights, not the EMA ones")


def cmd_export(args: argparse.Namespace) -> int:
    """Write a scorekit DDPM run (its EMA weights) as a diffusers folder that
    `diffusers.DDPMPipeline.from_pretrained(DIR)` loads."""
    from ..errors import ScorekitError
    from ..interop.diffusers import export_diffusers
    from ..run import load

    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ScorekitError(f"--out {args.out}: exists and is not a folder")
    out = export_diffusers(load(args.run, ema=not args.no_ema), args.out)
    print(f"exported {args.run} -> {out} (diffusers.DDPMPipeline.from_pretrained('{out}'))")
    return 0


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("format", choices=["diffusers"], help="diffusers: a folder DDPMPipeline.from_pretrained loads")
    p.add_argument("run", metavar="RUN", help="a DDPM run directory (its latest checkpoint) or a checkpoint file")
    p.add_argument("--out", required=True, metavar="DIR", help="the new folder (model_index.json, unet/, scheduler/)")
    p.add_argument("--no-ema", action="store_true", help="export the raw weights instead of the EMA weights")


COMMANDS = [
    ("convert", "import published weights (diffusers, pytorch-diffusion, ncsnv2) as a run", _convert_args,
     cmd_convert),
    ("export", "export a DDPM run to a diffusers folder", _export_args, cmd_export),
]
