import pytest

from echo_rnn.config import PRESETS, ConfigError, TrainConfig, build_config


def test_precedence_defaults_preset_file_flags(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("lr = 0.5\nhidden-size = 4\n")
    c = build_config("notebook", f, {"hidden_size": 5})
    assert c.schedule == "notebook"  # from the preset
    assert c.lr == 0.5  # the file beats the preset
    assert c.hidden_size == 5  # the flag beats the file
    assert c.seed == TrainConfig().seed  # untouched default


def test_train_table_is_accepted(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[train]\nsteps = 7\n")
    assert build_config(file=f).steps == 7


@pytest.mark.parametrize(
    "values, match",
    [
        ({"hidden_size": 2.5}, "^hidden_size: must be int"),
        ({"bias": "yes"}, "^bias: must be bool"),
        ({"steps": True}, "^steps: must be int"),
        ({"run_name": "a/b"}, "^run_name: must be a plain directory name"),
        ({"schedule": "weekly"}, "^schedule: must be one of batch, notebook"),
        ({"init_std": float("nan")}, "^init_std: must be a number >= 0"),
        ({"orthogonal_gain": 0.0}, "^orthogonal_gain: must be a positive number or none"),
    ],
)
def test_invalid_values_name_the_setting_and_the_cli_the_flag(values, match):
    # the library names the setting; only the command line turns it into "argument --x"
    with pytest.raises(ConfigError, match=match) as info:
        build_config(overrides=values)
    setting = match[1:].split(":")[0]
    assert info.value.for_cli().startswith(f"argument --{setting.replace('_', '-')}: must be")


def test_none_is_accepted_for_optional_fields(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('grad_clip = "none"\ntruncate = 5\n')
    c = build_config(file=f)
    assert c.grad_clip is None and c.truncate == 5


def test_config_round_trips_through_a_dict():
    c = build_config("notebook")
    assert TrainConfig.from_dict(c.to_dict()) == c
    assert set(PRESETS["notebook"]) <= set(c.to_dict())


def test_the_example_config_is_the_frontier_recipe():
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "frontier.toml"
    c = build_config(file=example)
    frontier = build_config("frontier", overrides={"echo_step": 6, "hidden_size": 6, "bias": True})
    assert c == frontier and c.preset == "frontier" and c.threads == 1


def test_preset_is_recorded_but_sets_nothing_itself():
    assert build_config("notebook").preset == "notebook"
    assert build_config().preset is None
    with pytest.raises(ConfigError, match="^preset: must be one of"):
        build_config(overrides={"preset": "nope"})
