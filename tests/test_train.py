"""Short real training runs with the real MiniLM model on a WordNet slice."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from pytorch_lightning.callbacks import Callback

from pipeline.data import load_items, split_items
from pipeline.embed import embed_texts
from pipeline.model import load_servable
from pipeline.train import train
from tests.conftest import small_config


@pytest.fixture(scope="module")
def slice_split(wordnet_dir, tmp_path_factory):
    config = small_config(tmp_path_factory.mktemp("split"))
    return split_items(load_items(config.data), config.data, config.seed)


@pytest.fixture(scope="module")
def trained(slice_split, tmp_path_factory):
    config = small_config(tmp_path_factory.mktemp("trained"))
    return config, train(config, slice_split.train, slice_split.validation)


def test_training_lowers_validation_loss(trained):
    _, result = trained
    losses = result.validation_losses()
    assert len(losses) == 3
    assert not np.isnan(result.initial_validation_loss)
    assert losses[-1] < result.initial_validation_loss


def test_run_directory_contents(trained):
    config, result = trained
    run_dir = result.run_dir
    assert (run_dir / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "logs" / "metrics.csv").is_file()
    assert (run_dir / "servable" / "config.json").is_file()
    assert not (run_dir / "servable.partial").exists()
    header = (run_dir / "logs" / "metrics.csv").read_text().splitlines()[0]
    assert "train_loss" in header
    assert "validation_loss" in header


def test_frozen_checkpoint_leaves_out_encoder(trained):
    _, result = trained
    checkpoint = torch.load(result.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    keys = list(checkpoint["state_dict"])
    assert keys, "checkpoint has no weights"
    assert not any(".transformer." in key for key in keys), "frozen MiniLM weights were saved"
    assert all(key.startswith("_model.head.") for key in keys)
    assert (result.run_dir / "checkpoints" / "last.ckpt").stat().st_size < 10_000_000


def test_servable_same_embeddings_in_new_process(trained, slice_split, tmp_path):
    _, result = trained
    texts = [item.text for item in slice_split.test[:20]]
    expected = embed_texts(load_servable(result.servable_dir), texts, show_progress=False)

    texts_path = tmp_path / "texts.json"
    texts_path.write_text(json.dumps(texts))
    output = tmp_path / "vectors.npy"
    code = (
        "import json, sys, numpy as np\n"
        "from pipeline.model import load_servable\n"
        "from pipeline.embed import embed_texts\n"
        "texts = json.load(open(sys.argv[2]))\n"
        "np.save(sys.argv[3], embed_texts(load_servable(sys.argv[1]), texts, show_progress=False))\n"
    )
    completed = subprocess.run([sys.executable, "-c", code, str(result.servable_dir), str(texts_path), str(output)],
                               capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    np.testing.assert_allclose(np.load(output), expected, atol=1e-5)


def test_fine_tuned_differs_from_pretrained(trained, slice_split):
    from pipeline.model import build_pretrained_model

    config, result = trained
    texts = [item.text for item in slice_split.test[:10]]
    tuned = embed_texts(load_servable(result.servable_dir), texts, show_progress=False)
    pretrained = embed_texts(build_pretrained_model(config), texts, show_progress=False)
    assert np.abs(tuned - pretrained).max() > 1e-3


def test_resume_continues_from_last_checkpoint(make_config, slice_split):
    first = make_config(training={"epochs": 1})
    train(first, slice_split.train, slice_split.validation)
    resumed = make_config(training={"epochs": 2})
    result = train(resumed, slice_split.train, slice_split.validation, resume=True)
    epochs = [row["epoch"] for row in result.history]
    assert epochs == [0, 1]
    assert np.isnan(result.initial_validation_loss), "a resumed run must not re-measure the untrained loss"


class ModeRecorder(Callback):
    def __init__(self):
        self.encoder_training = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        encoder = pl_module.model.encoders["default"]
        self.encoder_training.append(encoder.transformer.training)


def test_trainable_encoder_trains_with_dropout(make_config, slice_split):
    config = make_config(model={"trainable_encoder": True, "head": "empty"},
                         data={"max_groups": 400}, training={"epochs": 1, "groups_per_batch": 8,
                                                              "learning_rate": 1e-4})
    train_items = slice_split.train[:120]
    recorder = ModeRecorder()
    result = train(config, train_items, slice_split.validation[:60], callbacks=[recorder])
    assert recorder.encoder_training, "no training batch ran"
    assert all(recorder.encoder_training), "the encoder ran in eval mode: dropout was off"

    from pipeline.model import build_pretrained_model

    texts = [item.text for item in slice_split.test[:5]]
    tuned = embed_texts(load_servable(result.servable_dir), texts, show_progress=False)
    pretrained = embed_texts(build_pretrained_model(config), texts, show_progress=False)
    assert np.abs(tuned - pretrained).max() > 1e-4


def test_fresh_run_replaces_old_checkpoints(make_config, slice_split):
    train(make_config(training={"epochs": 2}), slice_split.train, slice_split.validation)
    result = train(make_config(training={"epochs": 1}), slice_split.train, slice_split.validation)
    files = sorted(path.name for path in (result.run_dir / "checkpoints").iterdir())
    assert files == ["epoch000.ckpt", "last.ckpt"]
    assert (result.run_dir / "checkpoints" / "last.ckpt").resolve().name == "epoch000.ckpt"
    assert [row["epoch"] for row in result.history] == [0]


class Interrupt(Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == 3:
            raise KeyboardInterrupt


def test_interrupted_run_keeps_previous_model(make_config, slice_split):
    from pipeline.train import TrainingInterrupted

    first = train(make_config(training={"epochs": 1}), slice_split.train, slice_split.validation)
    version = (first.servable_dir / "pipeline_version.json").read_text()
    config_text = (first.run_dir / "config.yaml").read_text()

    with pytest.raises(TrainingInterrupted, match="--resume"):
        train(make_config(training={"epochs": 5}), slice_split.train, slice_split.validation,
              callbacks=[Interrupt()])
    assert (first.servable_dir / "pipeline_version.json").read_text() == version
    assert (first.run_dir / "config.yaml").read_text() == config_text
    assert "epochs: 1\n" in config_text
