"""`polyprobe serve --ray`: the same FastAPI app, deployed as a Ray Serve application.

Every replica builds its own app with `create_app` (models, batcher and metrics are per replica);
Ray Serve's proxy spreads HTTP requests over the replicas and the autoscaler adds or removes
replicas to keep each one near `ray_target_ongoing_requests` requests in flight. Ray is imported
only when this is used, so the plain serving install does not need it.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import TYPE_CHECKING, Any

from service.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI
    from ray.serve import Application

logger = logging.getLogger(__name__)

APP_NAME = "polyprobe"
DEPLOYMENT_NAME = "polyprobe"
INSTALL_RAY_HINT = (
    "serving on Ray needs the ray extra: pip install 'polyprobe[ray]' (ray[serve]==2.60.0)"
)


class RayNotInstalledError(RuntimeError):
    """Ray Serve is not importable; the message says what to install."""


def _ray_modules() -> tuple[Any, Any]:
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise RayNotInstalledError(f"{INSTALL_RAY_HINT} (missing: {exc.name})") from exc
    return ray, serve


def for_replicas(settings: Settings) -> Settings:
    """The settings with every path absolute: replicas start in another working directory."""
    updates: dict[str, Any] = {"model_repo": settings.model_repo.resolve()}
    if settings.api_keys_file is not None:
        updates["api_keys_file"] = settings.api_keys_file.resolve()
    return settings.model_copy(update=updates)


def deployment_options(settings: Settings) -> dict[str, Any]:
    """Ray Serve deployment options from the `POLYPROBE_RAY_*` settings."""
    if settings.ray_min_replicas > settings.ray_max_replicas:
        raise ValueError(
            f"POLYPROBE_RAY_MIN_REPLICAS ({settings.ray_min_replicas}) is above "
            f"POLYPROBE_RAY_MAX_REPLICAS ({settings.ray_max_replicas})"
        )
    if settings.ray_target_ongoing_requests > settings.ray_max_ongoing_requests:
        raise ValueError(
            f"POLYPROBE_RAY_TARGET_ONGOING_REQUESTS ({settings.ray_target_ongoing_requests}) "
            f"is above POLYPROBE_RAY_MAX_ONGOING_REQUESTS ({settings.ray_max_ongoing_requests}): "
            "a replica could never reach its target, so the autoscaler would never scale down"
        )
    return {
        "name": DEPLOYMENT_NAME,
        "ray_actor_options": {
            "num_cpus": settings.ray_num_cpus,
            "num_gpus": settings.ray_num_gpus,
        },
        "max_ongoing_requests": settings.ray_max_ongoing_requests,
        "autoscaling_config": {
            "min_replicas": settings.ray_min_replicas,
            # Start at the floor but never at zero: the first request should not wait for a load.
            "initial_replicas": max(settings.ray_min_replicas, 1),
            "max_replicas": settings.ray_max_replicas,
            "target_ongoing_requests": settings.ray_target_ongoing_requests,
            "upscale_delay_s": settings.ray_upscale_delay_s,
            "downscale_delay_s": settings.ray_downscale_delay_s,
        },
        # A replica being removed gets as long to finish its requests as a SIGTERM'd server.
        "graceful_shutdown_timeout_s": settings.shutdown_timeout_s,
    }


def application(settings: Settings) -> Application:
    """The Ray Serve application: one deployment whose replicas each run `create_app(settings)`."""
    _, serve = _ray_modules()
    replica_settings = for_replicas(settings)

    @serve.ingress()
    class PolyprobeIngress:
        def __init__(self, settings: Settings) -> None:
            self._settings = settings

        def __serve_build_asgi_app__(self) -> FastAPI:
            # Imported here so the driver never loads the service's ONNX stack itself.
            from service.app import create_app

            return create_app(self._settings)

    deployment = serve.deployment(PolyprobeIngress).options(**deployment_options(settings))
    built: Application = deployment.bind(replica_settings)
    return built


def app_builder(args: dict[str, Any]) -> Application:
    """Import path for a Ray Serve config (KubeRay's `serveConfigV2`): `service.ray_serve:app_builder`.

    Settings come from the replica environment's `POLYPROBE_*` variables; `args` may override them.
    """
    return application(Settings(**args))


def serve_on_ray(settings: Settings) -> int:
    """Deploy on the Ray cluster at `ray_address` (a local one if unset) and serve until a signal.

    SIGTERM or SIGINT deletes the application (replicas drain first) and returns 0.
    """
    if settings.port == 0:
        raise ValueError("--ray needs a fixed port: Ray Serve's proxy cannot pick a free one")
    ray, serve = _ray_modules()
    app = application(settings)
    ray.init(address=settings.ray_address, logging_level=logging.WARNING)
    # After ray.init, so that these handlers are the ones in force while serving.
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: stop.set())
    try:
        serve.start(
            proxy_location=settings.ray_proxy_location,
            http_options={"host": settings.host, "port": settings.port},
        )
        serve.run(app, name=APP_NAME, route_prefix="/")
        logger.info(
            "serving on Ray Serve at http://%s:%d (replicas %d..%d, %g CPU and %g GPU each)",
            settings.host,
            settings.port,
            settings.ray_min_replicas,
            settings.ray_max_replicas,
            settings.ray_num_cpus,
            settings.ray_num_gpus,
        )
        stop.wait()
        logger.info("deleting the Ray Serve application %r", APP_NAME)
        serve.delete(APP_NAME)
    finally:
        ray.shutdown()
    return 0
