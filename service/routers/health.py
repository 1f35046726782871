"""Liveness, readiness, Prometheus metrics and the loaded models."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError

from service.deps import require_read_key
from service.loaded_models import LoadedModelsDep
from service.migrate import current_revision, head_revision
from service.schemas import Health, ModelInfo, ModelsPublic, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> Health:
    """The process is alive (answered on the event loop: no thread-pool hop, fast while images decode)."""
    return Health()


@router.get("/readyz", responses={503: {"model": Readiness}})
def readyz(request: Request, response: Response, models: LoadedModelsDep) -> Readiness:
    """Models are loaded and the database is reachable and at the migration head."""
    models_loaded = bool(models.served())  # any subset of the bundles
    try:
        revision = current_revision(request.app.state.engine)
        reachable, detail = True, None
    except SQLAlchemyError as err:
        revision, reachable, detail = None, False, f"database unreachable: {type(err).__name__}"
    at_head = reachable and revision == head_revision()
    if reachable and not at_head:
        detail = "database is not at the migration head: run `semhash migrate`"
    ready = models_loaded and at_head
    if not ready:
        response.status_code = 503
    return Readiness(
        ready=ready,
        models_loaded=models_loaded,
        database_reachable=reachable,
        database_at_head=at_head,
        detail=detail,
    )


@router.get("/metrics", response_class=Response, dependencies=[Depends(require_read_key)])
def metrics(request: Request) -> Response:
    """Prometheus metrics: request counts and latencies, index sizes."""
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/models", dependencies=[Depends(require_read_key)])
def models(loaded: LoadedModelsDep) -> ModelsPublic:
    """The loaded model bundles with their config and metrics."""
    data = [
        ModelInfo(
            kind=kind,
            bundle_id=bundle.bundle_id,
            fingerprint=getattr(bundle, "fingerprint", None),
            config=bundle.config,
            metrics=bundle.metrics,
        )
        for kind, bundle in loaded.served().items()
    ]
    return ModelsPublic(data=data, count=len(data))
