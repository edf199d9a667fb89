"""Nearest-expression retrieval over face embeddings (faiss); see ``index.py``."""

from .index import EmbeddingIndex, Neighbor, contact_sheet, model_fingerprint

__all__ = ["EmbeddingIndex", "Neighbor", "contact_sheet", "model_fingerprint"]
