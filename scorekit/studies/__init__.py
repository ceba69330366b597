"""The papers' experiments as studies a user reruns (`scorekit study NAME`): each a folder of ordinary run
directories plus report.md, figures, a CSV and a JSON with the protocol (see :mod:`.runner`)."""

from . import autoguidance, ddpm_objectives, ema, few_step, flows, guidance, memorization, ncsn_techniques, recipes

STUDIES = {m.NAME: m for m in (ncsn_techniques, ema, memorization, ddpm_objectives, guidance, recipes, few_step,
                                flows, autoguidance)}
