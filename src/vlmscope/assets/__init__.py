"""Files shipped with the package: the bundled shapes model and its example images."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent


def bundled_model_dir() -> Path | None:
    path = HERE / "shapes-model"
    return path if (path / "config.json").is_file() else None
