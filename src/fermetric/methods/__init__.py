"""Procedures that drive the engine: DMSL sub-class discovery and mitosis (``subclasses``)."""
