"""Applying a perturbation spec reproducibly, and telling real changes from no-ops.

Every (seed, example, family, sample, field) gets its own RNG, derived by hashing those keys
with SHA-256 into a numpy SeedSequence. Python's `hash()` is salted per process, so it cannot be
used; a shared generator would make an example's perturbation depend on which examples came
before it in the batch. With derived streams a probe is repeatable from its seed alone, in any
order, on any number of workers.

Severity is deliberately not part of the key: the same example sees the same random stream at
every severity, so severity sweeps compare like with like.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from robustness.registry import (
    Family,
    MissingPairError,
    PairPerturbation,
    PerturbationSpecError,
    TextPerturbation,
    UnsupportedScriptError,
    check_script,
    check_severity,
    get_family,
)

# Names the key-derivation scheme; responses echo it next to the seed and the family versions.
RNG_SCHEME = "polyprobe-robustness/1"
Target = Literal["both", "text", "text_pair"]
_TARGETS: tuple[Target, ...] = ("both", "text", "text_pair")


@dataclass(frozen=True)
class PerturbationSpec:
    """What to apply: a family, how hard, and (for text families on pairs) to which sentence."""

    family: str
    severity: float
    target: Target = "both"


@dataclass(frozen=True)
class PerturbedExample:
    text: str
    text_pair: str | None
    family: str
    spec_version: str
    severity: float
    seed: int
    sample_index: int
    # Raw inequality with the input; whether the model can see the change is `is_noop`'s job.
    changed: bool
    # Why the example was returned unchanged without trying, when on_unsupported="skip".
    skipped: str | None = None


def example_key(text: str, text_pair: str | None, example_id: str | int | None) -> str:
    """The per-example part of the RNG key: the caller's id, else a digest of the content."""
    if example_id is not None:
        return f"id:{example_id}"
    digest = hashlib.sha256()
    digest.update(text.encode("utf-8", "surrogatepass"))
    if text_pair is not None:
        digest.update(b"\x00")
        digest.update(text_pair.encode("utf-8", "surrogatepass"))
    return f"sha256:{digest.hexdigest()}"


def derive_rng(
    seed: int, example: str, family: Family, sample_index: int, field: str
) -> np.random.Generator:
    """An independent generator for one (seed, example, family@version, sample, field)."""
    _check_index("seed", seed)
    _check_index("sample_index", sample_index)
    parts = (RNG_SCHEME, example, family.spec_version, str(sample_index), field)
    # Length-prefixing keeps ("ab", "c") and ("a", "bc") apart.
    payload = b"".join(len(p.encode()).to_bytes(4, "big") + p.encode() for p in parts)
    words = np.frombuffer(hashlib.sha256(payload).digest(), dtype=">u4").tolist()
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *words])))


def _check_index(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def apply_perturbation(
    spec: PerturbationSpec,
    text: str,
    text_pair: str | None = None,
    *,
    seed: int,
    sample_index: int = 0,
    lang: str | None = None,
    example_id: str | int | None = None,
    on_unsupported: Literal["raise", "skip"] = "raise",
) -> PerturbedExample:
    """Perturb one input (a text or a text pair) as `spec` says, reproducibly.

    Text families edit `text`, `text_pair` or both (`spec.target`), each with its own stream;
    pair families need `text_pair`. When the language or the text's dominant script is not
    supported by the family, UnsupportedScriptError is raised, or with `on_unsupported="skip"`
    the input comes back unchanged with the reason in `skipped` (for batches of mixed inputs).
    """
    _check_index("seed", seed)
    _check_index("sample_index", sample_index)
    family = get_family(spec.family)
    severity = check_severity(family, spec.severity)
    if spec.target not in _TARGETS:
        raise PerturbationSpecError(
            f"target {spec.target!r} is not one of {', '.join(_TARGETS)} "
            f"(family {family.name!r}); say which sentence of the pair to perturb",
            field="target",
            allowed=list(_TARGETS),
            got=spec.target,
        )
    if family.kind == "pair" and spec.target != "both":
        raise PerturbationSpecError(
            f"family {family.name!r} edits the pair as a whole: leave target as 'both' "
            f"(got {spec.target!r})",
            field="target",
            allowed=["both"],
            got=spec.target,
        )
    key = example_key(text, text_pair, example_id)

    def result(new_text: str, new_pair: str | None, skipped: str | None = None) -> PerturbedExample:
        return PerturbedExample(
            text=new_text,
            text_pair=new_pair,
            family=family.name,
            spec_version=family.spec_version,
            severity=severity,
            seed=seed,
            sample_index=sample_index,
            changed=(new_text, new_pair) != (text, text_pair),
            skipped=skipped,
        )

    fields = _fields_to_edit(family, spec.target, text, text_pair)
    try:
        check_script(family, lang=lang)
        for value in fields.values():
            check_script(family, text=value)
    except UnsupportedScriptError as error:
        if on_unsupported == "raise":
            raise
        return result(text, text_pair, skipped=str(error))

    if family.kind == "pair":
        assert text_pair is not None  # _fields_to_edit raised otherwise
        pair_fn: PairPerturbation = family.function  # type: ignore[assignment]
        rng = derive_rng(seed, key, family, sample_index, "pair")
        new_text, new_pair = pair_fn(text, text_pair, rng, severity, lang)
        return result(new_text, new_pair)

    text_fn: TextPerturbation = family.function  # type: ignore[assignment]
    out = dict(fields)
    for name, value in fields.items():
        out[name] = text_fn(
            value, derive_rng(seed, key, family, sample_index, name), severity, lang
        )
    return result(out.get("text", text), out.get("text_pair", text_pair))


def _fields_to_edit(
    family: Family, target: Target, text: str, text_pair: str | None
) -> dict[str, str]:
    if family.kind == "pair" or target == "text_pair":
        if text_pair is None:
            raise MissingPairError(
                f"perturbation family {family.name!r} with target {target!r} needs a text_pair; "
                f"send one, or use target 'text' / a text family",
                field="text_pair",
                allowed=["a text_pair"],
                got=None,
            )
        if family.kind == "pair":
            return {"text": text, "text_pair": text_pair}
        return {"text_pair": text_pair}
    if target == "text" or text_pair is None:
        return {"text": text}
    return {"text": text, "text_pair": text_pair}


def is_noop(
    original: str | tuple[str, str | None],
    perturbed: str | tuple[str, str | None],
    normalise: Callable[[str], object],
) -> bool:
    """True when `perturbed` is the same as `original` after the caller's normaliser.

    Pass what the model really sees: the tokenizer's normaliser, or a function returning token
    ids. A perturbation the tokenizer normalises away (fullwidth letters under NFKC) is then
    reported as a no-op instead of being counted as a robust prediction.
    """
    before = original if isinstance(original, tuple) else (original, None)
    after = perturbed if isinstance(perturbed, tuple) else (perturbed, None)
    if (before[1] is None) != (after[1] is None):
        raise ValueError("original and perturbed must both be single texts or both be pairs")
    return all(
        (a is None and b is None)
        or (a is not None and b is not None and normalise(a) == normalise(b))
        for a, b in zip(before, after, strict=True)
    )


def nfkc(text: str) -> str:
    """NFKC, a stand-in normaliser when the model's own is not at hand (tests, offline use)."""
    return unicodedata.normalize("NFKC", text)
