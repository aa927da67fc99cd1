"""`"family": "attack"` entries of a probe request, checked up front like every other spec.

An attack is a search, not a sampled perturbation: it sits in the plan as a spec with no samples,
so indices, progress and partial results keep counting every entry of `perturbations`, and the
search itself runs after the sampled families (`service.probe.attack`).
"""

from __future__ import annotations

from robustness import Family, PerturbationSpecError
from robustness.attack import ATTACK_NAME, ATTACK_VERSION, DEFAULT_EDITS, AttackConfig, check_config
from robustness.rand import RandomSource
from robustness.registry import ANY_SCRIPT

from service.errors import InvalidInput
from service.probe.schemas import PerturbationRequest

DEFAULT_QUERY_BUDGET = 100


def _searched_not_sampled(text: str, rng: RandomSource, severity: float, lang: str | None) -> str:
    # The plan gives attack specs zero samples, so nothing ever samples this family.
    raise TypeError("the attack family is a search (service.probe.attack), it is never sampled")


ATTACK = Family(
    name=ATTACK_NAME,
    kind="text",
    function=_searched_not_sampled,
    scripts=ANY_SCRIPT,
    label_preserving=True,
    description="black-box adversarial search: words ranked by leave-one-out importance, "
    "one-unit edits from the edit families in order, within a query budget per input; "
    "reports the minimal flipping edit per input",
    severity_meaning="the largest share of words an edit may change",
    version=ATTACK_VERSION,
)


def attack_config(index: int, item: PerturbationRequest) -> AttackConfig:
    """The search settings of perturbations[index] (seeded at run time), or 422 naming the
    field and the fix."""
    config = AttackConfig(
        query_budget=item.query_budget or DEFAULT_QUERY_BUDGET,
        max_word_share=item.severity,
        edits=tuple(item.edits) if item.edits is not None else DEFAULT_EDITS,
        candidates_per_family=item.samples,
        target=item.target,
    )
    try:
        check_config(config)
    except PerturbationSpecError as error:
        raise InvalidInput(
            f"perturbations[{index}].{error.field}: {error}",
            details=[{"perturbation": index, **error.details()}],
        ) from None
    return config


def refuse_in_comparison(requested: list[PerturbationRequest]) -> None:
    """An attack adapts to the model it queries, so two models never see the same inputs."""
    for index, item in enumerate(requested):
        if item.family == ATTACK_NAME:
            raise InvalidInput(
                f"perturbations[{index}]: family {ATTACK_NAME!r} searches each model's own "
                "weak spots, so a comparison cannot give both models the same inputs; run it "
                "against each model with POST /v1/models/{model}/probe (or a probe job)"
            )
