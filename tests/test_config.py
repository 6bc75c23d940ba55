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



def test_the_notebooks_cli_lists_the_tables_path_and_with_all_the_analyses(tmp_path, capsys):
    from srood_lib.__main__ import main

    out = tmp_path / "resolved.yaml"
    assert main(["resolve-config", "--profile", "quick", "--experiment", "cifar10", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["notebooks", "--config", str(out)]) == 0
    tables_path = capsys.readouterr().out.split()
    assert main(["notebooks", "--config", str(out), "--all"]) == 0
    everything = capsys.readouterr().out.split()
    # every table notebook (I, IV, V and the baselines) is on the default path; the long analyses are not
    assert tables_path == ["01_train_generator", "02_train_repair", "03_table", "04_baselines",
                           "05_table4_distance", "06_table5_offsets"]
    assert everything == tables_path + ["03_analyses", "07_ablations", "08_prior_budget", "09_trained_levers", "10_explore"]


def test_every_notebook_file_is_listed_by_some_id_set_and_every_listed_one_exists():
    listed = set()
    for profile in ("smoke", "quick", "paper"):
        for name in config.experiment_names(profile):
            exp = config.load_config(profile, experiment=name)["experiment"]
            assert not set(exp["notebooks"]) & set(exp["analyses"])
            listed |= set(exp["notebooks"]) | set(exp["analyses"])
    files = {p.stem for p in (config.PROJECT_ROOT / "notebooks").glob("*.ipynb")}
    assert listed <= files
    assert files - listed == {"00_data", "99_report"}  # run once per profile, not per ID set


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


# ------------------------------------------------------------------ layering: method + profile + ID set


def test_every_experiment_of_every_profile_resolves_with_its_table_and_columns():
    tables = {}
    for profile in ("smoke", "quick", "paper"):
        names = config.experiment_names(profile)
        assert names[0] == "cifar10" and set(names) == {"cifar10", "celeba", "pokemon"}
        for name in names:
            cfg = config.load_config(profile, experiment=name)
            assert cfg["experiment"]["name"] == name == cfg["data"]["id"]
            assert name not in cfg["data"]["ood"]
            assert not set(cfg["detector"]["validation_ood"]) & set(cfg["data"]["ood"])
            assert set(cfg["experiment"]["figures"]) == set(cfg["repair"]["variants"])
            tables[name] = cfg["experiment"]["table"]
    assert tables == {"cifar10": "I", "celeba": "II", "pokemon": "III"}


def test_the_default_experiment_is_the_profiles_first():
    assert config.load_config("quick") == config.load_config("quick", experiment="cifar10")


def test_method_constants_are_shared_and_budgets_per_profile():
    quick, paper = config.load_config("quick"), config.load_config("paper")
    assert quick["repair"]["train"]["lambda_lpips"] == paper["repair"]["train"]["lambda_lpips"] == 0.8
    assert quick["repair"]["train"]["kimg"] != paper["repair"]["train"]["kimg"]


def test_experiment_overrides_touch_only_their_experiment():
    cifar, pokemon = (config.load_config("quick", experiment=e) for e in ("cifar10", "pokemon"))
    assert "cifar10" in cifar["prior"]["checkpoint"] and "pokemon" in pokemon["prior"]["checkpoint"]
    assert config.load_config("smoke", experiment="pokemon")["prior"]["checkpoint"] is None
    assert pokemon["prior"]["diffaug"] and not cifar["prior"]["diffaug"]
    assert pokemon["data"]["n_val"] < 648 and cifar["data"]["n_val"] == 1000


def test_a_key_set_in_two_layers_is_refused(tmp_path, monkeypatch):
    (tmp_path / "id").mkdir()
    (tmp_path / "method.yaml").write_text("repair: {train: {lambda_lpips: 0.8}}\n")
    (tmp_path / "p.yaml").write_text("profile: p\nexperiments: {x: {}}\nrepair: {train: {lambda_lpips: 0.5}}\n")
    (tmp_path / "id" / "x.yaml").write_text("data: {id: x}\n")
    monkeypatch.setattr(config, "CONFIG_DIR", tmp_path)
    monkeypatch.setattr(config, "EXPERIMENT_DIR", tmp_path / "id")
    with pytest.raises(ValueError, match="repair.train.lambda_lpips is set twice"):
        config.load_config("p")


def test_an_experiment_override_of_an_unknown_key_fails(tmp_path, monkeypatch):
    (tmp_path / "id").mkdir()
    (tmp_path / "method.yaml").write_text("seed: 0\n")
    (tmp_path / "p.yaml").write_text("profile: p\nexperiments: {x: {data.nope: 1}}\ndata: {n: 1}\n")
    (tmp_path / "id" / "x.yaml").write_text("data: {id: x}\n")
    monkeypatch.setattr(config, "CONFIG_DIR", tmp_path)
    monkeypatch.setattr(config, "EXPERIMENT_DIR", tmp_path / "id")
    with pytest.raises(KeyError, match="data.nope"):
        config.load_config("p")


def test_unknown_experiment_names_the_ones_the_profile_runs():
    with pytest.raises(KeyError, match="cifar10, celeba, pokemon"):
        config.load_config("smoke", experiment="mnist")


def test_a_resolved_file_is_read_as_it_is(tmp_path):
    from srood_lib.__main__ import main

    out = tmp_path / "celeba.yaml"
    assert main(["resolve-config", "--profile", "smoke", "--experiment", "celeba", "--set", "seed=4",
                 "--out", str(out)]) == 0
    cfg = config.load_config(out)
    assert cfg == config.load_config("smoke", ["seed=4"], experiment="celeba")
    assert config.load_config(out, ["seed=5"])["seed"] == 5


def test_notebook_config_follows_the_injected_experiment():
    celeba = config.load_config("smoke", experiment="celeba")
    cfg = config.notebook_config("smoke", {"experiment": celeba["experiment"], "data": celeba["data"]})
    assert cfg["experiment"]["name"] == "celeba" and cfg["experiment"]["table"] == "II"
    assert config.notebook_config("smoke", {}, experiment="pokemon")["data"]["id"] == "pokemon"


def test_results_of_an_experiment_go_to_its_own_folder():
    assert config.results_dir("quick", "celeba") == config.results_dir("quick") / "celeba"


def test_a_resolved_file_of_another_experiment_is_refused(tmp_path):
    from srood_lib.__main__ import main

    out = tmp_path / "celeba.yaml"
    assert main(["resolve-config", "--profile", "smoke", "--experiment", "celeba", "--out", str(out)]) == 0
    with pytest.raises(ValueError, match="not of 'pokemon'"):
        config.load_config(out, experiment="pokemon")
    with pytest.raises(ValueError, match="restart the kernel"):
        config.notebook_config("smoke", {"experiment": {"name": "celeba"}}, experiment="pokemon")
