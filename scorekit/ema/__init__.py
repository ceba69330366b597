"""Weight averaging: the classic exponential EMA (``exponential``), EDM2's power-function EMAs and their
snapshots (``power``), and the post-hoc reconstruction of any EMA length from them (``posthoc``). The training
loop only calls these."""

from .exponential import EMA

__all__ = ["EMA"]
