"""What a run tells the outside and hears from it: metrics.jsonl and TensorBoard lines (``MetricsLogger``), and
SIGTERM / SIGINT as a request to checkpoint and stop (``StopFlag``)."""

from __future__ import annotations

import contextlib
import json
import signal

from ..dist import Dist
from ..errors import WriteError
from ..run import RunDir


class StopFlag:
    """SIGTERM / SIGINT ask the loop to finish the step, checkpoint and return."""

    def __init__(self):
        self.raised: str | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.raised = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


class MetricsLogger:
    """metrics.jsonl lines and, when the tensorboard package is installed, TensorBoard events."""

    def __init__(self, run: RunDir, dist: Dist, enabled: bool):
        self.enabled, self.run, self.tb = enabled, run, None
        if not enabled:
            return
        run.path.mkdir(parents=True, exist_ok=True)
        self.file = open(run.metrics_path, "a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run.tensorboard_dir))
        except ImportError:
            pass

    def log(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        try:
            self.file.write(json.dumps({"step": step, **values}) + "\n")
            self.file.flush()
        except OSError as e:
            raise WriteError(f"{self.run.metrics_path}: could not be written ({e.strerror or e})") from None
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"train/{k}", v, step)

    def event(self, step: int, values: dict) -> None:
        self.log(step, {"event": "nonfinite_skipped", **values})

    def close(self) -> None:
        if self.enabled and not self.file.closed:
            with contextlib.suppress(OSError):  # lines that cannot be flushed are logged again after a resume
                self.file.close()
            if self.tb is not None:
                self.tb.close()
