"""Config presets, validation and the defaults -> YAML -> --set resolution."""

import dataclasses

import pytest

from handshape_tf.config_utils import ConfigError, load_yaml, merge, parse_overrides, save_yaml, to_dict
from handshape_tf.models.config import ModelConfig


def test_presets_are_valid_and_distinct():
    paper = ModelConfig.preset("paper")
    cpu = ModelConfig.preset("cpu")
    assert paper.image_size == 256 and paper.num_stacks == 2 and paper.hourglass_filters == 256
    assert paper.heatmap_size == 64 and paper.latent_size == 4096 and paper.cheb_order == 3
    assert cpu.image_size == 64 and cpu.heatmap_size == 16
    assert set(ModelConfig.preset_names()) >= {"paper", "cpu"}
    assert (paper.preset_name(), cpu.preset_name(), ModelConfig.preset("cpu", image_size=128).preset_name()) == (
        "paper",
        "cpu",
        "custom",
    )
    # The graph formulation does not change the network: a model trained either way is the preset's.
    assert ModelConfig.preset("cpu", graph_formulation="sparse").preset_name() == "cpu"


def test_no_preset_pools_its_hourglass_below_the_measured_minimum():
    """The exploding-predictions fix: the cpu preset's hourglass once pooled its 16 x 16 maps to
    1 x 1 (depth 4), where BatchNorm blew a few inference-time features up by orders of magnitude
    (`MIN_HOURGLASS_SIDE`); every preset stops at the paper's 4 x 4 or above."""
    from handshape_tf.models.config import MIN_HOURGLASS_SIDE

    for name in ModelConfig.preset_names():
        assert ModelConfig.preset(name).hourglass_innermost_side >= MIN_HOURGLASS_SIDE, name
    assert ModelConfig.preset("paper").hourglass_innermost_side == 4
    assert ModelConfig.preset("cpu", hourglass_depth=4).hourglass_innermost_side == 1  # the old cpu preset


def test_unknown_preset_names_the_choices():
    with pytest.raises(ConfigError, match=r"unknown model preset 'huge'; choose one of \['paper', 'cpu'"):
        ModelConfig.preset("huge")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"image_size": 100}, r"image_size=100 must be a multiple of 4 \* 2\*\*hourglass_depth = 64"),
        ({"encoder_pools": 7}, r"encoder_pools=7 does not divide the 64-pixel heat-maps"),
        ({"decoder_widths": (8, 8)}, r"decoder_widths has 2 levels"),
        ({"num_stacks": 0}, r"num_stacks=0 must be >= 1"),
    ],
)
def test_inconsistent_sizes_are_rejected(overrides, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig.preset("paper", **overrides)


def test_set_overrides_are_coerced_to_field_types():
    config = merge(
        ModelConfig(), parse_overrides(["image_size=128", "decoder_widths=16,16,8,8", "graph_formulation=gather"])
    )
    assert config.image_size == 128 and config.decoder_widths == (16, 16, 8, 8)
    assert config.graph_formulation == "gather"


@pytest.mark.parametrize(
    "pair, message",
    [
        ("imagesize=3", r"unknown config key 'imagesize'; known keys: cheb_order"),
        ("image_size=big", r"image_size='big': expected int"),
        ("image_size=1.5", r"image_size='1.5': expected int"),
        ("graph_formulation=dense", r"graph_formulation='dense': expected one of \['sparse', 'gather'\]"),
    ],
)
def test_bad_overrides_fail_with_the_key(pair, message):
    with pytest.raises(ConfigError, match=message):
        merge(ModelConfig(), parse_overrides([pair]))


def test_exponent_floats_from_the_command_line():
    @dataclasses.dataclass(frozen=True)
    class Optim:
        learning_rate: float = 0.1

    assert merge(Optim(), parse_overrides(["learning_rate=1e-3"])).learning_rate == 0.001


def test_malformed_set_pair():
    with pytest.raises(ConfigError, match=r"--set 'image_size': expected key=value"):
        parse_overrides(["image_size"])


def test_nested_sections_and_yaml_round_trip(tmp_path):
    @dataclasses.dataclass(frozen=True)
    class Run:
        model: ModelConfig = ModelConfig()
        steps: int = 10

    run = merge(Run(), {"model.num_stacks": "1", "steps": 3})
    assert run.model.num_stacks == 1 and run.steps == 3
    save_yaml(run, tmp_path / "config.yaml")
    assert merge(Run(), load_yaml(tmp_path / "config.yaml")) == run
    assert to_dict(run)["model"]["decoder_widths"] == [64, 64, 32, 32]
    with pytest.raises(ConfigError, match=r"unknown config key 'model.stacks'"):
        merge(Run(), {"model": {"stacks": 1}})


def test_the_readme_states_the_cpu_defaults():
    """Every row of the README's "`cpu` default" table is what `preset_config("cpu")` holds."""
    import ast
    import re
    from pathlib import Path

    from train.config import preset_config

    config = to_dict(preset_config("cpu"))
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme.split("| `cpu` default | value | chosen by |")[1].split("\n\n")[0]
    rows = re.findall(r"^\| `([a-z_.]+)` \| ([^|(]+?)(?: \([^|]*\))? \| [^|]* \|$", table, re.MULTILINE)
    assert len(rows) >= 10, rows
    for key, text in rows:
        value = config
        for part in key.split("."):
            value = value[part]
        words = {"true": True, "false": False}
        stated = ast.literal_eval(text) if text[0].isdigit() or text[0] == "[" else words.get(text, text)
        assert (list(value) if isinstance(value, tuple) else value) == stated, (key, value, text)
