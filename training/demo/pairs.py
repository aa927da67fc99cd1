"""The demo's PAWS-X-style pair task, generated from the compositional corpus.

A pair is a paraphrase exactly when both sentences have the same meaning key. Positives use a
different template or a different language, so they share few surface tokens; most negatives change
one slot only (often in the same language and template), so they share almost all of them. Lexical
overlap therefore does not predict the label: the model has to match subjects and places, across
languages too.

Honest held-out evaluation: `split_keys` removes a set of (subject, place) combinations from
training entirely. Every subject and every place is still seen in training (in other combinations),
so the held-out score measures whether the model composes what it learned rather than memorised.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from training.demo.corpus import (
    CORPUS,
    LANGUAGES,
    PLACES,
    SUBJECTS,
    MeaningKey,
    Sentence,
    all_keys,
    render,
)

LABELS: tuple[str, ...] = ("not_paraphrase", "paraphrase")
NOT_PARAPHRASE, PARAPHRASE = 0, 1


@dataclass(frozen=True)
class PairExample:
    """One labelled pair; it is reported under the language of `a`."""

    a: Sentence
    b: Sentence
    label: int


@dataclass(frozen=True)
class KeySplit:
    """Meaning keys used for training and the disjoint set held out for evaluation."""

    train: tuple[MeaningKey, ...]
    heldout: tuple[MeaningKey, ...]

    def describe(self) -> str:
        """Human-readable list of both sets, for the bundle's provenance."""

        def fmt(keys: Sequence[MeaningKey]) -> str:
            return ", ".join(f"{s}@{p}" for s, p in keys)

        return (
            f"trained on {len(self.train)} meaning keys (subject@place): {fmt(self.train)}; "
            f"held out {len(self.heldout)} keys never seen in training: {fmt(self.heldout)}"
        )


def split_keys(seed: int, heldout_per_subject: int = 2) -> KeySplit:
    """Hold out `heldout_per_subject` places per subject, in a shuffled Latin-square pattern.

    The diagonal pattern spreads the held-out keys so that each subject and each place loses the
    same number of combinations and keeps the rest for training.
    """
    if not 0 < heldout_per_subject < len(PLACES):
        raise ValueError(f"heldout_per_subject must be in 1..{len(PLACES) - 1}")
    rng = random.Random(f"demo-split:{seed}")
    subjects = list(SUBJECTS)
    places = list(PLACES)
    rng.shuffle(subjects)
    rng.shuffle(places)
    heldout = {
        (subject, places[(i + j) % len(places)])
        for i, subject in enumerate(subjects)
        for j in range(heldout_per_subject)
    }
    ordered = all_keys()
    return KeySplit(
        train=tuple(k for k in ordered if k not in heldout),
        heldout=tuple(k for k in ordered if k in heldout),
    )


def make_pairs(
    anchors: Sequence[Sentence],
    partner_keys: Sequence[MeaningKey],
    *,
    pairs_per_anchor: int,
    seed: int | str,
    cross_lingual_rate: float = 0.5,
    hard_negative_rate: float = 0.75,
) -> list[PairExample]:
    """For each anchor, `pairs_per_anchor` positives and as many negatives, shuffled.

    Partners only ever use `partner_keys`, so pairs built from one side of a `KeySplit` never
    touch the other side. A hard negative differs from the anchor in exactly one slot; the rest
    differ in both (falling back to one slot when `partner_keys` has no such key).
    """
    rng = random.Random(f"demo-pairs:{seed}")
    keys = sorted(set(partner_keys))
    pairs: list[PairExample] = []
    for anchor in anchors:
        one_slot = [k for k in keys if (k[0] == anchor.subject) != (k[1] == anchor.place)]
        two_slot = [k for k in keys if k[0] != anchor.subject and k[1] != anchor.place]
        if not one_slot and not two_slot:
            raise ValueError(f"no negative partner for {anchor.key} among partner_keys")
        for _ in range(pairs_per_anchor):
            pairs.append(_pair(anchor, anchor.key, rng, cross_lingual_rate, positive=True))
            hard = rng.random() < hard_negative_rate
            pool = (one_slot if hard else two_slot) or one_slot or two_slot
            key = pool[rng.randrange(len(pool))]
            pairs.append(_pair(anchor, key, rng, cross_lingual_rate, positive=False))
    rng.shuffle(pairs)
    return pairs


def _pair(
    anchor: Sentence,
    key: MeaningKey,
    rng: random.Random,
    cross_lingual_rate: float,
    *,
    positive: bool,
) -> PairExample:
    same_lang_templates = len(CORPUS[anchor.lang].templates)
    # A one-template language cannot give a same-language positive that is not a copy.
    must_cross = positive and same_lang_templates < 2
    if rng.random() < cross_lingual_rate or must_cross:
        others = [lang for lang in LANGUAGES if lang != anchor.lang]
        lang = others[rng.randrange(len(others))]
        template = rng.randrange(len(CORPUS[lang].templates))
    else:
        lang = anchor.lang
        if positive:
            # Another template of the same language: a paraphrase that is not a copy.
            step = 1 + rng.randrange(same_lang_templates - 1)
            template = (anchor.template + step) % same_lang_templates
        else:
            # Any template, the anchor's own included: near-identical strings, different meaning.
            template = rng.randrange(same_lang_templates)
    label = PARAPHRASE if positive else NOT_PARAPHRASE
    return PairExample(a=anchor, b=render(lang, template, key), label=label)
