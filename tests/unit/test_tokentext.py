"""Byte-level tokens shown as a reader can read them: characters split over tokens decoded
across them, bytes that form no character and control characters shown as <0xNN>."""

from __future__ import annotations

import pytest

from vlmscope.models.tiny import build_tokenizer
from vlmscope.tokentext import readable_token, readable_tokens, token_bytes


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def test_a_sequence_is_decoded_across_its_tokens(tok):
    text = "red 中文\bok"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    labels = readable_tokens(tok, ids)
    assert len(labels) == len(ids)
    # every byte is accounted for: the labels spell the text, with the control character as bytes
    assert "".join(x for x in labels if x != "…") == "red 中文<0x08>ok"
    pieces = [tok.decode([i]) for i in ids]
    assert "\ufffd" in "".join(pieces)  # what decoding token by token gives
    assert "\ufffd" not in "".join(labels) and "\b" not in "".join(labels)
    # this tokenizer keeps each byte of the two characters apart: 中 and 文 on their first bytes
    assert labels[labels.index("中") : labels.index("文") + 3] == ["中", "…", "…", "文", "…", "…"]


def test_one_token_alone_shows_its_bytes_when_they_form_no_character(tok):
    first_byte = tok("中", add_special_tokens=False)["input_ids"][0]
    assert token_bytes(tok, first_byte) == "中".encode()[: len(token_bytes(tok, first_byte))]
    assert readable_token(tok, first_byte).startswith("<0xE4>")
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert readable_token(tok, im_end) == "<|im_end|>" and token_bytes(tok, im_end) is None
    assert readable_tokens(tok, [im_end, *tok("ab", add_special_tokens=False)["input_ids"]])[0] == "<|im_end|>"
