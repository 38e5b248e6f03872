"""Probes on synthetic stores whose labels are known functions of the features, checked against
scikit-learn, brute force and the ground truth of the synthetic data."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

import vlmscope.store
from vlmscope.errors import VlmscopeError
from vlmscope.probes import answers_match, apply, normalize_answer, parse_features, train
from vlmscope.probes.cv import folds_of, prior_baseline, shuffled
from vlmscope.probes.labels import make_labels
from vlmscope.probes.models import LogisticProbe, MLPProbe
from vlmscope.store.layout import FORMAT, RUN_FILE


def write_store(path, features: dict, samples: dict, ragged: dict | None = None, layers: int = 4):
    """A one-part store in the documented layout (docs/extraction.md), written with h5py alone."""
    path.mkdir(parents=True)
    n = len(next(iter(samples.values())))
    (path / RUN_FILE).write_text(
        json.dumps(
            {
                "format": FORMAT,
                "version": 1,
                "model": {"source": "synthetic", "layers": layers},
                "run": {"total_rows": n, "checkpoint_every": n},
            }
        )
    )
    with h5py.File(path / "part-000000.h5", "w") as f:
        f.attrs.update({"format": FORMAT, "version": 1, "part": 0, "first_row": 0, "stop_row": n, "rows": n})
        g = f.create_group("samples")
        g["index"] = np.arange(n)
        g["sample_id"] = np.array([f"s{i}" for i in range(n)], dtype=h5py.string_dtype())
        for k, v in samples.items():
            g[k] = np.array(v, dtype=h5py.string_dtype()) if np.asarray(v).dtype.kind in "UO" else np.asarray(v)
        for k, v in features.items():
            f[f"features/{k}"] = v
        for k, rows in (ragged or {}).items():
            grp = f.create_group(f"features/{k}")
            grp.attrs["ragged"] = True
            grp["values"] = np.concatenate(rows)
            grp["offsets"] = np.cumsum([0] + [len(r) for r in rows])
        fg = f.create_group("failures")
        fg["index"] = np.zeros(0, np.int64)
        for k in ("sample_id", "stage", "reason"):
            fg[k] = np.array([], dtype=h5py.string_dtype())
    return path


def linear_task(n=300, d=12, seed=0, noise=0.5):
    """Labels y = [w.x + noise > 0]: a probe can reach the noise ceiling, computed by brute force."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32) * rng.uniform(0.5, 20, d).astype(np.float32)  # uneven scales
    w = rng.normal(size=d) / X.std(0)
    logit = X @ w
    y = (logit + noise * logit.std() * rng.normal(size=n) > 0).astype(np.int64)
    return X, y, logit


@pytest.fixture(scope="module")
def synthetic_store(tmp_path_factory):
    """vt/qt at 4 layers: layers 2 and 3 of qt carry the label linearly, the rest is noise;
    answers give the label through the normalisation rules."""
    X, y, _ = linear_task(n=240, d=10, seed=1)
    rng = np.random.default_rng(2)
    feats = {"vf/vision.blocks.3": rng.normal(size=(240, 6)).astype(np.float32)}
    for i in range(4):
        feats[f"vt/llm.layers.{i}"] = rng.normal(size=(240, 8)).astype(np.float32)
        feats[f"qt/llm.layers.{i}"] = X if i >= 2 else rng.normal(size=(240, 10)).astype(np.float32)
    gt = np.array(["two", "Yes", "the red circle"] * 80)
    right = np.array(["2.", "yes, it is", "Red circle!"] * 80)
    wrong = np.array(["three", "no", "blue circle"] * 80)
    gen = np.where(y == 1, wrong, right)
    samples = {"question": np.array(["q"] * 240), "gt_answer": gt, "generated_answer": gen, "flag": y.astype(np.int64)}
    tokens = [rng.normal(size=(3 + i % 2, 4)).astype(np.float32) for i in range(240)]
    path = write_store(tmp_path_factory.mktemp("st") / "store", feats, samples, ragged={"vision.merger": tokens})
    return path, y


# ---- labels -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "gen, ref, same",
    [
        ("Two.", "2", True),
        ("the Circle", "circle", True),
        ("Yes, there is one.", "yes", True),
        ("yeah", "yes", True),
        ("nope", "no", True),
        ("No", "yes", False),
        ("red", "orange", False),
        ("a red square", "red square", True),
        ("right", "left", False),
        ("right", "yes", False),
        ("", "red", False),
        ("three", "four", False),
    ],
)
def test_answer_normalisation(gen, ref, same):
    assert answers_match(gen, ref) is same
    assert normalize_answer("The  LEFT-hand side, twenty") == "left hand side 20"


def test_rows_without_a_reference_are_counted_and_left_out():
    samples = {
        "generated_answer": np.array(["red", "blue", "two", "x"]),
        "gt_answer": np.array(["red", "", "2", "nan"]),
    }
    lab = make_labels(samples)
    assert lab.y.tolist() == [0, -1, 0, -1] and lab.n_missing == 2
    assert lab.counts() == {"wrong": 0, "right": 2}


def test_label_column_positive_class():
    lab = make_labels({"flag": np.array([0, 1, 1, 0]), "kind": np.array(["b", "a", "", "b"])}, "flag")
    assert lab.y.tolist() == [0, 1, 1, 0] and lab.positive == "1"
    lab = make_labels({"kind": np.array(["b", "a", "", "b"])}, "kind")
    assert lab.y.tolist() == [1, 0, -1, 1] and lab.positive == "b" and lab.n_missing == 1


# ---- probes and cross-validation ----------------------------------------------------------------


def test_logistic_probe_matches_sklearn_pipeline():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y, _ = linear_task(n=200)
    ours = LogisticProbe().fit(X[:150], y[:150]).score(X[150:])
    ref = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(X[:150], y[:150])
    np.testing.assert_allclose(ours, ref.predict_proba(X[150:])[:, 1], atol=1e-4)


def test_linear_label_recovered_and_shuffled_label_near_chance():
    from sklearn.metrics import roc_auc_score

    X, y, logit = linear_task(n=400, noise=0.3)
    ceiling = roc_auc_score(y, logit)  # the true direction: no probe can do much better
    result_rows = []
    for labels in (y, shuffled(y, 0)):
        aucs = []
        for tr, te in folds_of(labels, 5, 0):
            aucs.append(roc_auc_score(labels[te], LogisticProbe().fit(X[tr], labels[tr]).score(X[te])))
        result_rows.append(np.mean(aucs))
    assert result_rows[0] > 0.9 and result_rows[0] > ceiling - 0.05
    assert abs(result_rows[1] - 0.5) < 0.1


def test_folds_are_stratified_and_standardisation_stays_in_the_fold():
    X, y, _ = linear_task(n=103)
    folds = folds_of(y, 5, 3)
    assert sorted(np.concatenate([te for _, te in folds]).tolist()) == list(range(103))
    for tr, te in folds:
        assert abs(y[te].mean() - y.mean()) < 0.05
        probe = LogisticProbe().fit(X[tr], y[tr])
        np.testing.assert_allclose(probe.mean, X[tr].mean(0), rtol=1e-5, atol=1e-4)


def test_mlp_and_logreg_agree_on_an_easy_case():
    X, y, _ = linear_task(n=300, d=6, noise=0.1, seed=4)
    tr, te = np.arange(220), np.arange(220, 300)
    a = LogisticProbe().fit(X[tr], y[tr]).score(X[te])
    mlp = MLPProbe(seed=0, max_epochs=60, patience=8)
    b = mlp.fit(X[tr], y[tr]).score(X[te])
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y[te], a) > 0.9 and roc_auc_score(y[te], b) > 0.9
    assert np.mean((a > 0.5) == (b > 0.5)) > 0.85
    assert 1 <= mlp.epochs_run <= 60


def test_prior_baseline_by_brute_force():
    keys = np.array(["a", "b"] * 50)
    y = np.array([1, 0] * 50)  # the question alone decides the label
    assert min(prior_baseline(keys, y, 5, 0)) == 1.0
    y2 = np.random.default_rng(0).integers(0, 2, 100)
    assert abs(np.mean(prior_baseline(np.array(["q"] * 100), y2, 5, 0)) - 0.5) < 1e-9  # one question: constant


# ---- train / save / apply on a store ------------------------------------------------------------


def test_train_on_store_finds_the_informative_layers(synthetic_store, tmp_path):
    path, y = synthetic_store
    result = train(path, folds=4, seed=1)
    rows = {r["feature"]: r for r in result.rows}
    assert list(rows)[:2] == ["vf/vision.blocks.3", "vt/llm.layers.0"]
    assert result.label["counts"] == {"wrong": int(y.sum()), "right": int((1 - y).sum())}
    for i in range(4):
        qt, vt = rows[f"qt/llm.layers.{i}"], rows[f"vt/llm.layers.{i}"]
        assert (qt["auroc_mean"] > 0.85) is (i >= 2)
        assert abs(vt["auroc_mean"] - 0.5) < 0.15 and abs(qt["control_auroc_mean"] - 0.5) < 0.15
        assert len(qt["fold_auroc"]) == 4
    assert result.best()["feature"] in ("qt/llm.layers.2", "qt/llm.layers.3")
    assert result.baseline["ap"] == pytest.approx(y.mean())
    text = result.table()
    assert "n = 240" in text and "control AUROC" in text and "majority baseline" in text
    out = result.save(tmp_path / "p")
    for name in (
        "result.json",
        "result.csv",
        "auroc_by_layer.png",
        "auroc_by_layer.pdf",
        "probe.json",
        "probe.safetensors",
    ):
        assert (out / name).is_file(), name
    saved = json.loads((out / "result.json").read_text())
    assert saved["rows"][0]["feature"] == "vf/vision.blocks.3" and saved["n"] == 240

    # the saved probes, applied to the same store, reproduce probes refitted on every row
    scores = apply(out, path)
    X = vlmscope.store.open(path)["qt/llm.layers.3"].read()
    ref = LogisticProbe(seed=1).fit(X, y).score(X)
    np.testing.assert_allclose(scores.risk["qt/llm.layers.3"], ref, atol=1e-5)
    assert scores.auroc["qt/llm.layers.3"] > 0.85 and scores.best == result.best()["feature"]
    csv_path = scores.write_csv(tmp_path / "risk.csv")
    assert csv_path.read_text().splitlines()[0].startswith("index,sample_id,risk,")


def test_feature_specs(synthetic_store):
    path, _ = synthetic_store
    with vlmscope.store.open(path) as st:
        cols = lambda spec: [f.column for f in parse_features(st, spec)]  # noqa: E731
        assert cols("vt[0,2]") == ["vt/llm.layers.0", "vt/llm.layers.2"]
        assert cols("qt[-1],vf") == ["qt/llm.layers.3", "vf/vision.blocks.3"]
        assert cols("qt[n/2]") == ["qt/llm.layers.2"]
        assert cols("vt/*.1,qt") == ["vt/llm.layers.1"] + [f"qt/llm.layers.{i}" for i in range(4)]
        assert parse_features(st, "qt[1]")[0].layer == 1 and parse_features(st, "qt[1]")[0].group == "qt"
        with pytest.raises(VlmscopeError, match="unknown feature 'nope'.*columns:"):
            parse_features(st, "nope")
        with pytest.raises(VlmscopeError, match=r"layer index 9 out of range|9"):
            parse_features(st, "vt[9]")


def test_label_column_trains(synthetic_store):
    path, _ = synthetic_store
    result = train(path, label="flag", features="qt[3]", folds=3, refit=False)
    assert result.label["positive"] == "1" and result.rows[0]["auroc_mean"] > 0.85


# ---- errors a user can cause ------------------------------------------------------------------


def test_store_without_generated_answer(tmp_path):
    path = write_store(tmp_path / "s", {"vf/x": np.zeros((10, 2), np.float32)}, {"gt_answer": np.array(["a"] * 10)})
    with pytest.raises(VlmscopeError, match="no 'generated_answer' column.*--preset halp.*--label COLUMN"):
        train(path)


def test_one_class_label(tmp_path):
    path = write_store(
        tmp_path / "s",
        {"vf/x": np.zeros((10, 2), np.float32)},
        {"gt_answer": np.array(["red"] * 10), "generated_answer": np.array(["Red."] * 10)},
    )
    with pytest.raises(VlmscopeError, match="one class only: all 10 labelled rows are 'right', none 'wrong'"):
        train(path)


def test_ragged_feature(synthetic_store):
    path, _ = synthetic_store
    with pytest.raises(VlmscopeError, match="'vision.merger' is ragged.*fixed-size"):
        train(path, features="vision.merger")


def test_other_bad_input(synthetic_store):
    path, _ = synthetic_store
    with pytest.raises(VlmscopeError, match="unknown probe 'svm'; choose from logreg, mlp"):
        train(path, probe="svm")
    with pytest.raises(VlmscopeError, match="no sample column 'nope'"):
        train(path, label="nope")
    three = r"label column 'gt_answer' has 3 values \('Yes', 'the red circle', 'two'\)"
    with pytest.raises(VlmscopeError, match=three):
        train(path, label="gt_answer")
    with pytest.raises(VlmscopeError, match="--folds must be at least 2"):
        train(path, folds=1)
    with pytest.raises(VlmscopeError, match="not a probe directory"):
        apply(path, path)
