"""`scorekit classifier PRESET|CONFIG.yaml|RUN --out DIR`: a noise-conditional classifier for classifier guidance."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from .args import DEVICE_HELP, Number, device


def cmd_classifier(args: argparse.Namespace) -> int:
    """Train a noise-conditional classifier p(y | x_t, t) on the noise process and the (labelled) data of a
    preset, a YAML config or a run, with the same training loop (training.loss=ce): a small encoder with
    the time embedding. `scorekit sample RUN --class C --classifier DIR --classifier-scale K` then adds K
    times the gradient of log p(y | x_t, t) to the model's score (classifier guidance). Writes an ordinary
    run directory; prints the accuracy on the test split at several noise levels."""
    import torch

    from ..config import load_config
    from ..data.sources import build_source
    from ..errors import ScorekitError
    from ..images import atomic_write_bytes
    from ..model.guidance import classifier_accuracy
    from ..run import load
    from ..training import train_run

    src = Path(args.source)
    source = str(src / "config.yaml") if src.is_dir() else args.source
    base = load_config(source, args.overrides)
    data = build_source(base.data, "train")
    if data.labels is None:
        raise ScorekitError(f"{args.source}: its {base.data.dataset} data has no labels to classify (an image "
                            "folder's classes are its sub-folders)")
    k = base.model.num_classes or int(data.labels.max()) + 1
    downs = max(1, int(math.log2(max(base.data.resolution // 4, 1))))  # down to 4x4
    defaults = [f"training.steps={args.steps}", "training.lr=0.001", "training.warmup=100", "training.ema_decay=0.99",
                f"model.ch={args.ch}", f"model.ch_mult={[1] + [2] * downs}", "model.dropout=0.0",
                "training.test_every=100", "eval.bpd_images=0", "eval.proxy_samples=0"]
    forced = ["model.arch=classifier", "training.loss=ce", f"model.num_classes={k}", "model.output=eps",
              "model.variance=fixedlarge", "training.label_dropout=0", "model.attn_resolutions=[]"]
    result = train_run(source, args.out, [*defaults, *args.overrides, *forced], device=args.device,
                       progress=not args.no_progress, evaluate=False)
    clf = load(result.run, device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        test = build_source(clf.config.data, "test")
    except ScorekitError:
        test = data
    n = min(len(test), 1000)
    images = test.images[:n] if test.images is not None else torch.stack([test[i] for i in range(n)])
    T = clf.process.num_levels
    acc = classifier_accuracy(clf, images, test.labels[:n], [0, T // 4, T // 2, 3 * T // 4, T - 1])
    atomic_write_bytes(Path(result.run) / "summary.json",
                       (json.dumps({"step": result.step, "accuracy_by_level": acc, "n": n}, indent=2) + "\n").encode())
    shown = ", ".join(f"t={t}: {a:.3f}" for t, a in acc.items())
    print(f"classifier of {k} classes trained to step {result.step} -> {result.run}; accuracy on {n} test images by "
          f"noise level: {shown}")
    return 0


def _classifier_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="PRESET|CONFIG.yaml|RUN", help="the model's preset, config or run")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="overrides (data, training)")
    p.add_argument("--out", required=True, metavar="DIR", help="the classifier's run directory")
    p.add_argument("--steps", type=Number(int, 1, 10_000_000), default=1500, help="training steps (1500)")
    p.add_argument("--ch", type=Number(int, 4, 1024), default=32, help="base channels of the encoder (32)")
    p.add_argument("--device", type=device, help=DEVICE_HELP)


COMMANDS = [("classifier", "train a noise-conditional classifier for classifier guidance", _classifier_args,
             cmd_classifier)]
