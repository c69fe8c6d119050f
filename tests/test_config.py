from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["wordnet", "wordnet-frozen", "smoke", "collapse", "collapse-linear"])
def test_shipped_configs_load(name):
    config = load_config(REPO_ROOT / "configs" / f"{name}.yaml")
    assert config.data.source == "wordnet"


def test_default_config_fine_tunes_with_scaled_loss():
    config = load_config(REPO_ROOT / "configs" / "wordnet.yaml")
    assert config.loss.variant == "scaled"
    assert config.model.trainable_encoder is True
    assert load_config(REPO_ROOT / "configs" / "wordnet-frozen.yaml").model.trainable_encoder is False


def test_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  epochs: 2\n  learning_rat: 0.1\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert "training.learning_rat" in message
    assert str(path) in message
    assert "unknown key" in message


def test_wrong_type_names_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  epochs: many\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert "training.epochs" in str(error.value)
    assert "'many'" in str(error.value)


def test_missing_file_says_which(tmp_path):
    with pytest.raises(ConfigError, match="Config file not found"):
        load_config(tmp_path / "absent.yaml")


def test_user_source_requires_path(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  source: jsonl\n")
    with pytest.raises(ConfigError, match="data.path is required"):
        load_config(path)


def test_split_shares_must_leave_training(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  split: {validation: 0.5, test: 0.6}\n")
    with pytest.raises(ConfigError, match="must be below 1.0"):
        load_config(path)
