"""Errors that the command line reports as one line (and a non-zero exit code) instead of a traceback."""


class ScorekitError(Exception):
    """Base of every user-facing error."""


class DataError(ScorekitError):
    """A dataset path, file or image that cannot be used."""


class CheckpointError(ScorekitError):
    """A checkpoint or run directory that cannot be loaded or written."""


class TrainingError(ScorekitError):
    """Training stopped for a reason the user must act on (e.g. repeated non-finite losses)."""


class WriteError(ScorekitError):
    """A file that could not be written: no space left, a read-only folder, no permission. Nothing that was
    written before is lost (every write is atomic)."""
