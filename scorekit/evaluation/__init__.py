"""Evaluation: samples (``generate``), the likelihood (``likelihood``: the bound's terms and the ODE likelihood;
``bpd``: bits/dim over a split), sample quality over the metrics package (``quality``), the report after
training (``report``), the papers' figures (``figures``) and plots (``plots``), and the search for a sampler's
time-step schedule (``schedule_search``)."""

from .bpd import bits_per_dim
from .generate import generate, sample_values, samples_u8, write_samples
from .report import describe, final_report

__all__ = ["bits_per_dim", "describe", "final_report", "generate", "sample_values", "samples_u8", "write_samples"]
