"""Dataset sources: column names, validation one row at a time, and images that must stay inside
the images directory."""

from __future__ import annotations

import json

import pytest
from conftest import random_image

from vlmscope import VlmscopeError
from vlmscope.data.sources import open_source


@pytest.fixture
def images_dir(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    random_image(40, 60, 0).save(d / "a.png")
    random_image(40, 60, 1).save(d / "b.jpg")
    (d / "corrupt.png").write_bytes(b"not an image")
    (tmp_path / "secret.png").write_bytes(b"outside")
    return d


def _csv(path, header, rows):
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_vqa_csv_columns_and_aliases(tmp_path, images_dir):
    path = _csv(
        tmp_path / "q.csv",
        "question_id,image_name,question,gt_answer",
        ['1,a.png,"What colour, exactly?",red', "2,b,Is it blue?,no"],
    )
    src = open_source(path)  # images/ beside the file is the default images directory
    rows = list(src)
    assert len(src) == 2 and [r.id for r in rows] == ["1", "2"]
    assert rows[0].question == "What colour, exactly?" and rows[0].answer == "red"
    assert [im.size for im in rows[1].load_images()] == [(60, 40)]  # 'b' found as b.jpg
    assert src.describe()["kind"] == "csv"


def test_csv_missing_column_is_one_clear_error(tmp_path, images_dir):
    path = _csv(tmp_path / "q.csv", "question_id,question,answer", ["1,hi,yes"])
    with pytest.raises(
        VlmscopeError,
        match=r"has no image column: expected image_id or image_name.*columns: "
        r"question_id, question, answer",
    ):
        open_source(path)
    path = _csv(tmp_path / "q2.csv", "image_id,question", ["a.png,hi"])
    with pytest.raises(VlmscopeError, match="has no id column: expected question_id or id"):
        open_source(path)


def test_bad_rows_and_images_fail_alone(tmp_path, images_dir):
    path = _csv(
        tmp_path / "q.csv",
        "question_id,image_id,question,answer",
        [
            "1,a.png,ok?,yes",
            "2,,no image?,no",
            "3,missing.png,?,x",
            "4,corrupt.png,?,x",
            "5,../../etc/passwd,?,x",
            "6,../secret.png,?,x",
            f"7,{tmp_path / 'secret.png'},?,x",
            "8,a.png,,x",
        ],
    )
    rows = list(open_source(path, images_dir=images_dir))
    assert rows[0].error is None and len(rows[0].load_images()) == 1
    assert "empty image_id" in rows[1].error and "empty question" in rows[7].error
    for i, msg in [
        (2, "image not found"),
        (3, "cannot read image"),
        (4, "escapes the images directory"),
        (5, "escapes the images directory"),
        (6, "escapes the images directory"),
    ]:
        with pytest.raises(VlmscopeError, match=msg):
            rows[i].load_images()


def test_an_id_without_extension_cannot_reach_out_through_a_symlink(tmp_path, images_dir):
    """`image_id` "c" finds c.png; a c.png that links outside the images directory is refused."""
    (images_dir / "a.png").rename(tmp_path / "outside.png")
    (images_dir / "c.png").symlink_to(tmp_path / "outside.png")
    path = _csv(tmp_path / "q.csv", "question_id,image_id,question", ["1,c,ok?"])
    with pytest.raises(VlmscopeError, match="escapes the images directory"):
        list(open_source(path, images_dir=images_dir))[0].load_images()


def test_limit_and_prompt_fallback(tmp_path, images_dir):
    path = _csv(tmp_path / "q.csv", "question_id,image_id,question", ["1,a.png,", "2,a.png,", "3,a.png,"])
    src = open_source(path, prompt="Describe.", limit=2)
    assert len(src) == 2 and [r.question for r in src] == ["Describe.", "Describe."]
    with pytest.raises(VlmscopeError, match="--limit must be at least 1"):
        open_source(path, limit=0)


def test_jsonl(tmp_path, images_dir):
    lines = [
        {"id": "x", "images": ["a.png", "b.jpg"], "question": "Same?", "answer": "no"},
        "not json",
        {"id": "y", "question": "no image key"},
        {"image": "a.png", "prompt": "Hi"},
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(x) if isinstance(x, dict) else x for x in lines) + "\n\n")
    rows = list(open_source(path, images_dir=images_dir))
    assert len(rows) == 4 and len(rows[0].load_images()) == 2 and rows[0].answer == "no"
    assert "invalid" in rows[1].error or "Expecting value" in rows[1].error
    assert "no image column" in rows[2].error
    assert rows[3].id == "3" and rows[3].question == "Hi" and rows[3].error is None


def test_image_folder(tmp_path):
    root = tmp_path / "pics"
    (root / "sub").mkdir(parents=True)
    random_image(30, 30, 0).save(root / "z.png")
    random_image(30, 30, 1).save(root / "sub" / "a.jpg")
    (root / "notes.txt").write_text("skip me")
    rows = list(open_source(root, prompt="What is this?"))
    assert [r.id for r in rows] == ["sub/a.jpg", "z.png"]
    assert {r.question for r in rows} == {"What is this?"} and all(len(r.load_images()) == 1 for r in rows)
    assert [r.id for r in open_source(root)] == [r.id for r in rows]  # a fixed order


def test_unknown_source(tmp_path):
    with pytest.raises(VlmscopeError, match="source not found"):
        open_source(tmp_path / "nope.csv")
    (tmp_path / "x.parquet").write_text("")
    with pytest.raises(VlmscopeError, match="cannot tell the type of source .*--source-type"):
        open_source(tmp_path / "x.parquet")
    with pytest.raises(VlmscopeError, match="unknown source type 'sql'"):
        open_source(tmp_path, "sql")


def test_hf_dataset(tmp_path, images_dir):
    datasets = pytest.importorskip("datasets")
    ims = [random_image(30, 40, i) for i in range(3)]
    feats = datasets.Features(
        {
            "image": datasets.Image(),
            "question": datasets.Value("string"),
            "answers": datasets.List(datasets.Value("string")),
        }
    )
    ds = datasets.Dataset.from_dict(
        {"image": [ims[0], None, ims[2]], "question": ["a?", "b?", "c?"], "answers": [["x", "y"], [], ["z"]]},
        features=feats,
    )
    datasets.DatasetDict({"validation": ds}).save_to_disk(str(tmp_path / "hf"))
    with pytest.raises(VlmscopeError, match="no split 'train'.*validation"):
        open_source(tmp_path / "hf", split="train")
    src = open_source(tmp_path / "hf", columns={"answer": "answers"})
    rows = list(src)
    assert src.describe()["kind"] == "hf" and len(src) == 3
    assert rows[0].answer == "x" and rows[0].load_images()[0].size == (40, 30)
    assert "empty image" in rows[1].error

    paths = datasets.Dataset.from_dict({"file": ["a.png", "../secret.png"], "question": ["q", "q"]})
    paths.save_to_disk(str(tmp_path / "paths"))
    with pytest.raises(VlmscopeError, match="holds paths: pass --images-dir"):
        open_source(tmp_path / "paths", columns={"image": "file"})
    rows = list(open_source(tmp_path / "paths", images_dir=images_dir, columns={"image": "file"}))
    assert len(rows[0].load_images()) == 1
    with pytest.raises(VlmscopeError, match="escapes the images directory"):
        rows[1].load_images()


def _vqa_lines(n):
    return ["question_id,image_id,question,answer"] + [
        f"{i},a.png,Is row {i} caf\u00e9 {'x' * 40}?,yes" for i in range(n)
    ]


def test_non_utf8_table_is_refused_at_open_naming_the_line(tmp_path, images_dir):
    lines = _vqa_lines(300)
    assert len("\n".join(lines[:200]).encode()) > 8192  # past any first-block sniffing
    path = tmp_path / "latin1.csv"
    path.write_bytes("\n".join(lines[:200]).encode() + b"\n" + "\n".join(lines[200:]).encode("latin-1") + b"\n")
    with pytest.raises(VlmscopeError, match=r"latin1.csv' is not UTF-8: line 201 has byte 0xe9 at column \d+"):
        open_source(path)
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_bytes(
        b'{"id": "1", "image": "a.png", "question": "ok?"}\n'
        + '{"id": "2", "image": "a.png", "question": "caf\u00e9?"}\n'.encode("latin-1")
    )
    with pytest.raises(VlmscopeError, match="rows.jsonl' is not UTF-8: line 2 has byte 0xe9"):
        open_source(jsonl)


def test_byte_order_marks_are_accepted_and_utf16_without_one_refused(tmp_path, images_dir):
    text = "\n".join(_vqa_lines(5)) + "\n"
    plain = tmp_path / "plain.csv"
    plain.write_text(text, encoding="utf-8")
    expected = [(r.id, r.question, r.answer, r.images) for r in open_source(plain)]
    assert expected[0][1].startswith("Is row 0 caf\u00e9")
    for name, data in [
        ("bom8.csv", text.encode("utf-8-sig")),
        ("bom16.csv", text.encode("utf-16")),
        ("bom16be.csv", b"\xfe\xff" + text.encode("utf-16-be")),
    ]:
        (tmp_path / name).write_bytes(data)
        assert [(r.id, r.question, r.answer, r.images) for r in open_source(tmp_path / name)] == expected, name
    (tmp_path / "nobom16.csv").write_bytes(text.encode("utf-16-le"))
    with pytest.raises(VlmscopeError, match="nobom16.csv' has NUL bytes on line 1 .*UTF-16"):
        open_source(tmp_path / "nobom16.csv")
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes('{"id": "1", "image": "a.png", "question": "caf\u00e9?"}\n'.encode("utf-8-sig"))
    rows = list(open_source(jsonl))
    assert rows[0].error is None and rows[0].question == "caf\u00e9?"


def test_fingerprint_follows_rows_and_their_order(tmp_path, images_dir):
    lines = _vqa_lines(6)
    a = _csv(tmp_path / "a.csv", lines[0], lines[1:])
    b = _csv(tmp_path / "b.csv", lines[0], lines[1:])
    shuffled = _csv(tmp_path / "s.csv", lines[0], [lines[1], lines[3], lines[2], *lines[4:]])
    fa = open_source(a).fingerprint()
    assert fa == open_source(b).fingerprint() and fa["rows"] == 6
    assert open_source(shuffled).fingerprint() != fa
    assert open_source(shuffled, limit=1).fingerprint() == open_source(a, limit=1).fingerprint()  # row 0 unchanged
