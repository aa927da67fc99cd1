"""The demo tokenizer: `train_xlmr_unigram_tokenizer`, made reproducible."""

from __future__ import annotations

import json
from collections.abc import Iterable

from tokenizers import Tokenizer

from training.tokenization import (
    MASK,
    SPECIAL_TOKENS,
    train_xlmr_unigram_tokenizer,
    xlmr_unigram_tokenizer,
)


def train_demo_tokenizer(corpus: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train an XLM-R Unigram tokenizer whose ids are the same on every run for the same corpus."""
    return _canonical(train_xlmr_unigram_tokenizer(corpus, vocab_size))


# The Unigram trainer gives each corpus character it did not select a score of
# (lowest model score + k * this step), k counting up in hash-set order.
_APPENDED_CHAR_SCORE_STEP = 1e-4


def _canonical(trained: Tokenizer) -> Tokenizer:
    """The same pieces and scores in a reproducible id order.

    The `tokenizers` Unigram trainer is not reproducible from run to run: pieces with equal
    scores come out in hash-map order, scores differ in the last bits, and the characters it
    appends get their stepped scores in hash-set order. Different ids mean different embeddings,
    so the same seed would give a different model. Rounding scores, handing the appended
    characters their scores in character order and sorting by (score, piece) fixes the ids;
    segmentation only changes where two appended characters compete, and then deterministically.
    """
    pieces = [
        (piece, round(score, 9))
        for piece, score in json.loads(trained.to_str())["model"]["vocab"]
        if piece not in SPECIAL_TOKENS
    ]
    floor = min(score for _, score in pieces)

    def appended(piece: str, score: float) -> bool:
        steps = (score - floor) / _APPENDED_CHAR_SCORE_STEP
        return len(piece) == 1 and abs(steps - round(steps)) < 1e-3

    chars = sorted(piece for piece, score in pieces if appended(piece, score))
    grid = sorted(score for piece, score in pieces if appended(piece, score))
    rescored = dict(zip(chars, grid, strict=True))
    ordered = sorted(
        ((piece, rescored.get(piece, score)) for piece, score in pieces),
        key=lambda item: (-item[1], item[0]),
    )
    specials = [(token, 0.0) for token in SPECIAL_TOKENS]
    return xlmr_unigram_tokenizer([*specials, *ordered, (MASK, 0.0)])
