"""Prompt tokenizers in π0's format: BOS + text + "\\n", padded (id 0) or cut to max_token_len, with a mask.

* :class:`ByteTokenizer` — built in, for our tiny models: UTF-8 bytes shifted past PaliGemma's special ids
  (0 pad, 1 eos, 2 bos), so the vocabulary has 259 ids. Saved as JSON next to the checkpoint.
* :class:`SentencePieceTokenizer` — for real π0: the PaliGemma sentencepiece model the user supplies
  (``paligemma_tokenizer.model``); needs the optional ``sentencepiece`` package.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from csil_diag.errors import UserError

PAD, EOS, BOS = 0, 1, 2


def clean_prompt(prompt: str) -> str:
    """openpi's cleaning: strip, underscores and newlines become spaces."""
    return prompt.strip().replace("_", " ").replace("\n", " ")


def pad_tokens(ids: list[int], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """ids → (tokens (max_len,) int32, mask (max_len,) bool); longer prompts are cut."""
    ids = ids[:max_len]
    tokens = np.full(max_len, PAD, np.int32)
    tokens[: len(ids)] = ids
    return tokens, np.arange(max_len) < len(ids)


class Tokenizer(Protocol):
    max_len: int
    vocab_size: int

    def tokenize(self, prompt: str) -> tuple[np.ndarray, np.ndarray]: ...


def tokenize_batch(tokenizer: Tokenizer, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Prompts → tokens (B, max_len) int32 and mask (B, max_len) bool."""
    pairs = [tokenizer.tokenize(p) for p in prompts]
    return np.stack([t for t, _ in pairs]), np.stack([m for _, m in pairs])


@dataclass(frozen=True)
class ByteTokenizer:
    max_len: int
    offset: int = 3  # first byte id: after pad, eos, bos

    @property
    def vocab_size(self) -> int:
        return self.offset + 256

    def tokenize(self, prompt: str) -> tuple[np.ndarray, np.ndarray]:
        body = (clean_prompt(prompt) + "\n").encode("utf-8")
        return pad_tokens([BOS, *(self.offset + b for b in body)], self.max_len)


class SentencePieceTokenizer:
    """PaliGemma's sentencepiece vocabulary (257152 ids)."""

    def __init__(self, model_path: Path, max_len: int) -> None:
        try:
            import sentencepiece
        except ImportError:
            raise UserError("the π0 tokenizer needs sentencepiece: pip install sentencepiece") from None
        model_path = Path(model_path)
        if not model_path.is_file():
            raise UserError(f"no sentencepiece model at {model_path} (openpi uses paligemma_tokenizer.model)")
        self.model_path = model_path
        self.max_len = max_len
        self._sp = sentencepiece.SentencePieceProcessor(model_file=str(model_path))
        self.vocab_size = int(self._sp.get_piece_size())

    def tokenize(self, prompt: str) -> tuple[np.ndarray, np.ndarray]:
        # "\n" is encoded on its own, as openpi does (it marks the start of the answer).
        ids = self._sp.encode(clean_prompt(prompt), add_bos=True) + self._sp.encode("\n")
        return pad_tokens(ids, self.max_len)


def save_tokenizer(tokenizer: Tokenizer, path: Path) -> None:
    if isinstance(tokenizer, ByteTokenizer):
        body = {"type": "bytes", "max_len": tokenizer.max_len, "offset": tokenizer.offset}
    elif isinstance(tokenizer, SentencePieceTokenizer):
        body = {"type": "sentencepiece", "max_len": tokenizer.max_len, "model_path": str(tokenizer.model_path)}
    else:
        raise TypeError(f"cannot save tokenizer {type(tokenizer).__name__}")
    Path(path).write_text(json.dumps(body, indent=2))


def load_tokenizer(path: Path) -> Tokenizer:
    body = json.loads(Path(path).read_text())
    kind = body.get("type")
    if kind == "bytes":
        return ByteTokenizer(max_len=body["max_len"], offset=body.get("offset", 3))
    if kind == "sentencepiece":
        return SentencePieceTokenizer(Path(body["model_path"]), body["max_len"])
    raise UserError(f"unknown tokenizer type {kind!r} in {path}")
