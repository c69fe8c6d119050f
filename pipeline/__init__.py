"""Similarity-learning pipeline: Quaterion fine-tuning, Qdrant indexing and retrieval evaluation."""

__version__ = "0.1.0"
