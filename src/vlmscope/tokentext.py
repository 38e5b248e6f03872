"""Tokens as a reader can see them. Qwen's tokenizers are byte-level: one token may hold part of a
character (a Chinese character is three bytes, often split over two tokens), and a byte may be a
control character. Decoding each token alone gives "�" and raw control codes; here a sequence is
decoded across its tokens, each character shown on the token where it starts, and what cannot be
decoded is shown as its bytes, ``<0xE4>``."""

from __future__ import annotations

import functools


@functools.cache
def _byte_of_char() -> dict[str, int]:
    """The byte-level alphabet's inverse: the printable character that stands for each byte (the
    same table GPT-2 and Qwen use: printable Latin-1 bytes stand for themselves, the others are
    moved to code points 256 and up)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def token_bytes(tokenizer, token_id: int) -> bytes | None:
    """The bytes a token stands for, or None for a token that is not byte-level (special tokens
    and other tokenizers' pieces)."""
    piece = tokenizer.convert_ids_to_tokens(int(token_id))
    table = _byte_of_char()
    if not isinstance(piece, str) or not piece or any(c not in table for c in piece):
        return None
    if int(token_id) in set(getattr(tokenizer, "all_special_ids", ())):
        return None
    return bytes(table[c] for c in piece)


def _show(text: str) -> str:
    """`text` with control characters (and other unprintable ones) spelled as their bytes."""
    return "".join(c if c.isprintable() or c == " " else _hex(c.encode("utf-8")) for c in text)


def _hex(data: bytes) -> str:
    return "".join(f"<0x{b:02X}>" for b in data)


def readable_tokens(tokenizer, ids) -> list[str]:
    """One label per token of the sequence `ids`: characters decoded across tokens (a character
    split over several tokens appears on the token where it starts, the tokens that only continue
    it show "…"), bytes that form no character as ``<0xNN>``, control characters as their bytes,
    special tokens as their text."""
    ids = [int(i) for i in ids]
    labels = [""] * len(ids)
    pending: list[tuple[int, bytes]] = []  # (token index, its bytes) not decoded yet

    def flush() -> None:
        data = b"".join(b for _, b in pending)
        starts, pos = [], 0
        for index, chunk in pending:
            starts.append((pos, index))
            pos += len(chunk)
        owner = {}  # byte offset -> token index holding it
        for (start, index), (_, chunk) in zip(starts, pending):
            for k in range(len(chunk)):
                owner[start + k] = index
        pos = 0
        while pos < len(data):
            for width in (1, 2, 3, 4):  # the UTF-8 character starting here, if there is one
                try:
                    char = data[pos : pos + width].decode("utf-8")
                    break
                except UnicodeDecodeError:
                    char = None
            if char is None:
                labels[owner[pos]] += _hex(data[pos : pos + 1])
                pos += 1
                continue
            labels[owner[pos]] += _show(char)
            pos += width
        for index, _ in pending:
            labels[index] = labels[index] or "…"
        pending.clear()

    for index, token_id in enumerate(ids):
        data = token_bytes(tokenizer, token_id)
        if data is None:
            flush()
            labels[index] = _show(tokenizer.decode([token_id]))
        else:
            pending.append((index, data))
    flush()
    return labels


def readable_token(tokenizer, token_id: int) -> str:
    """One token alone (a lens readout): its characters, or its bytes where they form none."""
    return readable_tokens(tokenizer, [token_id])[0]
