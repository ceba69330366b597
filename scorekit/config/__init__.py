"""Configuration: the typed dataclasses and their YAML (``schema``), the checks of a whole configuration
(``checks``), the choices each key allows (``choices``), and the presets shipped as YAML (``presets/``)."""

from .choices import BOUND_LOSSES, CHOICES, CONSISTENCY_LOSSES, FEWSTEP_LOSSES, ConfigError
from .schema import (
    Config,
    DataConfig,
    EvalConfig,
    FewStepConfig,
    ModelConfig,
    ProcessConfig,
    SamplingConfig,
    TrainingConfig,
    apply_overrides,
    from_dict,
    load_config,
    parse_override,
    preset_dict,
    preset_names,
    unknown_key,
)

__all__ = ["BOUND_LOSSES", "CHOICES", "CONSISTENCY_LOSSES", "FEWSTEP_LOSSES", "Config", "ConfigError", "DataConfig",
           "EvalConfig", "FewStepConfig", "ModelConfig", "ProcessConfig", "SamplingConfig", "TrainingConfig",
           "apply_overrides", "from_dict", "load_config", "parse_override", "preset_dict", "preset_names",
           "unknown_key"]
