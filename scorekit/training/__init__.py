"""The training side: the loop (``loop``), the objectives (``losses``), the samplers of noise levels
(``tsampling``) and the per-step random draws (``draws``). Workflows and the command line call
:func:`train_run`; nothing below imports this package."""

from .loop import Trainer, TrainResult, train_run
from .objective import objective

__all__ = ["Trainer", "TrainResult", "objective", "train_run"]
