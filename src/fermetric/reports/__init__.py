"""Figures and contact sheets drawn from arrays and results (no model, no engine)."""
