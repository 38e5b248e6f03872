"""Every example in README.md and docs/*.md runs on the bundled model.

A file's blocks run in order in one temporary directory (holding a link to the repository's
`src/`, the examples' image paths): python blocks in one namespace per file, and each
`vlmscope ...` line of a bash / sh / console block through the installed entry point, so a
block may read what an earlier one wrote. A block is skipped only when the line before its fence says
`<!-- skip-test: reason -->` (a hub model, a GPU, a synopsis with placeholders); the reasons
show in pytest's skip summary (`-rs`).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from vlmscope.assets import bundled_model_dir

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP = re.compile(r"<!--\s*skip-test:\s*(.*?)\s*-->")
FENCE = re.compile(r"^```(\w*)\s*$")
ENTRY = Path(sys.executable).with_name("vlmscope")

pytestmark = pytest.mark.skipif(bundled_model_dir() is None, reason="the bundled shapes model is not installed")


@dataclass
class Block:
    file: Path
    line: int
    lang: str
    code: str
    skip: str | None

    @property
    def id(self) -> str:
        return f"{self.file.name}:{self.line}"


def blocks(path: Path) -> list[Block]:
    out, lines, i = [], path.read_text().splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m or not m.group(1):
            i += 1
            continue
        start, before = i, next((ln for ln in reversed(lines[:i]) if ln.strip()), "")
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            i += 1
        skip = SKIP.search(before)
        out.append(Block(path, start + 1, m.group(1), "\n".join(lines[start + 1 : i]), skip.group(1) if skip else None))
        i += 1
    return out


ALL = [b for f in FILES for b in blocks(f)]
PYTHON = [b for b in ALL if b.lang == "python"]
SHELL = [b for b in ALL if b.lang in ("bash", "sh", "console", "shell")]


def commands(code: str) -> list[str]:
    """The `vlmscope ...` commands of a shell block: continuations joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    out, names = [], {}
    for line in joined.splitlines():
        line = line.strip().removeprefix("$ ")
        assignment = re.fullmatch(r"(\w+)=(\S+)", line)
        if assignment:
            names[assignment.group(1)] = assignment.group(2)
        elif line.startswith("vlmscope "):
            line = re.sub(r"\$(\w+)", lambda m: names.get(m.group(1), m.group(0)), line)
            out.append(shlex.split(line, comments=True))
    return out


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "src").symlink_to(ROOT / "src")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_skip_list_is_short_and_says_why():
    skipped = [b for b in ALL if b.skip is not None]
    for b in skipped:
        assert len(b.skip) >= 8, f"{b.id}: say why the example cannot run here"
    print("\n".join(f"skipped {b.id}: {b.skip}" for b in skipped))
    assert len(skipped) <= len(ALL) // 2


@pytest.mark.parametrize("path", sorted({b.file for b in PYTHON + SHELL}), ids=lambda p: p.name)
def test_examples_run(path, workdir):
    """The file's blocks in order, python and shell, in one directory: a later block may read
    what an earlier one wrote."""
    namespace: dict = {"__name__": "__readme__"}
    for b in [b for b in ALL if b.file == path and b.skip is None]:
        if b.lang == "python":
            try:
                exec(compile(b.code, b.id, "exec"), namespace)
            except Exception as e:  # name the block, not this line
                raise AssertionError(f"{b.id}: {type(e).__name__}: {e}") from e
        elif b in SHELL:
            for argv in commands(b.code):
                env = {**os.environ, "PYTHONWARNINGS": "ignore"}
                done = subprocess.run(
                    [str(ENTRY), *argv[1:]], cwd=workdir, capture_output=True, text=True, timeout=300, env=env
                )
                assert done.returncode == 0, f"{b.id}: {shlex.join(argv)}\n{done.stderr[-2000:]}"
