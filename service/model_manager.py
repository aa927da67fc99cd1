"""Model versions loaded, swapped in and drained while the service keeps answering.

The served entry of a model is replaced in one dict assignment on the event loop, so a request sees
either the old version or the new one, never a mix. A request that already holds the old
`LoadedModel` finishes on it; the old version counts as draining until nothing references it any
more (then its ONNX Runtime session is freed). A new version that fails to load is refused and the
old one keeps serving; the refusal is remembered so that polling does not retry it until its files
change (e.g. a copy that was still in progress completes).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Literal

import anyio
from anyio import to_thread

from service.backend import BackendFactory
from service.repository import (
    LOAD_ERRORS,
    LoadedModel,
    ModelEntry,
    ModelLocation,
    ModelState,
    discover,
    is_model_name,
    load_model,
    signature,
)
from service.settings import Settings

logger = logging.getLogger(__name__)

Signature = tuple[tuple[str, int, int], ...]


class NoSuchModel(LookupError):
    """The repository has no model directory of that name (or the name is not a valid one)."""


@dataclass(frozen=True)
class ReloadOutcome:
    model: str
    result: Literal["loaded", "unchanged", "refused"]
    served_version: str | None
    previous_version: str | None = None
    tried_version: str | None = None
    error: str | None = None


class ModelManager:
    """Owns `models` (the dict the routes read) and every change made to it after startup."""

    def __init__(
        self,
        settings: Settings,
        backend_factory: BackendFactory,
        models: dict[str, ModelEntry],
        on_change: Callable[[], None],
        warm_up: Callable[[LoadedModel], Awaitable[object]],
        on_reload: Callable[[ReloadOutcome], None] = lambda outcome: None,
    ) -> None:
        self.settings = settings
        self.backend_factory = backend_factory
        self.models = models
        self.on_change = on_change
        # Run on a version loaded after startup, before it takes traffic; raising refuses it.
        self.warm_up = warm_up
        # Told of each version swapped in or newly refused after startup (not of a refusal it
        # remembers, nor of "unchanged").
        self.on_reload = on_reload
        # One load at a time: a poll and an admin reload of the same model must not race.
        self._lock = anyio.Lock()
        self._refused: dict[str, tuple[str, Signature]] = {}
        # Finalizers run on whichever thread drops the last reference.
        self._draining_lock = threading.Lock()
        self._draining: Counter[tuple[str, str]] = Counter()

    async def load_all(self) -> None:
        """Startup: the newest version of every model; a broken one is recorded as failed.

        Warm-up is left to the caller here, which does all models before reporting ready.
        """
        await self._scan(retry_refused=True, warm=False)

    async def poll_once(self) -> list[ReloadOutcome]:
        return await self._scan(retry_refused=False, warm=True)

    async def poll_forever(self, interval_s: float) -> None:
        while True:
            await anyio.sleep(interval_s)
            try:
                await self.poll_once()
            except Exception:
                # Whatever goes wrong (a flaky mount, a bug), the poller must neither end hot
                # reloading for the process's life nor take the serving task group down with it.
                logger.exception("looking for new model versions in %s failed", self._repo)

    async def reload(self, name: str) -> ReloadOutcome:
        """Load the newest version of one model on request, even one refused before."""
        if not is_model_name(name):
            raise NoSuchModel(
                f"{name!r} is not a model name (letters, digits, '.', '_', '-'; up to 64)"
            )
        async with self._lock:
            locations = (await to_thread.run_sync(discover, self.settings.model_repo)).get(name)
            if not locations:
                serving = self.models.get(name)
                still = (
                    f"; version {serving.model.version} keeps serving"
                    if serving and serving.model
                    else ""
                )
                raise NoSuchModel(
                    f"no versions of model {name!r} in the model repository {self._repo}{still}"
                )
            return await self._update(name, locations, retry_refused=True, warm=True)

    def draining_versions(self, name: str) -> list[str]:
        with self._draining_lock:
            return sorted(
                v for (model, v), count in self._draining.items() if model == name and count
            )

    @property
    def _repo(self) -> str:
        return str(self.settings.model_repo)

    async def _scan(self, *, retry_refused: bool, warm: bool) -> list[ReloadOutcome]:
        async with self._lock:
            found = await to_thread.run_sync(discover, self.settings.model_repo)
            return [
                await self._update(name, locations, retry_refused=retry_refused, warm=warm)
                for name, locations in found.items()
            ]

    async def _update(
        self, name: str, locations: list[ModelLocation], *, retry_refused: bool, warm: bool
    ) -> ReloadOutcome:
        newest = locations[-1]
        versions = [loc.version for loc in locations]
        entry = self.models.get(name)
        served = entry.model if entry else None
        if entry is not None and served is not None and served.version == newest.version:
            if entry.versions != versions or entry.refused_version is not None:
                self.models[name] = ModelEntry(name, versions, ModelState.READY, served)
            return ReloadOutcome(name, "unchanged", served.version)
        files = await to_thread.run_sync(signature, newest.path)
        refused_before = self._refused.get(name) == (newest.version, files)
        if entry is not None and refused_before and not retry_refused:
            if entry.versions != versions:
                self.models[name] = replace(entry, versions=versions)
            return ReloadOutcome(
                name, "refused", entry.model.version if entry.model else None,
                tried_version=newest.version, error=entry.error,
            )  # fmt: skip
        try:
            model = await to_thread.run_sync(
                load_model, newest, self.settings, self.backend_factory
            )
        except LOAD_ERRORS as exc:
            outcome = self._refuse(name, versions, newest.version, files, served, str(exc))
            return self._reported(outcome, after_startup=warm)
        if warm:
            try:
                await self.warm_up(model)
            except Exception as exc:  # onnxruntime raises its own untyped errors
                error = f"warm-up failed: {exc}"
                outcome = self._refuse(name, versions, newest.version, files, served, error)
                return self._reported(outcome, after_startup=True)
        # No await from here to the assignment: a request sees the old entry or the new one.
        self._refused.pop(name, None)
        self.models[name] = ModelEntry(name, versions, ModelState.READY, model)
        previous = served.version if served else None
        if served is not None:
            self._drain(served)
            logger.info(
                "model %s: version %s serves, version %s drains", name, model.version, previous
            )
        self.on_change()
        outcome = ReloadOutcome(name, "loaded", model.version, previous, newest.version)
        return self._reported(outcome, after_startup=warm)

    def _reported(self, outcome: ReloadOutcome, *, after_startup: bool) -> ReloadOutcome:
        if after_startup:
            self.on_reload(outcome)
        return outcome

    def _refuse(
        self,
        name: str,
        versions: list[str],
        version: str,
        files: Signature,
        served: LoadedModel | None,
        error: str,
    ) -> ReloadOutcome:
        self._refused[name] = (version, files)
        logger.error("refusing model %s version %s: %s", name, version, error)
        if served is not None:
            logger.warning("model %s: version %s keeps serving", name, served.version)
            state = ModelState.READY
        else:
            state = ModelState.FAILED
        self.models[name] = ModelEntry(
            name, versions, state, served, error=error, refused_version=version
        )
        self.on_change()
        return ReloadOutcome(
            name, "refused", served.version if served else None,
            tried_version=version, error=error,
        )  # fmt: skip

    def _drain(self, old: LoadedModel) -> None:
        key = (old.name, old.version)
        with self._draining_lock:
            self._draining[key] += 1
        weakref.finalize(old, self._drained, key)

    def _drained(self, key: tuple[str, str]) -> None:
        with self._draining_lock:
            self._draining[key] -= 1
            if self._draining[key] <= 0:
                del self._draining[key]
        logger.info("model %s version %s drained: no request uses it any more", *key)
