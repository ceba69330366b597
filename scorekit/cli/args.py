"""Typed command-line values, checked by argparse before a command does any work.

Every numeric option declares its valid range through :class:`Number`, so a bad value (zero, negative,
huge, not a number) is refused at parse time with one line naming the option and the range; the table-
driven CLI test reads those ranges back to build its bad values. Output paths follow one
rule (:func:`scorekit.images.out_paths`): ``--out`` is a folder, or a file whose extension is the
command's main product.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

from ..images import OutPaths, out_paths  # noqa: F401  (re-exported for the commands)

MAX_COUNT = 10_000_000  # images sampled / evaluated / judged by one command
MAX_BATCH = 65_536
MAX_STEPS = 1_000_000
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class Number:
    """An argparse ``type`` for an int or float in [lo, hi] (bounds inclusive unless ``open_lo``)."""

    kind: type = int
    lo: float | None = None
    hi: float | None = None
    open_lo: bool = False  # lo itself is excluded (e.g. a tolerance > 0)
    zero_means: str = ""  # documents a special meaning of 0 ("the sampler's default")

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a number"

        def fmt(v: float) -> str:
            return str(int(v)) if self.kind is int else f"{v:g}"

        if self.lo is not None and self.hi is not None:
            left = "(" if self.open_lo else "["
            return f"{what} in {left}{fmt(self.lo)}, {fmt(self.hi)}]"
        if self.lo is not None:
            return f"{what} {'>' if self.open_lo else '>='} {fmt(self.lo)}"
        return what

    def __call__(self, text: str):
        try:
            value = self.kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text!r}")
        too_low = self.lo is not None and (value <= self.lo if self.open_lo else value < self.lo)
        if too_low or (self.hi is not None and value > self.hi):
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text!r}")
        return value

    @property
    def __name__(self) -> str:  # argparse names the type in some messages
        return "number"


COUNT = Number(int, 1, MAX_COUNT)
BATCH = Number(int, 1, MAX_BATCH)
SEED = Number(int, 0, MAX_SEED)
STEPS_OR_DEFAULT = Number(int, 0, MAX_STEPS, zero_means="the sampler's default")


def count(hi: int = MAX_COUNT, lo: int = 1) -> Number:
    return Number(int, lo, hi)


def real(lo: float | None = None, hi: float | None = None, *, open_lo: bool = False) -> Number:
    return Number(float, lo, hi, open_lo=open_lo)


def choice_list(allowed: tuple[str, ...] | list[str]):
    """A comma-separated list whose items must be in ``allowed`` (e.g. --metrics fid,is)."""
    def parse(text: str) -> list[str]:
        items = [s.strip() for s in text.split(",") if s.strip()]
        bad = [s for s in items if s not in allowed]
        if not items or bad:
            raise argparse.ArgumentTypeError(f"{bad[0] if bad else text!r} is not one of {', '.join(allowed)}")
        return items

    parse.__name__ = "list"
    parse.allowed = tuple(allowed)
    return parse


def existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return path


def existing_path(text: str) -> Path:
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file or folder")
    return path


def device(text: str) -> str:
    """A torch device that exists on this machine: cpu, cuda, cuda:1, mps."""
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device (cpu, cuda, cuda:N, mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA devices")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available on this machine")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"{text!r}: scorekit runs on cpu, cuda or mps")
    return text


def sigma_interval(text: str) -> tuple[float, float]:
    """--guidance-interval: SIGMA_LO,SIGMA_HI with 0 <= SIGMA_LO < SIGMA_HI (guidance for sigma in (lo, hi])."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SIGMA_LO,SIGMA_HI like 0.3,5, got {text!r}") from None
    if not 0 <= lo < hi:
        raise argparse.ArgumentTypeError(f"needs 0 <= SIGMA_LO < SIGMA_HI, got {text!r}")
    return lo, hi


def class_spec(text: str) -> str | list[int]:
    """--class: ``all`` (an equal share of every class) or a comma-separated list of class indices."""
    if text.strip() == "all":
        return "all"
    try:
        classes = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected all or class indices like 3 or 0,1,2, got {text!r}") from None
    if not classes or min(classes) < 0 or max(classes) > 100_000:
        raise argparse.ArgumentTypeError(f"expected all or class indices >= 0, got {text!r}")
    return classes


DEVICE_HELP = "cpu, cuda, cuda:1, mps (default: cuda if available)"
BATCH_HELP = "images per network batch; the results do not depend on it (default %(default)s)"
SEED_HELP = "random seed; image i uses (seed, i) (default %(default)s)"
NO_EMA_HELP = "use the raw weights instead of the EMA weights"


def add_meter_args(p) -> None:
    """--extractor / --inception-weights of the commands that measure FD (tune-schedule, ema, study)."""
    p.add_argument("--extractor", default="auto", choices=("auto", "inception", "digits-proxy", "digits-hog"),
                   help="features for FD (auto: the digits proxy for 8x8 grey images, and the HOG FD beside it "
                        "where a report has room, else Inception)")
    p.add_argument("--inception-weights", type=existing_file, metavar="PATH",
                   help="local pt_inception-2015-12-05-6726825d.pth (or $SCOREKIT_INCEPTION_WEIGHTS); needed for "
                        "Inception features")
