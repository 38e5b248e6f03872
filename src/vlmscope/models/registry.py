"""The one list of supported families: the loader, the CLI, the tests and the docs all read it.

Adding a family = one adapter file + one line in FAMILIES (or `register(MyAdapter)` at run time).
"""

from __future__ import annotations

from ..errors import VlmscopeError
from ..sites import check_table
from .adapter import Adapter
from .qwen2_5_vl import Qwen2_5_VLAdapter
from .qwen2_vl import Qwen2VLAdapter
from .qwen3_vl import Qwen3VLAdapter

FAMILIES: dict[str, type[Adapter]] = {a.family: a for a in (Qwen2VLAdapter, Qwen2_5_VLAdapter, Qwen3VLAdapter)}


def register(adapter: type[Adapter]) -> type[Adapter]:
    """Add (or replace) a family; its site table is checked now rather than at the first capture."""
    if not adapter.family:
        raise VlmscopeError(f"{adapter.__name__} has no family (the config's model_type)")
    check_table(adapter.sites)
    FAMILIES[adapter.family] = adapter
    return adapter


def supported() -> str:
    return ", ".join(f"{a.display_name} ({k})" for k, a in FAMILIES.items())


def unsupported(model_type: str) -> VlmscopeError:
    return VlmscopeError(f"unsupported model type {model_type!r}; vlmscope supports {supported()}")


def adapter_class(model_type: str) -> type[Adapter]:
    try:
        return FAMILIES[model_type]
    except KeyError:
        raise unsupported(model_type) from None
