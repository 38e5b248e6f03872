"""Turning per-token values into pictures: overlays, grids, reports."""
