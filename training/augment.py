"""Adversarial augmentation: perturb a fraction of training inputs with `robustness/` families.

Only label-preserving families qualify (a typo does not turn a paraphrase into a non-paraphrase).
Which examples are perturbed, by which family, is a pure function of (seed, step, example), so a
resumed or re-run phase sees the same augmented data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from robustness.apply import PerturbationSpec, apply_perturbation
from robustness.registry import get_family
from training.kinds.base import TaskKind
from training.recipe import Augmentation
from training.tasks import Example


class AugmentationError(ValueError):
    pass


def _unit_draw(*keys: object) -> float:
    digest = hashlib.sha256("|".join(map(str, keys)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class Augmenter:
    def __init__(self, config: Augmentation, seed: int) -> None:
        for name in config.families:
            family = get_family(name)
            if not family.label_preserving or family.symmetric_task_only:
                raise AugmentationError(
                    f"augmentation family {name!r} may change the label (or only preserves it for"
                    " symmetric tasks): choose label-preserving text families such as char_swap"
                )
        self.config = config
        self.seed = seed

    def apply(self, kind: TaskKind, examples: Sequence[Example], step: int) -> list[Example]:
        out: list[Example] = []
        for example in examples:
            key = (self.seed, step, example.lang, example.id)
            if _unit_draw("augment", *key) >= self.config.fraction:
                out.append(example)
                continue
            families = self.config.families
            family = families[int(_unit_draw("family", *key) * len(families))]
            text, pair = kind.texts(example)
            perturbed = apply_perturbation(
                PerturbationSpec(family, self.config.severity),
                text,
                pair,
                seed=self.seed,
                sample_index=step,
                lang=example.lang,
                example_id=f"{example.lang}:{example.id}",
                on_unsupported="skip",
            )
            out.append(kind.with_texts(example, perturbed.text, perturbed.text_pair))
        return out
