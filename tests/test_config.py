import pytest
import yaml

from srood_lib import config


def test_every_profile_loads_with_the_same_sections():
    sections = {}
    for profile in ("smoke", "quick", "paper"):
        cfg = config.load_config(profile)
        assert cfg["profile"] == profile
        sections[profile] = set(cfg)
    assert sections["smoke"] == sections["quick"] == sections["paper"]


def test_overrides_are_typed_and_nested():
    cfg = config.load_config("smoke", ["seed=7", "data.resolution=64", "data.ood=[texture]"])
    assert cfg["seed"] == 7
    assert cfg["data"]["resolution"] == 64
    assert cfg["data"]["ood"] == ["texture"]


def test_override_of_unknown_key_names_the_keys_that_exist():
    with pytest.raises(KeyError, match="keys there:.*resolution"):
        config.load_config("smoke", ["data.resolutoin=64"])


def test_override_without_equals_is_an_error():
    with pytest.raises(ValueError, match="key.subkey=value"):
        config.apply_overrides({"a": 1}, ["a"])


def test_unknown_profile_lists_known_ones():
    with pytest.raises(FileNotFoundError, match="smoke"):
        config.load_config("nope")


def test_config_hash_ignores_key_order_and_sees_values():
    a = {"x": 1, "y": {"z": [1, 2]}}
    b = {"y": {"z": [1, 2]}, "x": 1}
    assert config.config_hash(a) == config.config_hash(b)
    assert config.config_hash(a) != config.config_hash({"x": 2, "y": {"z": [1, 2]}})


def test_notebook_config_takes_injected_top_level_values_only_for_known_keys():
    injected = {"seed": 123, "unrelated": 1, "profile": "quick"}
    cfg = config.notebook_config("smoke", injected)
    assert cfg["seed"] == 123
    assert cfg["profile"] == "smoke"
    assert "unrelated" not in cfg


def test_resolve_config_cli_writes_overrides(tmp_path):
    from srood_lib.__main__ import main

    out = tmp_path / "resolved.yaml"
    assert main(["resolve-config", "--profile", "smoke", "--set", "seed=5", "--out", str(out)]) == 0
    assert yaml.safe_load(out.read_text())["seed"] == 5



def test_config_hash_is_the_same_after_papermills_json_round_trip():
    import json

    section = {"channels": {4: 128, 8: 128, 16: 64, 32: 32}, "betas": [0.0, 0.99], "name": "x"}
    assert config.config_hash(json.loads(json.dumps(section))) == config.config_hash(section)
    assert config.config_hash({"channels": {4: 128, 8: 64}}) != config.config_hash({"channels": {4: 128, 8: 32}})


def test_notebook_config_ignores_a_module_named_like_a_section():
    import srood_lib.ablations as ablations

    cfg = config.notebook_config("smoke", {"ablations": ablations, "seed": 3})
    assert cfg["ablations"] == config.load_config("smoke")["ablations"] and cfg["seed"] == 3


def test_a_bad_set_key_is_one_line_with_exit_2(tmp_path, capsys):
    from srood_lib.__main__ import main

    assert main(["resolve-config", "--profile", "smoke", "--set", "prior.train.kimg=20"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "prior.train.kimg" in err[0] and "kimg" in err[0].split("keys there:")[1]


def test_the_set_example_in_run_all_help_resolves():
    import re

    from srood_lib.config import PROJECT_ROOT, load_config

    example = re.search(r"--set (\S+=\S+)", (PROJECT_ROOT / "run_all.sh").read_text()).group(1)
    key, value = example.split("=")
    cfg = load_config("quick", [example])
    node = cfg
    for part in key.split("."):
        node = node[part]
    assert str(node) == value
