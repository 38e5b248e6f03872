"""vlmscope."""
