"""Datasets: readers for VQA sources and the synthetic shapes scenes with exact ground truth."""
