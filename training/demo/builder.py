"""Build the offline demo checkpoint: tokenizer + tiny XLM-R pair classifier, trained from scratch.

The result is an ordinary Hugging Face checkpoint directory, so the export path that handles real
fine-tuned models handles it unchanged. The data, the tokenizer's ids, the initialisation and the
batch order all follow from the seed, and torch runs on a fixed number of threads, so the same
config gives byte-identical files.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from tqdm import tqdm
from transformers import (
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
    XLMRobertaTokenizerFast,
)

from training.demo.corpus import (
    LANGUAGES,
    PLACES,
    SUBJECTS,
    Sentence,
    Span,
    corpus_sha256,
    lexicon_entries,
    sentences,
)
from training.demo.pairs import LABELS, KeySplit, PairExample, make_pairs, split_keys
from training.demo.tokenizer import train_demo_tokenizer
from training.model import load_tokenizer
from training.tokenization import BOS, EOS, MASK, PAD, PAD_ID, UNK


@dataclass(frozen=True)
class DemoConfig:
    """Model size, training schedule and task knobs for the demo model.

    The defaults train in well under a minute on two CPU cores; the model is small enough that
    its ONNX export is a few hundred kilobytes.
    """

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 128
    max_length: int = 128
    vocab_size: int = 1000
    dropout: float = 0.0
    seed: int = 0
    steps: int = 600
    batch_size: int = 64
    learning_rate: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    heldout_per_subject: int = 2
    cross_lingual_rate: float = 0.5
    hard_negative_rate: float = 0.75
    heldout_pairs_per_anchor: int = 2
    train_eval_pairs_per_anchor: int = 1
    aux_loss_weight: float = 2.0
    # One thread, measured on the 2-core target: a 64-wide model gains little from a second
    # thread when the machine is idle (about 1.3x) but slows down 5-40x when another process
    # (a test run, a second build) competes for the cores, because torch's worker threads wait
    # on each other. A fixed count also keeps the weights identical across machines, since the
    # order of floating-point reductions depends on it.
    torch_threads: int = 1


@dataclass(frozen=True)
class DemoCheckpoint:
    """Where the checkpoint is and what it was trained and evaluated on (for the bundle)."""

    path: Path
    labels: list[str]
    max_length: int
    seed: int
    train_accuracy: float
    heldout_accuracy: float
    heldout_n: int
    per_language_heldout_accuracy: dict[str, dict[str, Any]]
    data_description: str
    corpus_sha256: str


def build_demo_checkpoint(
    out_dir: Path, config: DemoConfig = DemoConfig(), *, progress: bool = True
) -> DemoCheckpoint:
    """Train the demo tokenizer and classifier and save them as a checkpoint in `out_dir`.

    Runs torch on `config.torch_threads` threads and restores the caller's setting afterwards,
    since the caller (the CLI) may go on to export with its own threading choices.
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.torch_threads)
    try:
        return _build(Path(out_dir), config, progress)
    finally:
        torch.set_num_threads(previous_threads)


def _build(out_dir: Path, config: DemoConfig, progress: bool) -> DemoCheckpoint:
    # Everything here draws from its own seeded generator or from torch's; the global seeds are
    # set too so that library code drawing from them cannot make two builds differ.
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)

    split = split_keys(config.seed, config.heldout_per_subject)
    train_sentences = sentences(split.train)
    # The tokenizer sees training sentences and the lexicon only, never a held-out combination.
    tokenizer_corpus = [*(s.text for s in train_sentences), *lexicon_entries()]
    tokenizer = train_demo_tokenizer(tokenizer_corpus, config.vocab_size)

    pair_kwargs = {
        "cross_lingual_rate": config.cross_lingual_rate,
        "hard_negative_rate": config.hard_negative_rate,
    }
    per_anchor = math.ceil(config.steps * config.batch_size / (2 * len(train_sentences)))
    train_pairs = make_pairs(
        train_sentences,
        split.train,
        pairs_per_anchor=per_anchor,
        seed=f"train:{config.seed}",
        **pair_kwargs,
    )[: config.steps * config.batch_size]
    train_eval_pairs = make_pairs(
        train_sentences,
        split.train,
        pairs_per_anchor=config.train_eval_pairs_per_anchor,
        seed=f"train-eval:{config.seed}",
        **pair_kwargs,
    )
    heldout_pairs = make_pairs(
        sentences(split.heldout),
        split.heldout,
        pairs_per_anchor=config.heldout_pairs_per_anchor,
        seed=f"heldout:{config.seed}",
        **pair_kwargs,
    )

    model_config = _model_config(config, tokenizer.get_vocab_size())
    model = XLMRobertaForSequenceClassification(model_config)  # type: ignore[no-untyped-call]
    _train(model, _encode(tokenizer, train_pairs, config.max_length), config, progress)
    model.eval()  # type: ignore[no-untyped-call]

    train_accuracy = _accuracy(model, tokenizer, train_eval_pairs, config)
    heldout_correct = _correct(model, tokenizer, heldout_pairs, config)
    per_language = _per_language(heldout_pairs, heldout_correct)

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    _hf_tokenizer(tokenizer, config.max_length).save_pretrained(out_dir)
    verify_tokenizer_roundtrip(out_dir, [(p.a.text, p.b.text) for p in heldout_pairs])

    return DemoCheckpoint(
        path=out_dir,
        labels=list(LABELS),
        max_length=config.max_length,
        seed=config.seed,
        train_accuracy=train_accuracy,
        heldout_accuracy=float(np.mean(heldout_correct)),
        heldout_n=len(heldout_pairs),
        per_language_heldout_accuracy=per_language,
        data_description=_describe(split, config, len(train_pairs), len(heldout_pairs)),
        corpus_sha256=corpus_sha256(),
    )


def _model_config(config: DemoConfig, vocab_size: int) -> XLMRobertaConfig:
    return XLMRobertaConfig(  # type: ignore[no-untyped-call]
        vocab_size=vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        intermediate_size=config.intermediate_size,
        hidden_dropout_prob=config.dropout,
        attention_probs_dropout_prob=config.dropout,
        # XLM-R numbers positions from pad_token_id + 1, so two slots go unused.
        max_position_embeddings=config.max_length + 2,
        type_vocab_size=1,
        pad_token_id=PAD_ID,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
        problem_type="single_label_classification",
    )


def _hf_tokenizer(tokenizer: Tokenizer, max_length: int) -> XLMRobertaTokenizerFast:
    return XLMRobertaTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        sep_token=EOS,
        cls_token=BOS,
        unk_token=UNK,
        pad_token=PAD,
        mask_token=MASK,
        model_max_length=max_length,
    )


def verify_tokenizer_roundtrip(checkpoint: Path, pairs: Sequence[tuple[str, str]]) -> None:
    """Fail unless transformers and `tokenizers` give the same ids for `pairs` from `checkpoint`.

    The service tokenizes with `tokenizers` alone while export and evaluation go through
    transformers, so any divergence would silently skew every served prediction.
    """
    raw = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    hf = load_tokenizer(checkpoint)
    for a, b in pairs:
        expected = raw.encode(a, b).ids
        got = hf(a, b)["input_ids"]
        if got != expected:
            raise RuntimeError(f"tokenizer mismatch on {(a, b)!r}: {got} != {expected}")


def _encode(tokenizer: Tokenizer, pairs: Sequence[PairExample], max_length: int) -> _Encoded:
    encodings = tokenizer.encode_batch([(p.a.text, p.b.text) for p in pairs])
    longest = max(len(e.ids) for e in encodings)
    if longest > max_length:
        raise ValueError(f"a demo pair has {longest} tokens, more than max_length={max_length}")
    targets = [
        _token_targets(e.sequence_ids, e.offsets, (p.a, p.b))
        for e, p in zip(encodings, pairs, strict=True)
    ]
    return _Encoded(
        ids=[e.ids for e in encodings],
        concepts=[c for c, _ in targets],
        matches=[m for _, m in targets],
        labels=[p.label for p in pairs],
    )


# Concept classes for the auxiliary token loss: 0 = neither slot, then subjects, then places.
_N_CONCEPTS = 1 + len(SUBJECTS) + len(PLACES)
_IGNORE = -100


def _token_targets(
    sequence_ids: Sequence[int | None],
    offsets: Sequence[tuple[int, int]],
    pair: tuple[Sentence, Sentence],
) -> tuple[list[int], list[int]]:
    """Per token: its slot's concept (0 outside slots) and whether the other sentence fills that
    slot the same way (1/0, only on slot tokens). Special tokens are ignored by both."""
    concepts: list[int] = []
    matches: list[int] = []
    for seq, (start, end) in zip(sequence_ids, offsets, strict=True):
        if seq is None:
            concepts.append(_IGNORE)
            matches.append(_IGNORE)
            continue
        sentence, other = pair[seq], pair[1 - seq]
        if _overlaps(start, end, sentence.subject_span):
            concepts.append(1 + SUBJECTS.index(sentence.subject))
            matches.append(int(sentence.subject == other.subject))
        elif _overlaps(start, end, sentence.place_span):
            concepts.append(1 + len(SUBJECTS) + PLACES.index(sentence.place))
            matches.append(int(sentence.place == other.place))
        else:
            concepts.append(0)
            matches.append(_IGNORE)
    return concepts, matches


def _overlaps(start: int, end: int, span: Span) -> bool:
    return start < span[1] and end > span[0]


@dataclass(frozen=True)
class _Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    concepts: torch.Tensor
    matches: torch.Tensor


@dataclass(frozen=True)
class _Encoded:
    ids: list[list[int]]
    concepts: list[list[int]]
    matches: list[list[int]]
    labels: list[int]

    def batch(self, rows: Sequence[int]) -> _Batch:
        """The given rows, padded to their own longest (not to max_length: far faster)."""
        lengths = torch.tensor([len(self.ids[r]) for r in rows])
        width = int(lengths.max())

        def padded(table: list[list[int]], fill: int) -> torch.Tensor:
            return torch.tensor([table[r] + [fill] * (width - len(table[r])) for r in rows])

        return _Batch(
            input_ids=padded(self.ids, PAD_ID),
            attention_mask=(torch.arange(width) < lengths[:, None]).long(),
            labels=torch.tensor([self.labels[r] for r in rows]),
            concepts=padded(self.concepts, _IGNORE),
            matches=padded(self.matches, _IGNORE),
        )

    def length_bucketed_batches(self, batch_size: int, seed: int) -> list[list[int]]:
        """Batches of rows of similar length, in a seeded random order.

        Character-level scripts make pair lengths vary about twofold; padding every batch to
        its longest row would nearly double the cost of each step. Sorting within windows of
        fifty batches keeps the order random at a larger scale.
        """
        window = batch_size * 50
        batches: list[list[int]] = []
        for start in range(0, len(self.ids), window):
            rows = sorted(
                range(start, min(start + window, len(self.ids))), key=lambda r: len(self.ids[r])
            )
            batches.extend(rows[i : i + batch_size] for i in range(0, len(rows), batch_size))
        random.Random(f"demo-batches:{seed}").shuffle(batches)
        return batches


def _train(
    model: XLMRobertaForSequenceClassification,
    data: _Encoded,
    config: DemoConfig,
    progress: bool,
) -> None:
    # Two auxiliary heads, discarded after training, supervise the circuit the pair head needs:
    # which concept each token names (so words that mean the same across eleven languages get
    # the same representation) and whether the other sentence has the same concept in that
    # slot. From pair labels alone a model this small needs far longer than the time budget.
    concept_head = torch.nn.Linear(config.hidden_size, _N_CONCEPTS)
    match_head = torch.nn.Linear(config.hidden_size, 2)
    params = [*model.parameters(), *concept_head.parameters(), *match_head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)

    def schedule(step: int) -> float:
        # Linear warm-up then linear decay: from-scratch transformers diverge without warm-up.
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        return max(0.0, (config.steps - step) / max(1, config.steps - config.warmup_steps))

    def token_loss(
        head: torch.nn.Linear, hidden: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        logits = head(hidden).flatten(0, 1)
        return torch.nn.functional.cross_entropy(logits, target.flatten(), ignore_index=_IGNORE)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model.train()
    bar = tqdm(range(config.steps), desc="demo model", unit="step", disable=not progress)
    batches = data.length_bucketed_batches(config.batch_size, config.seed)
    for step in bar:
        b = data.batch(batches[step])
        out = model(
            input_ids=b.input_ids,
            attention_mask=b.attention_mask,
            labels=b.labels,
            output_hidden_states=True,
        )
        last = out.hidden_states[-1]
        aux = token_loss(concept_head, last, b.concepts) + token_loss(match_head, last, b.matches)
        loss = out.loss + config.aux_loss_weight * aux
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")


def _correct(
    model: XLMRobertaForSequenceClassification,
    tokenizer: Tokenizer,
    pairs: Sequence[PairExample],
    config: DemoConfig,
) -> list[bool]:
    data = _encode(tokenizer, pairs, config.max_length)
    correct: list[bool] = []
    with torch.inference_mode():
        for start in range(0, len(pairs), 256):
            b = data.batch(range(start, min(start + 256, len(pairs))))
            logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
            correct.extend((logits.argmax(-1) == b.labels).tolist())
    return correct


def _accuracy(
    model: XLMRobertaForSequenceClassification,
    tokenizer: Tokenizer,
    pairs: Sequence[PairExample],
    config: DemoConfig,
) -> float:
    return float(np.mean(_correct(model, tokenizer, pairs, config)))


def _per_language(
    pairs: Sequence[PairExample], correct: Sequence[bool]
) -> dict[str, dict[str, Any]]:
    by_lang: dict[str, list[bool]] = defaultdict(list)
    for pair, ok in zip(pairs, correct, strict=True):
        by_lang[pair.a.lang].append(ok)
    return {
        lang: {"n": len(by_lang[lang]), "accuracy": float(np.mean(by_lang[lang]))}
        for lang in LANGUAGES
        if by_lang[lang]
    }


def _describe(split: KeySplit, config: DemoConfig, n_train: int, n_heldout: int) -> str:
    return (
        f"polyprobe demo corpus (sha256 {corpus_sha256()[:12]}), 'subject is at place' sentences "
        f"in {len(LANGUAGES)} languages ({', '.join(LANGUAGES)}); seed {config.seed}; "
        f"{split.describe()}. {n_train} training pairs; {n_heldout} held-out pairs, both "
        f"sentences of each from held-out keys only. {config.cross_lingual_rate:.0%} of pairs "
        f"are cross-lingual; {config.hard_negative_rate:.0%} of negatives differ in one slot. "
        f"Per-language scores group pairs by the language of their first sentence."
    )
