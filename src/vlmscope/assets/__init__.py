"""Files shipped with the package: the bundled shapes model and its example images."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent


EXAMPLES = HERE / "examples"
EXAMPLE_PREFIX = "example:"  # the command line's name for them: example:, example:2, example:3


def example_image(n: int = 1) -> Path:
    """The n-th example image shipped with vlmscope (1-3: shapes scenes the bundled model knows,
    each with a JSON of its objects beside it), reachable from any directory."""
    from ..errors import VlmscopeError

    names = sorted(p.name for p in EXAMPLES.glob("shapes_demo*.png"))
    if not 1 <= n <= len(names):
        raise VlmscopeError(f"there are example images 1 to {len(names)}, not {n}")
    return EXAMPLES / names[n - 1]


def resolve_example(name: str) -> str:
    """``example:`` / ``example:N`` -> the path of example image N; any other name as it is."""
    from ..errors import VlmscopeError

    if not name.startswith(EXAMPLE_PREFIX):
        return name
    number = name[len(EXAMPLE_PREFIX) :] or "1"
    if not number.isdigit():
        raise VlmscopeError(f"{name!r}: write example:, example:2 or example:3")
    return str(example_image(int(number)))


def bundled_model_dir() -> Path | None:
    path = HERE / "shapes-model"
    return path if (path / "config.json").is_file() else None
