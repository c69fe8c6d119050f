"""Batch encoding of texts with a ``SimilarityModel``, with a progress bar.

Texts are encoded in order of length, so each batch pads to a similar length, and
the result is put back in the input order.
"""

from __future__ import annotations

import numpy as np
import torch
from quaterion_models import SimilarityModel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress_bar(transient: bool = False, disable: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=transient,
        disable=disable,
    )


@torch.inference_mode()
def embed_texts(model: SimilarityModel, texts: list[str], batch_size: int = 64,
                description: str = "Encoding", show_progress: bool = True) -> np.ndarray:
    """Encode texts with the model's encoders and head.

    Returns:
        float32 array of shape (len(texts), embedding_size), rows in input order.
    """
    model.eval()
    collate = model.get_collate_fn()
    order = np.argsort([len(text) for text in texts], kind="stable")
    output = None

    with progress_bar(disable=not show_progress) as progress:
        task = progress.add_task(description, total=len(texts))
        for start in range(0, len(texts), batch_size):
            positions = order[start:start + batch_size]
            batch = collate([texts[position] for position in positions])
            vectors = model(batch).float().numpy()
            if output is None:
                output = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            output[positions] = vectors
            progress.advance(task, len(positions))

    if output is None:
        return np.empty((0, model.head.output_size), dtype=np.float32)
    return output


@torch.inference_mode()
def apply_head(model: SimilarityModel, encoder_embeddings: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Run only the head over embeddings that the (frozen) encoder already produced.

    Valid only when the model's encoder produced ``encoder_embeddings`` and is frozen.
    The main job uses it to encode the test texts once for both the baseline and the
    fine-tuned model.
    """
    model.eval()
    parts = []
    for start in range(0, len(encoder_embeddings), batch_size):
        chunk = torch.from_numpy(encoder_embeddings[start:start + batch_size])
        parts.append(model.head(chunk).float().numpy())
    if not parts:
        return np.empty((0, model.head.output_size), dtype=np.float32)
    return np.concatenate(parts)
