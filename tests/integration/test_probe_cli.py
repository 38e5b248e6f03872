"""`vlmscope shapes --hard` -> `extract --preset halp` -> `probe train` -> `probe apply` on the
bundled model: the whole loop runs, labels match the answers, the controls stay near chance."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import vlmscope.store
from vlmscope.cli import main


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe-e2e")
    assert main(["shapes", "--hard", "--n", "24", "--seed", "5", "--out", str(root / "data")]) == 0
    assert (
        main(
            [
                "extract",
                str(root / "data" / "questions.csv"),
                "--preset",
                "halp",
                "--out",
                str(root / "store"),
                "--batch-size",
                "8",
                "--max-new-tokens",
                "4",
                "--no-progress",
            ]
        )
        == 0
    )
    return root / "store"


def test_train_and_apply_end_to_end(store, tmp_path, capsys):
    table = vlmscope.store.open(store).samples()
    # every shapes answer is one lower-case word, so plain comparison is an independent reference
    wrong = sum(g.strip().lower() != a for g, a in zip(table["generated_answer"], table["gt_answer"]))
    assert 3 <= wrong <= 21, "the hard split should give both right and wrong answers"

    out = tmp_path / "probes"
    assert main(["probe", "train", str(store), "--folds", "3", "--seed", "0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "control AUROC" in printed and "n = 24" in printed
    res = json.loads((out / "result.json").read_text())
    assert res["label"]["counts"] == {"wrong": wrong, "right": 24 - wrong} and res["label"]["missing"] == 0
    features = [r["feature"] for r in res["rows"]]
    assert features == ["vf/vision.blocks.3"] + [f"{g}/llm.layers.{i}" for g in ("vt", "qt") for i in range(4)]
    assert all(len(r["fold_auroc"]) == 3 for r in res["rows"])
    assert abs(np.mean([r["control_auroc_mean"] for r in res["rows"]]) - 0.5) < 0.15
    with (out / "result.csv").open() as f:
        assert [r["feature"] for r in csv.DictReader(f)] == features
    assert (out / "auroc_by_layer.png").stat().st_size > 0 and (out / "auroc_by_layer.pdf").stat().st_size > 0

    risk = tmp_path / "risk.csv"
    assert main(["probe", "apply", str(out), str(store), "--out", str(risk)]) == 0
    with risk.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["sample_id"] for r in rows] == list(table["sample_id"])
    assert all(0.0 <= float(r["risk"]) <= 1.0 for r in rows)


def test_mlp_probe_on_one_layer(store, tmp_path):
    out = tmp_path / "mlp"
    assert (
        main(
            ["probe", "train", str(store), "--probe", "mlp", "--features", "qt[-1]", "--folds", "3", "--out", str(out)]
        )
        == 0
    )
    res = json.loads((out / "result.json").read_text())
    assert res["probe"] == "mlp" and [r["feature"] for r in res["rows"]] == ["qt/llm.layers.3"]
    assert 0.0 <= res["rows"][0]["auroc_mean"] <= 1.0


def test_bad_label_exits_2(store, capsys):
    assert main(["probe", "train", str(store), "--label", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no sample column 'nope'" in err and "question" in err
