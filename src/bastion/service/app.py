"""The HTTP inference service over one verified bundle (FastAPI). Routes are thin: parse, batch, render.

POST /v1/predict   JSON {"inputs": [...]}, a .npy array or image uploads -> label, probabilities, anomaly
                   score, decision (accept / flag / reject) and ensemble votes per input
GET  /healthz      the process is alive
GET  /readyz       the model is loaded, warmed up and the batcher runs (503 otherwise)
GET  /v1/model     the bundle manifest (input_shape, feature schema, defense, robustness) + limits
GET  /metrics      Prometheus text format
GET  /docs         Swagger UI, /redoc ReDoc: their scripts and styles served by the service itself
                   (from the fastapi-offline package), so the pages work without network access

Client errors are 4xx with ``{"detail": [{"loc", "msg", "type"}]}`` naming the field; 413 for bodies or
batches over the limits, 503 when the batching queue is full, 504 when inference exceeds the timeout.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastapi_offline
import torch
from fastapi import Depends, FastAPI, Request, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.artifacts.bundle import Bundle
from bastion.data.spec import DatasetSpec
from bastion.errors import BastionError, ConfigError
from bastion.service.audit import AuditLog
from bastion.service.batching import MicroBatcher, QueueFull
from bastion.service.engine import Predictor
from bastion.service.inputs import RequestError, parse_csv, parse_images, parse_json, parse_npy
from bastion.service.metrics import Metrics
from bastion.service.schemas import ErrorResponse, PredictResponse, predict_openapi

log = logging.getLogger(__name__)

ROUTES = ("/v1/predict", "/v1/model", "/healthz", "/readyz", "/metrics")
#: Where the documentation pages' scripts and styles are served from (the service itself, never a CDN).
DOCS_ASSETS = "/docs-assets"
#: Swagger UI and ReDoc builds shipped inside the fastapi-offline wheel (a dependency of the serve extra).
DOCS_ASSET_DIR = Path(fastapi_offline.__file__).parent / "static"


@dataclass(frozen=True, kw_only=True)
class ServiceSettings:
    """Limits and options of one service instance.

    Attributes:
        max_inputs: inputs per request (413 above).
        max_body_bytes: request body size (413 above).
        timeout_s: longest wait for inference, queueing included (504 after).
        max_queue: requests waiting for the model (503 above).
        batch_rows: inputs per model call when batching concurrent requests.
        batch_wait_ms: extra time a request waits for others to batch with; 0 batches only what queued
            up while the previous model call ran (no added latency at low load).
        token: bearer token every /v1 and /metrics request must present; None = no auth.
        defend: run the bundle's runtime defense (False: the bare model, every input accepted).
        audit_log: JSONL file receiving flagged and rejected inputs; None = no audit log.
        header_timeout_s: a connection whose request line and headers are not complete this long
            (between 1x and 2x) is closed: a slow-header client (slowloris) does not hold a socket forever.
        max_connections: concurrent connections; uvicorn answers 503 beyond.
    """

    max_inputs: int = 256
    max_body_bytes: int = 8 << 20
    timeout_s: float = 10.0
    max_queue: int = 256
    batch_rows: int = 256
    batch_wait_ms: float = 0.0
    token: str | None = None
    defend: bool = True
    audit_log: Path | None = None
    audit_max_bytes: int = 10 << 20
    audit_backups: int = 3
    header_timeout_s: float = 10.0
    max_connections: int = 1024

    def __post_init__(self) -> None:
        positive = (
            "max_inputs",
            "max_body_bytes",
            "timeout_s",
            "max_queue",
            "batch_rows",
            "header_timeout_s",
            "max_connections",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"service setting {name} must be > 0, got {getattr(self, name)}")
        if self.batch_wait_ms < 0:
            raise ConfigError(f"batch_wait_ms must be >= 0, got {self.batch_wait_ms}")
        if self.token is not None and len(self.token) < 16:
            raise ConfigError("the bearer token must be at least 16 characters")

    def public(self) -> dict[str, Any]:
        """The limits a client may know (never the token)."""
        d = asdict(self)
        d["auth"] = d.pop("token") is not None
        d["audit_log"] = d["audit_log"] is not None
        return d


def _error(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


class _Guard:
    """Outermost ASGI layer: refuses declared bodies over the limit before reading them, and counts
    every HTTP request by route and status in the metrics (unknown paths count as ``other``)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, metrics: Metrics) -> None:
        self.app, self.max_body_bytes, self.metrics = app, max_body_bytes, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in ROUTES else "other"
        started = time.perf_counter()
        status = 500

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            declared = dict(scope["headers"]).get(b"content-length")
            problem = None
            if declared is not None and not declared.isdigit():
                problem = (400, "invalid Content-Length header")
            elif declared is not None and int(declared) > self.max_body_bytes:
                problem = (413, f"request body exceeds the limit of {self.max_body_bytes} bytes")
            if problem is None:
                await self.app(scope, receive, counting_send)
            else:
                refusal = _error(problem[0], [{"loc": ["header", "content-length"], "msg": problem[1], "type": "body"}])
                await refusal(scope, receive, counting_send)
        finally:
            self.metrics.requests.labels(route=route, status=str(status)).inc()
            self.metrics.latency.labels(route=route).observe(time.perf_counter() - started)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) once more than ``limit`` bytes arrived (chunked bodies declare no size)."""
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > limit:
            raise RequestError(f"request body exceeds the limit of {limit} bytes", status=413, kind="too_large")
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # starlette re-reads a consumed body from here (multipart parsing)
    return body


class _Service:
    """The state behind the routes: the predictor, its micro-batcher, the metrics and the audit log."""

    def __init__(self, bundle: Bundle, settings: ServiceSettings) -> None:
        self.bundle, self.settings = bundle, settings
        self.predictor = Predictor.from_bundle(bundle, defend=settings.defend)
        self.metrics = Metrics()
        self.audit = (
            AuditLog(settings.audit_log, max_bytes=settings.audit_max_bytes, backups=settings.audit_backups)
            if settings.audit_log is not None
            else None
        )
        self.batcher: MicroBatcher[dict[str, Any]] = MicroBatcher(
            self.predictor,
            max_rows=settings.batch_rows,
            max_wait_s=settings.batch_wait_ms / 1000,
            max_queue=settings.max_queue,
            on_batch=self._on_batch,
        )
        self.ready = False
        self.model_info = {
            **bundle.manifest,
            "bundle_digest": bundle.digest,
            "service": {**settings.public(), "defended": self.predictor.defended},
        }

    def _on_batch(self, rows: int, waited: float) -> None:
        self.metrics.batch_rows.observe(rows)
        self.metrics.queue_wait.observe(waited)

    @asynccontextmanager
    async def lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        await self.batcher.start()
        spec = self.bundle.spec
        warm = torch.as_tensor(getattr(spec.domain, "lower", 0.0), dtype=torch.float32)
        warm = warm.expand(1, *spec.input_shape).contiguous()
        with torch.inference_mode():
            await asyncio.to_thread(self.predictor.defense, warm)  # first call pays allocation and lazy init
        self.ready = True
        log.info("serving %s (digest %s, defended=%s)", self.bundle.name, self.bundle.digest, self.predictor.defended)
        try:
            yield
        finally:
            self.ready = False
            await self.batcher.stop()

    async def require_token(self, request: Request) -> None:
        if self.settings.token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        expected = self.settings.token.encode()
        ok = scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode("utf-8", "replace"), expected)
        if not ok:
            raise RequestError(
                "missing or invalid bearer token", loc=("header", "authorization"), status=401, kind="auth"
            )

    async def predict(self, request: Request) -> JSONResponse:
        settings, metrics = self.settings, self.metrics
        x = await parse_request(request, self.bundle.spec, settings)
        request_id = uuid.uuid4().hex
        try:
            outputs = await self.batcher.submit(x, settings.timeout_s)
        except QueueFull:
            metrics.rejected_requests.labels(reason="queue_full").inc()
            msg = [{"loc": [], "msg": "server busy: inference queue is full, retry later", "type": "overloaded"}]
            return _error(503, msg, {"Retry-After": "1"})
        except TimeoutError:
            metrics.rejected_requests.labels(reason="timeout").inc()
            msg = [{"loc": [], "msg": f"inference did not finish within {settings.timeout_s:g} s", "type": "timeout"}]
            return _error(504, msg)
        for out in outputs:
            metrics.inputs.labels(decision=out["decision"]).inc()
        if self.audit is not None:
            try:
                await _audit(self.audit, request_id, x, outputs)
            except OSError:  # the answer still goes out; the gap is logged and counted
                log.exception("audit log write failed for request %s", request_id)
                metrics.audit_errors.inc()
        body = {
            "request_id": request_id,
            "model": self.bundle.name,
            "defended": self.predictor.defended,
            "outputs": outputs,
        }
        return JSONResponse(body, headers={"X-Request-ID": request_id})


async def parse_request(request: Request, spec: DatasetSpec, settings: ServiceSettings) -> torch.Tensor:
    """The request's inputs as one tensor: JSON, a .npy array or multipart image uploads."""
    try:
        async with asyncio.timeout(settings.timeout_s):  # a trickled body must not hold a slot forever
            body = await _read_body(request, settings.max_body_bytes)
    except TimeoutError:
        raise RequestError(f"request body not received within {settings.timeout_s:g} s", status=408) from None
    ctype, params = _content_type(request.headers.get("content-type", "application/json"))
    if ctype == "multipart/form-data":
        try:
            form = await request.form(max_files=settings.max_inputs, max_fields=settings.max_inputs)
        except StarletteHTTPException as exc:  # starlette answers 400 for every multipart problem
            detail = str(exc.detail)
            if detail.startswith(("Too many files", "Too many fields")):
                msg = f"files: more than {settings.max_inputs} uploads per request ({detail})"
                raise RequestError(msg[:300], loc=("body", "files"), status=413, kind="too_large") from None
            raise RequestError(f"malformed multipart body: {detail}"[:300], status=400) from None
        for key in form:
            if key != "files":
                raise RequestError(f"{key}: unknown form field (allowed: files)"[:300], loc=("body", key))
        files = []
        for item in form.getlist("files"):
            if not isinstance(item, UploadFile):
                raise RequestError("files: expected file uploads, got a text field", loc=("body", "files"))
            files.append((item.filename or "upload", await item.read()))
        return await asyncio.to_thread(parse_images, files, spec, max_inputs=settings.max_inputs)
    if ctype == "application/x-npy":
        return parse_npy(body, spec, max_inputs=settings.max_inputs)
    if ctype == "text/csv":
        header = params.get("header")
        charset = params.get("charset", "utf-8")
        if header not in (None, "present", "absent") or charset not in ("utf-8", "us-ascii"):
            bad = f"header={header}" if header not in (None, "present", "absent") else f"charset={charset}"
            msg = f"text/csv: unsupported parameter {bad} (header=present|absent, charset=utf-8)"
            raise RequestError(msg[:300], loc=("header", "content-type"), status=415)
        flag = None if header is None else header == "present"
        return await asyncio.to_thread(parse_csv, body, spec, max_inputs=settings.max_inputs, header=flag)
    if ctype not in ("application/json", ""):
        kinds = "application/json, application/x-npy, " + (
            "text/csv" if spec.modality == "tabular" else "multipart/form-data"
        )
        raise RequestError(
            f"unsupported content type {ctype!r}: send {kinds}"[:300], loc=("header", "content-type"), status=415
        )
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise RequestError(f"body is not valid JSON: {exc}"[:300], kind="json_invalid") from None
    return parse_json(obj, spec, max_inputs=settings.max_inputs)


def _content_type(header: str) -> tuple[str, dict[str, str]]:
    """("type/subtype", {parameter: value}) of a Content-Type header, lower-cased, quotes removed."""
    kind, *rest = header.split(";")
    params = {}
    for part in rest:
        key, _, value = part.partition("=")
        params[key.strip().lower()] = value.strip().strip('"').lower()
    return kind.strip().lower(), params


def _add_docs(app: FastAPI) -> None:
    """Swagger UI at /docs and ReDoc at /redoc, their assets served from DOCS_ASSETS (works offline)."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=DOCS_ASSET_DIR), name="docs-assets")
    title = app.title
    redirect = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{title} - Swagger UI",
            oauth2_redirect_url=f"{root}{redirect}",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
        )

    @app.get(redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )


def create_app(bundle: Bundle, settings: ServiceSettings | None = None) -> ASGIApp:
    """The ASGI application serving ``bundle`` (hand it to uvicorn, or to FastAPI's TestClient)."""
    settings = settings or ServiceSettings()
    service = _Service(bundle, settings)
    app = FastAPI(
        title="bastion inference service",
        version=str(bundle.manifest.get("version")),
        lifespan=service.lifespan,
        responses={422: {"model": ErrorResponse}},
        docs_url=None,
        redoc_url=None,
    )
    _add_docs(app)
    predict_extra, request_schemas = predict_openapi(bundle.spec, settings.max_inputs)
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """FastAPI's schema plus the request models built from the bundle's spec (referenced by /v1/predict)."""
        if app.openapi_schema is None:
            schema = default_openapi()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(request_schemas)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]
    authorized = [Depends(service.require_token)]

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _error(exc.status, exc.detail(), headers)

    @app.exception_handler(BastionError)
    async def _bastion_error(_: Request, exc: BastionError) -> JSONResponse:
        return _error(422, [{"loc": ["body"], "msg": str(exc)[:500], "type": "value_error"}])

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ready = service.ready and service.batcher.running
        return JSONResponse({"status": "ready" if ready else "starting"}, status_code=200 if ready else 503)

    @app.get("/v1/model", dependencies=authorized)
    async def model() -> dict[str, Any]:
        return service.model_info

    @app.get("/metrics", dependencies=authorized)
    async def prometheus() -> Response:
        service.metrics.queue_depth.set(service.batcher.depth)
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post(
        "/v1/predict",
        response_model=PredictResponse,
        dependencies=authorized,
        openapi_extra=predict_extra,
        responses={413: {"model": ErrorResponse}, 503: {"model": ErrorResponse}, 504: {"model": ErrorResponse}},
    )
    async def predict(request: Request) -> JSONResponse:
        return await service.predict(request)

    return _Guard(app, settings.max_body_bytes, service.metrics)


async def _audit(audit: AuditLog, request_id: str, x: torch.Tensor, outputs: list[dict[str, Any]]) -> None:
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    records = [
        {
            "time": now,
            "request_id": request_id,
            "index": i,
            "decision": out["decision"],
            "label": int(torch.tensor(out["probabilities"]).argmax()),
            "anomaly_score": out["anomaly_score"],
            "input": x[i].tolist(),
        }
        for i, out in enumerate(outputs)
        if out["decision"] != "accept"
    ]
    if records:
        await asyncio.to_thread(audit.write, records)


def serve(
    bundle: Bundle, settings: ServiceSettings, *, host: str = "127.0.0.1", port: int = 8000, threads: int | None = 1
) -> None:
    """Run the service with uvicorn until interrupted (one process; the model call is batched).

    ``threads`` sets torch's intra-op threads for the process (None: torch's default, one per core).
    One thread is the default: the micro-batched calls are small, and on a loaded machine several
    OpenMP threads per call were measured 20-60x slower than one (bench/serve.py, docs/deploy.md).
    """
    import uvicorn

    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)

    check_port(port)
    if host not in ("127.0.0.1", "localhost", "::1") and settings.token is None:
        log.warning("serving on %s without a bearer token: anyone who can reach the port can query the model", host)
    uvicorn.run(
        create_app(bundle, settings),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        http=header_timeout_protocol(settings.header_timeout_s),
        limit_concurrency=settings.max_connections,
        h11_max_incomplete_event_size=64 << 10,  # request line + headers (h11; httptools has its own)
    )


def check_port(port: int) -> int:
    """A TCP port 0..65535 (0: any free port), else ConfigError before anything binds or prints."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"--port must be an integer in 0..65535, got {port!r}")
    return port


def header_timeout_protocol(timeout_s: float) -> type[Any]:
    """uvicorn's HTTP protocol (httptools if installed, else h11: what uvicorn picks itself), closing
    connections whose request headers do not arrive within ``timeout_s``.

    uvicorn times out idle keep-alive connections but not a client trickling a request line and headers
    (slowloris). A timer checks every ``timeout_s`` whether a new request started since the last check while
    none is in flight; if not, the connection is closed. Bodies are bounded separately (408, see
    ``parse_request``).
    """
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    if not timeout_s > 0:
        raise ConfigError(f"header timeout must be > 0, got {timeout_s}")

    base: Any = AutoHTTPProtocol  # both implementations create ``cycle`` once a request's headers are complete

    class HeaderTimeoutProtocol(base):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._seen_cycle: Any = None
            self._header_timer: asyncio.TimerHandle | None = self.loop.call_later(timeout_s, self._check_headers)

        def _check_headers(self) -> None:
            cycle = self.cycle
            waiting = cycle is None or cycle.response_complete
            if waiting and cycle is self._seen_cycle:
                self._header_timer = None
                self.transport.close()
                return
            self._seen_cycle = cycle
            self._header_timer = self.loop.call_later(timeout_s, self._check_headers)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
            super().connection_lost(exc)

    return HeaderTimeoutProtocol
