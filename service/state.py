"""What the routes share, hung on `app.state.service` by `create_app`."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.metrics import ServiceMetrics
from service.repository import ModelEntry
from service.settings import Settings


@dataclass
class ServiceState:
    settings: Settings
    metrics: ServiceMetrics
    models: dict[str, ModelEntry] = field(default_factory=dict)
    loaded: bool = False
