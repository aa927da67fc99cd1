"""The perturbation family registry and the errors its lookups raise.

A family is a pure function registered with the scripts it supports, whether it preserves the
label (an invariance test) or may change it (a directional test), and a version that changes
whenever its output for a given seed changes. Text families have the signature
`(text, rng, severity, lang) -> text`; pair families take and return `(text, text_pair)`.

Lookups raise subclasses of `PerturbationSpecError` (a ValueError) whose message names the
family, the allowed values and what to change; `details()` gives the same as data, so the HTTP
layer can answer 422 without parsing messages.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from robustness.rand import RandomSource
from robustness.scripts import COMMON, dominant_script, scripts_for_lang

ANY_SCRIPT: Literal["any"] = "any"
ScriptSupport = frozenset[str] | Literal["any"]
FamilyKind = Literal["text", "pair"]

__all__ = [
    "ANY_SCRIPT",
    "Family",
    "MissingPairError",
    "PairPerturbation",
    "PerturbationSpecError",
    "SeverityOutOfRangeError",
    "TextPerturbation",
    "UnknownFamilyError",
    "UnsupportedScriptError",
    "all_families",
    "check_script",
    "check_severity",
    "dominant_script",
    "get_family",
    "pair_family",
    "resolve",
    "text_family",
]


class TextPerturbation(Protocol):
    def __call__(self, text: str, rng: RandomSource, severity: float, lang: str | None) -> str: ...


class PairPerturbation(Protocol):
    def __call__(
        self, text: str, text_pair: str, rng: RandomSource, severity: float, lang: str | None
    ) -> tuple[str, str]: ...


@dataclass(frozen=True)
class Family:
    name: str
    kind: FamilyKind
    function: TextPerturbation | PairPerturbation
    scripts: ScriptSupport
    label_preserving: bool
    description: str
    severity_meaning: str
    version: str
    # Invariance holds only for symmetric pair tasks (paraphrase), not for NLI: premise and
    # hypothesis play different roles.
    symmetric_task_only: bool = False

    @property
    def spec_version(self) -> str:
        """What a response echoes so a probe can be repeated: "name@version"."""
        return f"{self.name}@{self.version}"

    def supports_script(self, script: str) -> bool:
        # Text with no script of its own (digits, punctuation) has nothing to refuse.
        return self.scripts == ANY_SCRIPT or script == COMMON or script in self.scripts

    def allowed_scripts(self) -> str:
        return "any script" if self.scripts == ANY_SCRIPT else ", ".join(sorted(self.scripts))


class PerturbationSpecError(ValueError):
    """A perturbation request that cannot be carried out as asked."""

    def __init__(self, message: str, *, field: str, allowed: list[str], got: object) -> None:
        super().__init__(message)
        self.field = field
        self.allowed = allowed
        self.got = got

    def details(self) -> dict[str, object]:
        return {"field": self.field, "allowed": self.allowed, "got": self.got, "message": str(self)}


class UnknownFamilyError(PerturbationSpecError, KeyError):
    def __str__(self) -> str:
        # KeyError would quote the message; keep it readable.
        return str(self.args[0])


class SeverityOutOfRangeError(PerturbationSpecError):
    pass


class UnsupportedScriptError(PerturbationSpecError):
    pass


class MissingPairError(PerturbationSpecError):
    pass


_REGISTRY: dict[str, Family] = {}
_BUILTINS_LOADED = False


def _register(family: Family) -> None:
    if family.name in _REGISTRY:
        raise ValueError(f"perturbation family {family.name!r} is registered twice")
    if family.scripts != ANY_SCRIPT and not family.scripts:
        raise ValueError(f"family {family.name!r} must support at least one script or 'any'")
    _REGISTRY[family.name] = family


def text_family(
    *,
    name: str,
    scripts: ScriptSupport,
    label_preserving: bool,
    description: str,
    severity_meaning: str,
    version: str = "1",
) -> Callable[[TextPerturbation], TextPerturbation]:
    """Register a `(text, rng, severity, lang) -> text` function as a family."""

    def register(function: TextPerturbation) -> TextPerturbation:
        _register(
            Family(
                name=name,
                kind="text",
                function=function,
                scripts=scripts,
                label_preserving=label_preserving,
                description=description,
                severity_meaning=severity_meaning,
                version=version,
            )
        )
        return function

    return register


def pair_family(
    *,
    name: str,
    scripts: ScriptSupport,
    label_preserving: bool,
    description: str,
    severity_meaning: str,
    version: str = "1",
    symmetric_task_only: bool = False,
) -> Callable[[PairPerturbation], PairPerturbation]:
    """Register a `(text, text_pair, rng, severity, lang) -> (text, text_pair)` function."""

    def register(function: PairPerturbation) -> PairPerturbation:
        _register(
            Family(
                name=name,
                kind="pair",
                function=function,
                scripts=scripts,
                label_preserving=label_preserving,
                description=description,
                severity_meaning=severity_meaning,
                version=version,
                symmetric_task_only=symmetric_task_only,
            )
        )
        return function

    return register


def _ensure_builtins() -> None:
    # Imported lazily so that importing this module never imports the families that import it.
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        importlib.import_module("robustness.perturb")
        _BUILTINS_LOADED = True


def all_families() -> list[Family]:
    """Every registered family, sorted by name."""
    _ensure_builtins()
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def get_family(name: str) -> Family:
    """The family called `name`; UnknownFamilyError lists the known names otherwise."""
    _ensure_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = sorted(_REGISTRY)
        raise UnknownFamilyError(
            f"unknown perturbation family {name!r}; use one of: {', '.join(known)}",
            field="family",
            allowed=known,
            got=name,
        ) from None


def check_severity(family: Family, severity: object) -> float:
    """`severity` as a float in [0, 1], or SeverityOutOfRangeError naming the family."""
    if isinstance(severity, bool) or not isinstance(severity, int | float):
        raise _bad_severity(family, severity)
    if not 0.0 <= severity <= 1.0:  # also refuses NaN
        raise _bad_severity(family, severity)
    return float(severity)


def _bad_severity(family: Family, severity: object) -> SeverityOutOfRangeError:
    return SeverityOutOfRangeError(
        f"severity for family {family.name!r} must be a number in [0, 1]; for this family "
        f"it means: {family.severity_meaning} (0 leaves the input unchanged); "
        f"got {severity!r}",
        field="severity",
        allowed=["0 <= severity <= 1"],
        got=severity,
    )


def check_script(family: Family, *, text: str | None = None, lang: str | None = None) -> None:
    """Raise UnsupportedScriptError when `family` cannot handle the language or the text.

    A language passes when every script it is written in is supported (Japanese needs Han,
    Hiragana and Katakana); an unknown language tag is judged by the text alone. A text passes
    when its dominant script is supported.
    """
    lang_scripts = scripts_for_lang(lang)
    if lang_scripts is not None:
        missing = sorted(s for s in lang_scripts if not family.supports_script(s))
        if missing:
            what = f"language {lang!r} (written in {', '.join(missing)})"
            raise _unsupported(family, what, got=lang or "")
    if text is not None:
        script = dominant_script(text)
        if not family.supports_script(script):
            raise _unsupported(family, f"text whose dominant script is {script}", got=script)


def _unsupported(family: Family, what: str, *, got: str) -> UnsupportedScriptError:
    allowed = ["any"] if family.scripts == ANY_SCRIPT else sorted(family.scripts)
    return UnsupportedScriptError(
        f"perturbation family {family.name!r} does not support {what}; it supports "
        f"{family.allowed_scripts()}. Drop this family for that language or pick one that "
        f"supports it (see robustness/FAMILIES.md)",
        field="family",
        allowed=allowed,
        got=got,
    )


def resolve(
    name: str,
    severity: object,
    *,
    lang: str | None = None,
    text: str | None = None,
    has_pair: bool | None = None,
) -> Family:
    """Validate one perturbation request up front and return its family.

    Checks, in order: the family exists, the severity is in [0, 1], the language/text script is
    supported, and a pair family gets a text pair (pass `has_pair` when it is known).
    """
    family = get_family(name)
    check_severity(family, severity)
    check_script(family, text=text, lang=lang)
    if family.kind == "pair" and has_pair is False:
        raise MissingPairError(
            f"perturbation family {family.name!r} edits sentence pairs; send inputs with "
            f"text_pair, or use a text family",
            field="text_pair",
            allowed=["a non-empty text_pair"],
            got=None,
        )
    return family
