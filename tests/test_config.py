import pytest

from scorekit.config import ConfigError, load_config, preset_names


def test_every_preset_loads_and_validates():
    names = preset_names()
    for required in ("ddpm-cifar10", "ddpm-celebahq", "ddpm-lsun-church", "ddpm-lsun-bedroom", "ddpm-lsun-cat",
                     "ddpm-digits"):
        assert required in names
    for name in names:
        assert load_config(name).name == name


def test_ddpm_presets_have_the_papers_hyperparameters():
    c = load_config("ddpm-cifar10")
    assert (c.training.lr, c.training.batch_size, c.training.warmup, c.training.grad_clip, c.training.ema_decay,
            c.training.steps) == (2e-4, 128, 5000, 1.0, 0.9999, 800_000)
    assert (c.model.ch, c.model.ch_mult, c.model.num_res_blocks, c.model.attn_resolutions, c.model.dropout) == (
        128, [1, 2, 2, 2], 2, [16], 0.1)
    assert (c.model.output, c.model.variance, c.training.loss) == ("eps", "fixedlarge", "mse")
    assert (c.process.schedule, c.process.num_timesteps, c.process.beta_start, c.process.beta_end) == (
        "linear", 1000, 1e-4, 0.02)
    assert c.data.random_flip and c.data.resolution == 32
    steps = {"ddpm-celebahq": 500_000, "ddpm-lsun-church": 1_200_000, "ddpm-lsun-bedroom": 2_400_000,
             "ddpm-lsun-cat": 1_800_000}
    for name, n in steps.items():
        c = load_config(name)
        assert (c.training.lr, c.training.batch_size, c.training.steps, c.model.dropout) == (2e-5, 64, n, 0.0)
        assert c.model.ch_mult == [1, 1, 2, 2, 4, 4] and c.model.variance == "fixedsmall"
        assert c.data.random_flip == (name != "ddpm-lsun-bedroom") and c.data.resolution == 256


@pytest.mark.parametrize("override,message", [
    ("training.lrr=1", "unknown key training.lrr"),
    ("training.lr=fast", "training.lr: expected a number"),
    ("training.steps=1.5", "training.steps: expected an integer"),
    ("training.batch_size=0", "training.batch_size: must be > 0"),
    ("model.variance=huge", "model.variance: 'huge' is not one of fixedlarge, fixedsmall, learned_range"),
    ("process.schedule=cosinus", "process.schedule: 'cosinus' is not one of"),
    ("model.dropout=1.5", "model.dropout: must be in [0, 1)"),
    ("model.ch_mult=[1,2,2,2,2]", "model.ch_mult: 5 levels need data.resolution divisible by 16"),
    ("nosection.key=1", "unknown key nosection.key"),
    ("training=3", "training: expected a mapping"),
])
def test_bad_values_are_rejected_naming_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_config("ddpm-digits", [override])
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(ConfigError, match="unknown preset 'ddpm-cifar100'; available: .*ddpm-cifar10"):
        load_config("ddpm-cifar100")


def test_overrides_and_yaml_files(tmp_path):
    c = load_config("ddpm-digits", ["training.steps=7", "model.ch_mult=[1, 2]", "data.random_flip=true"])
    assert (c.training.steps, c.model.ch_mult, c.data.random_flip) == (7, [1, 2], True)
    # YAML 1.1 reads 2e-4 (no dot) as a string; a number is what was meant (before: "expected a number")
    assert load_config("ddpm-digits", ["training.lr=2e-4"]).training.lr == 2e-4
    assert load_config("ddpm-digits", ["training.lr=1E+1"]).training.lr == 10.0
    with pytest.raises(ConfigError, match="training.lr: expected a number"):
        load_config("ddpm-digits", ["training.lr=2e"])
    f = tmp_path / "mine.yaml"
    f.write_text(c.to_yaml())
    assert load_config(f) == c
    partial = tmp_path / "partial.yaml"
    partial.write_text("training: {steps: 3}\n")
    assert load_config(partial).training.steps == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
