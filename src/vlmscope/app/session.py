"""What the app keeps: the loaded models (shared, each behind a lock) and one Session per browser
session (held in a gr.State, so two sessions never see each other's uploads or answers)."""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import VlmscopeError
from .inputs import Limits
from .maps import Run

if TYPE_CHECKING:
    from ..scope import Scope


class Models:
    """The models the app serves, by display name, each with a lock: one run at a time per model,
    whichever session asks."""

    def __init__(self, scopes: dict[str, Scope]):
        if not scopes:
            raise VlmscopeError("the app needs at least one model")
        self.scopes = dict(scopes)
        self.locks = {name: threading.Lock() for name in scopes}

    @classmethod
    def of(cls, scope_or_models) -> Models:
        """A Scope, a list of Scopes or a {name: Scope} mapping."""
        if isinstance(scope_or_models, Models):
            return scope_or_models
        if isinstance(scope_or_models, dict):
            return cls(scope_or_models)
        items = list(scope_or_models) if isinstance(scope_or_models, (list, tuple)) else [scope_or_models]
        names: dict[str, Scope] = {}
        for scope in items:
            base = Path(str(getattr(scope, "source", "model")).rstrip("/")).name or "model"
            name, i = base, 2
            while name in names:
                name, i = f"{base} ({i})", i + 1
            names[name] = scope
        return cls(names)

    @property
    def names(self) -> list[str]:
        return list(self.scopes)

    def get(self, name: str | None) -> tuple[str, Scope]:
        name = name or self.names[0]
        if name not in self.scopes:
            raise VlmscopeError(f"unknown model {name!r}; loaded: {', '.join(self.names)}")
        return name, self.scopes[name]


@dataclass
class Session:
    """One browser session's state: its current run, the analyses drawn from it, its exports."""

    limits: Limits = field(default_factory=Limits)
    cancel: threading.Event = field(default_factory=threading.Event)
    run: Run | None = None
    masking: Any = None  # MaskingResult of the current run
    lens: Any = None  # Lens of the current run
    comparison: Any = None
    shown: Any = None  # the PIL image of the map on screen (PNG export)
    _dir: tempfile.TemporaryDirectory | None = None

    def new_run(self, run: Run) -> None:
        self.run, self.masking, self.lens, self.shown = run, None, None, None

    def need_run(self) -> Run:
        if self.run is None:
            raise VlmscopeError("generate an answer first")
        return self.run

    @property
    def out_dir(self) -> Path:
        """This session's own folder for exports (removed with the session object)."""
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="vlmscope-app-")
        return Path(self._dir.name)
