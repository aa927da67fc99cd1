"""Task kinds by name; a TaskSpec's `kind` picks one."""

from __future__ import annotations

from training.kinds.base import StepOutput, TaskKind
from training.kinds.classification import Classification
from training.kinds.extractive_qa import ExtractiveQA
from training.kinds.multiple_choice import MultipleChoice
from training.kinds.token_tagging import TokenTagging
from training.tasks import TaskError, get_task

_ALL_KINDS: tuple[TaskKind, ...] = (
    Classification(),
    MultipleChoice(),
    ExtractiveQA(),
    TokenTagging(),
)
KINDS: dict[str, TaskKind] = {kind.name: kind for kind in _ALL_KINDS}

# The final checkpoint is an XLMRobertaForSequenceClassification that [Export] and the service
# serve, and zero-shot evaluation reports per-label accuracy and macro-F1: only classification
# tasks can be a target. The other kinds train the encoder in intermediate phases.
TARGET_KINDS = frozenset({Classification.name})


def get_kind(name: str) -> TaskKind:
    try:
        return KINDS[name]
    except KeyError:
        raise TaskError(
            f"unknown task kind {name!r}; known kinds: {', '.join(sorted(KINDS))}"
        ) from None


def check_target_task(name: str) -> None:
    """Refuse a target task the final classifier checkpoint cannot represent."""
    spec = get_task(name)
    if spec.kind not in TARGET_KINDS:
        raise TaskError(
            f"target task {name!r} has kind {spec.kind!r}: the target phase must be a"
            " classification task, because the final checkpoint is a sequence classifier"
            f" (XLMRobertaForSequenceClassification); train {name!r} in the intermediate phase"
        )


__all__ = ["KINDS", "TARGET_KINDS", "StepOutput", "TaskKind", "check_target_task", "get_kind"]
