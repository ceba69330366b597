"""Guidance on the command line: --guide (autoguidance, Karras et al. 2024), --class / --guidance (classifier-free
guidance), --classifier / --classifier-scale (classifier guidance) and --guidance-interval, checked against the run
before any sampling."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ScorekitError
from .args import existing_path


def guide_spec(text: str) -> str | Path:
    """--guide: `self`, `none`, or an existing run or checkpoint."""
    return text if text in ("self", "none") else existing_path(text)


def autoguide(args: argparse.Namespace, denoiser):
    """--guide G|self|none --guidance W [--guidance-interval LO,HI]: the run autoguided by G (with --class both
    networks see the classes, see :func:`guidance_kwargs`), and what the summary records."""
    if args.guide in (None, "none"):  # none: unguided (--class / --guidance then mean classifier-free guidance)
        return denoiser, {}
    from ..model.autoguidance import autoguided
    from ..run import RunDir, load

    if args.classifier is not None:
        raise ScorekitError("--guide: autoguidance with classifier guidance (--classifier) is not offered; guide a "
                            "class-conditional run's --class draws instead")
    source = args.guide
    if source == "self":
        run = RunDir(args.run)
        source = run.guide_path
        if not Path(args.run).is_dir() or not source.is_file():
            raise ScorekitError(f"--guide self: {args.run} keeps no guide ({source} is missing); train with "
                                "training.guide_at=F (the EMA weights at F x steps are kept) or give --guide RUN")
        if args.guidance is None:
            args.guidance, args.guidance_interval = recorded_choice(run.guide_choice_path, args.guidance_interval)
    if args.guidance is None:
        raise ScorekitError("--guide: give the autoguidance weight --guidance W (1 = unguided; EDM2 used 1.2-3)")
    guide = load(source, ema=not args.no_ema, device=denoiser.device)
    return (autoguided(denoiser, guide, args.guidance, args.guidance_interval),
            {"guide": str(args.guide), "guidance": args.guidance,
             "guidance_interval": list(args.guidance_interval) if args.guidance_interval else None})


def recorded_choice(path: Path, interval):
    """The weight (and interval, unless given) recorded for the kept guide by ``scorekit study autoguidance``."""
    import json

    if not path.is_file():
        raise ScorekitError(f"--guide self: give the autoguidance weight --guidance W ({path}, where a measured "
                            "choice is recorded by `scorekit study autoguidance`, is missing)")
    try:
        choice = json.loads(path.read_text())
        weight = float(choice["guidance"])
        recorded = choice.get("guidance_interval")
    except (ValueError, KeyError, TypeError) as e:
        raise ScorekitError(f"{path}: not a recorded autoguidance choice ({e}); expected "
                            '{"guidance": W, "guidance_interval": [LO, HI] or null}') from None
    return weight, interval if interval is not None else (tuple(recorded) if recorded else None)


def guidance_kwargs(args: argparse.Namespace, denoiser, n: int, *, autoguided: bool = False) -> dict:
    """--class / --guidance / --classifier / --classifier-scale as generate()'s keyword arguments, checked
    against the model before any sampling (``autoguided``: --guide was applied by :func:`autoguide`)."""
    from ..model.guidance import conditional, labels_for

    if getattr(args, "guide", None) not in (None, "none"):
        if not autoguided:
            raise ScorekitError("--guide: autoguidance is offered by `scorekit sample` (this command does not take it)")
        if args.klass is None:
            return {}
        # class draws (EDM2): main and guide both see the classes; --guidance is the autoguidance weight, so the
        # classifier-free mix is off (scale 1, the conditional model)
        k = denoiser.config.model.num_classes
        if not k:
            raise ScorekitError("--class: this run is unconditional (model.num_classes=0); autoguide it without "
                                "--class")
        labels = labels_for(args.klass, n, k)
        conditional(denoiser, labels[:1])
        return {"labels": labels, "guidance": 1.0, "classifier": None, "classifier_scale": 0.0,
                "guidance_interval": None}
    if args.klass is None:
        for flag, value in (("--guidance", args.guidance), ("--classifier", args.classifier),
                            ("--classifier-scale", args.classifier_scale),
                            ("--guidance-interval", args.guidance_interval)):
            if value is not None:
                raise ScorekitError(f"{flag}: needs --class (which class to draw) or --guide (autoguidance)")
        return {}
    classifier = None
    if args.classifier is not None:
        from ..run import load

        classifier = load(args.classifier, device=denoiser.device)
        if classifier.config.model.arch != "classifier":
            raise ScorekitError(f"--classifier {args.classifier}: not a classifier run (train one with "
                                "`scorekit classifier RUN`)")
    scale = args.classifier_scale if args.classifier_scale is not None else (1.0 if classifier is not None else 0.0)
    if scale and classifier is None:
        raise ScorekitError("--classifier-scale: needs --classifier DIR")
    k = denoiser.config.model.num_classes or (classifier.config.model.num_classes if classifier else 0)
    if not k:
        raise ScorekitError("--class: this run is unconditional (model.num_classes=0); give --classifier DIR "
                            "(classifier guidance) or train with model.num_classes")
    guidance = args.guidance if args.guidance is not None else denoiser.config.sampling.guidance
    kwargs = {"labels": labels_for(args.klass, n, k), "guidance": guidance, "classifier": classifier,
              "classifier_scale": scale, "guidance_interval": args.guidance_interval}
    conditional(denoiser, kwargs["labels"][:1], guidance=guidance, classifier=classifier, classifier_scale=scale,
                interval=args.guidance_interval)
    return kwargs
