"""The FastAPI app: `create_app()` wires settings, storage, models, indexes, routers and middleware."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import CollectorRegistry
from threadpoolctl import threadpool_limits

from service.db import make_engine, make_session_factory
from service.decode_pool import DecodePool, default_workers
from service.errors import error_responses, register_error_handlers
from service.index_sync import IndexRegistry
from service.index_warmup import warm_up
from service.loaded_models import load_models
from service.middleware import (
    BodySizeLimitMiddleware,
    IndexSizeCollector,
    MetricsMiddleware,
    RequestMetrics,
    Utf8JsonBodyMiddleware,
)
from service.migrate import ensure_at_head
from service.openapi import document_configured_maxima
from service.request_log import RequestLogMiddleware, configure_logging
from service.routers import (
    collections,
    digits,
    documents,
    frames,
    hash,
    health,
    image_collections,
    images,
    motor,
    page,
    search,
)
from service.settings import Settings, get_settings
from service.write_priority import WritePriority, WritePriorityMiddleware

logger = logging.getLogger(__name__)


class BundleMissingError(RuntimeError):
    """The server cannot start without any model bundle."""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Check the database, load the models once, build the indexes and start keeping them current."""
    settings: Settings = app.state.settings
    engine = make_engine(settings.database_url)
    try:
        ensure_at_head(engine)
        # Every model is optional: the server starts with any subset, and the routes of a missing
        # bundle answer 503 and say why (the text routes too).
        models = load_models(settings.models_dir, settings.text_bundle_dir)
        if not models.served():
            raise BundleMissingError(
                f"no model bundle under {settings.models_dir} (text: {models.why_not_loaded('text')}). "
                f"Train one, e.g. `semhash train text --corpus 20news --out {settings.text_bundle_dir}`, "
                "or set SEMHASH_MODELS_DIR to a folder with text/, digits/, images/, ..."
            )
        app.state.models = models
        app.state.engine = engine
        app.state.session_factory = make_session_factory(engine)
        # Before the first sync: else the first load of a collection (maybe one the bulk job creates
        # later, found by the poller) would compile the index kernels, seconds late (index_warmup).
        warm_up()
        registry = IndexRegistry(app.state.session_factory)
        registry.sync()
        app.state.index_registry = registry
        logger.info("serving %s with indexes %s", sorted(models.served()), registry.sizes())
        registry.start_polling(settings.index_poll_seconds, settings.tombstone_retention_seconds)
        workers = settings.image_decode_workers or default_workers()
        app.state.decode_pool = DecodePool(workers, settings.image_decode_queue)
        try:
            yield
        finally:
            app.state.decode_pool.shutdown()
            registry.stop_polling()
    finally:
        engine.dispose()


def _index_sizes(app: FastAPI) -> dict[str, int]:
    registry: IndexRegistry | None = getattr(app.state, "index_registry", None)
    return registry.sizes() if registry is not None else {}


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app for `settings` (the environment's by default)."""
    app = FastAPI(
        title="semhash",
        summary="Semantic hashing: documents as binary codes, search as a Hamming-ball memory lookup.",
        lifespan=lifespan,
        # A trailing slash is another resource, never a redirect: `DELETE /v1/collections/c/` (what a
        # client makes of `.../documents/..`) must not reach the collection.
        redirect_slashes=False,
    )
    app.state.settings = settings or get_settings()
    app.state.metrics_registry = CollectorRegistry()
    app.state.metrics_registry.register(IndexSizeCollector(lambda: _index_sizes(app)))
    register_error_handlers(app)
    # Every operation documents the errors it can answer (schema: service.errors.ErrorResponse).
    common = (401, 422, 503)
    images_codes = (*common, 400, 404, 413, 415, 429)
    routers = (
        (hash, (*common, 413)),
        (collections, (*common, 404, 409, 413)),
        (documents, (*common, 404, 409, 413)),
        (search, (*common, 404, 409, 413)),
        (digits, images_codes),
        (motor, images_codes),
        (images, images_codes),
        (image_collections, (*images_codes, 409)),
        (frames, images_codes),
        (health, (401, 422)),
    )
    for module, codes in routers:
        app.include_router(module.router, responses=error_responses(*codes))
    # the web page's reads; the page itself: GET / and /static
    app.include_router(page.reads, responses=error_responses(*common, 404, 413))
    app.include_router(page.router, responses=error_responses(*common))
    # Inside the size limit, so a JSON body is read only once the limit has let it through.
    app.add_middleware(Utf8JsonBodyMiddleware)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=app.state.settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=RequestMetrics(app.state.metrics_registry))
    if app.state.settings.cors_origins:
        # Outside the others, so that browsers can read errors (a 413 from the body limit) too.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=app.state.settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Content-Type", "X-API-Key", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    # Around all but the request log: a short write counts as in flight from its arrival.
    app.state.write_priority = WritePriority(app.state.settings.search_yield_to_writes_ms / 1000)
    app.add_middleware(WritePriorityMiddleware, priority=app.state.write_priority)
    # Outermost, so that every response (a 413 from the body limit included) carries a request id.
    app.add_middleware(RequestLogMiddleware, log_requests=app.state.settings.log_requests)
    document_configured_maxima(app, app.state.settings)
    return app


def create_served_app() -> FastAPI:
    """The factory `semhash serve` hands to uvicorn: structured logging, then the app (in every worker)."""
    settings = get_settings()
    configure_logging(json_lines=settings.log_format == "json")
    # Requests multiply small matrices (one document, one image): waking BLAS threads costs more than
    # it saves (digit recognition p50 went from 6-16 ms to 2.8 ms), and uvicorn's thread pool already
    # serves requests in parallel. Called without `with`, the limit holds for the process.
    threadpool_limits(limits=1, user_api="blas")
    return create_app(settings)
