"""What a user notices first: --help, the README's command lines and file names, the bundled
model's warning on images it does not know, and `vlmscope shapes` data it was not trained on."""

from __future__ import annotations

import argparse
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vlmscope
from vlmscope.assets import bundled_model_dir
from vlmscope.cli import _parsers, build_parser, main

ROOT = Path(__file__).resolve().parents[2]
IMG = str(Path(vlmscope.__file__).parent / "assets" / "examples" / "shapes_demo.png")
needs_model = pytest.mark.skipif(bundled_model_dir() is None, reason="the bundled shapes model is not installed")


def _flags():
    for parser in _parsers(build_parser()):
        for action in parser._actions:
            if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                yield parser, action


def test_every_flag_of_every_command_has_help():
    missing = [f"{p.prog} {a.option_strings or a.dest}" for p, a in _flags() if not (a.help or "").strip()]
    assert not missing


def test_help_shows_defaults_but_no_none_noise():
    for parser in _parsers(build_parser()):
        text = parser.format_help()
        assert "(default: None)" not in text and "(default: False)" not in text, parser.prog
    run = build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    assert "(default: vlmscope-out/run)" in run and "(default: 32)" in run and "(default: logit)" in run
    shown = sum("(default:" in p.format_help() for p in _parsers(build_parser()))
    assert shown >= 10  # defaults are still there where a flag has one


def test_version_command_order_and_examples(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"vlmscope {vlmscope.__version__}"
    top = build_parser().format_help()
    listed = re.findall(r"^    (\w+) ", top, re.M)
    assert listed[:2] == ["run", "app"] and len(listed) == 15
    assert "examples:" in top and "vlmscope run example:" in top


def test_one_answer_budget_and_defaults_shown_everywhere():
    commands = build_parser()._subparsers._group_actions[0].choices
    for name in ("run", "attention", "capture", "mask", "compare"):
        text = " ".join(commands[name].format_help().split())
        assert "longest generated answer (default: 32)" in text, name
    mask = " ".join(commands["mask"].format_help().split())
    assert "(default: vlmscope-out/mask" in mask
    assert "default: the bundled shapes model" in " ".join(commands["run"].format_help().split())


def test_example_names_an_image_shipped_with_vlmscope(tmp_path, capsys):
    from vlmscope.assets import example_image, resolve_example

    assert resolve_example("example:") == str(example_image()) == IMG
    assert Path(resolve_example("example:3")).is_file() and resolve_example("a.png") == "a.png"
    assert main(["run", "example:9", "--prompt", "hi", "--out", str(tmp_path / "o")]) == 2
    assert "there are example images 1 to 3, not 9" in capsys.readouterr().err


def _section(text: str, start: str) -> str:
    return text[text.index(start) :]


def test_the_readme_lists_every_flag_of_run():
    readme = (ROOT / "README.md").read_text()
    line = re.search(r"^vlmscope run IMG --prompt P \[.*?(?=^\S|^$)", readme, re.M | re.S)
    assert line, "the per-token section's `vlmscope run IMG --prompt P [...]` line"
    model_flags = _section(readme, "Every command that runs a model takes the same model flags")[:600]
    run = build_parser()._subparsers._group_actions[0].choices["run"]
    for action in run._actions:
        for flag in action.option_strings:
            if flag.startswith("--") and flag != "--help":
                assert flag in line.group(0) or f"`{flag}" in model_flags, flag


@needs_model
def test_output_files_are_the_ones_the_docs_name(tmp_path, capsys):
    readme, masking = (ROOT / "README.md").read_text(), (ROOT / "docs" / "masking.md").read_text()
    common = ["--prompt", "What colour is the square?", "--max-new-tokens", "2", "--device", "cpu"]
    assert main(["attention", IMG, *common, "--out", str(tmp_path / "a")]) == 0
    assert main(["run", IMG, *common, "--methods", "raw", "--out", str(tmp_path / "r")]) == 0
    assert main(["mask", IMG, *common, "--mode", "both", "--out", str(tmp_path / "m")]) == 0
    documented = {
        "a": _section(readme, "`vlmscope attention` writes")[:420],
        "r": _section(readme, "`vlmscope run` writes")[:200],
        "m": _section(masking, "## Outputs")[:1400],
    }
    for out, doc in documented.items():
        names = {m.group(1) for m in re.finditer(r"`([\w{}./-]+\.(?:png|pdf|html|npz|json|csv))`", doc)}
        if out == "m":  # the masking docs name the heatmaps folder once
            names = {f"heatmaps/{n}" if n.startswith("image") else n for n in names}
        patterns = [
            re.escape(n)
            .replace(r"\{word\}", r"\w+")
            .replace(r"\{k\}", r"\d+")
            .replace(r"\{j\}", r"\d+")
            .replace(r"\.\.\._", r"[\w/]+_")
            for n in names
        ]
        written = [p.relative_to(tmp_path / out).as_posix() for p in (tmp_path / out).rglob("*") if p.is_file()]
        for f in written:
            if f != "vlmscope-output.json":
                assert any(re.fullmatch(p, f) for p in patterns), (out, f, sorted(names))
        for p in patterns:
            assert any(re.fullmatch(p, f) for f in written), (out, p, written)


def _photo(seed: int) -> Image.Image:
    """A portrait-like picture: a textured face on a plain light wall."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:240, 0:320]
    wall = np.full((240, 320, 3), (235, 230, 220), np.float64)
    face = ((x - 160) / 80) ** 2 + ((y - 140) / 100) ** 2 < 1
    wall[face] = (np.array([200, 150, 120]) + rng.normal(0, 20, (240, 320, 3)))[face]
    return Image.fromarray(np.clip(wall, 0, 255).astype(np.uint8))


def test_shapes_scenes_look_like_shapes_and_photos_do_not():
    from vlmscope.data.shapes import make_dataset
    from vlmscope.scope import shapes_like

    scenes = [r.image for d in ("easy", "hard") for r in make_dataset(100, seed=31, difficulty=d)]
    assert all(shapes_like(im) for im in scenes)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:240, 0:320]
    others = [
        _photo(1),
        Image.fromarray(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)),  # noise
        Image.fromarray(np.stack([x * 255 // 320, y * 255 // 240, np.full_like(x, 120)], -1).astype(np.uint8)),
        Image.fromarray(np.full((100, 100, 3), 30, np.uint8)),  # a dark frame
    ]
    assert not any(shapes_like(im) for im in others)


@needs_model
def test_the_bundled_model_warns_once_on_other_images(monkeypatch, tmp_path, capsys):
    import vlmscope.scope

    scope = vlmscope.load(device="cpu")
    monkeypatch.setattr(vlmscope.scope, "_domain_checks_left", vlmscope.scope.DOMAIN_CHECKS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scope.prepare(vlmscope.Example("What colour is the square?", images=[IMG]))
        assert not caught  # a shapes scene: silent
        for seed in (1, 2):
            scope.prepare(vlmscope.Example("Who is this?", images=[_photo(seed)]))
    assert [w.category.__name__ for w in caught] == ["OutOfDomainWarning"]  # once per process
    assert "only knows synthetic scenes of coloured shapes" in str(caught[0].message)
    monkeypatch.setattr(vlmscope.scope, "_domain_checks_left", vlmscope.scope.DOMAIN_CHECKS)
    _photo(3).save(tmp_path / "portrait.png")
    assert (
        main(
            [
                "capture",
                str(tmp_path / "portrait.png"),
                "--prompt",
                "Who?",
                "--sites",
                "llm.norm",
                "--device",
                "cpu",
                "--out",
                str(tmp_path / "c"),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vlmscope: warning: the bundled shapes model only knows")


def test_shapes_default_seed_is_not_training_data(tmp_path):
    from vlmscope.data import shapes

    default = build_parser().parse_args(["shapes", "--n", "3", "--out", "x"]).seed
    assert default == shapes.DEFAULT_SEED and default not in shapes.TRAINING_SEEDS
    assert shapes.make_dataset(3)[0].image_id == f"shapes_{default}_000000"
    training = [np.asarray(r.image) for r in shapes.make_dataset(20, seed=shapes.TRAINING_SEEDS[0])]
    for r in shapes.make_dataset(20):
        assert not any(np.array_equal(np.asarray(r.image), t) for t in training)
    docs = (ROOT / "docs" / "shapes-model.md").read_text()
    assert all(str(s) in docs for s in shapes.TRAINING_SEEDS) and str(default) in docs
