"""Task kinds by name; a TaskSpec's `kind` picks one."""

from __future__ import annotations

from training.kinds.base import StepOutput, TaskKind
from training.kinds.classification import Classification
from training.tasks import TaskError

KINDS: dict[str, TaskKind] = {Classification.name: Classification()}


def get_kind(name: str) -> TaskKind:
    try:
        return KINDS[name]
    except KeyError:
        raise TaskError(
            f"unknown task kind {name!r}; known kinds: {', '.join(sorted(KINDS))}"
        ) from None


__all__ = ["KINDS", "StepOutput", "TaskKind", "get_kind"]
