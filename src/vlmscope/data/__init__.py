"""Datasets vlmscope generates itself: synthetic shape scenes with exact ground truth."""
