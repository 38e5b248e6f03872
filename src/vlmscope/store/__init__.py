"""The feature store: HDF5 parts written crash-safely, read back as one dataset.

    import vlmscope.store
    with vlmscope.store.open("features/") as store:
        store["vt/llm.layers.14"].read()      # [N, D]
        store["vision.merger"][0]             # [Nv, D] of row 0
        store.samples()["generated_answer"]

The layout is described in `vlmscope.store.layout` and docs/extraction.md.
"""

from .reader import Column, Store, open

__all__ = ["open", "Store", "Column"]
