//! The admin HTTP API: modules, pipelines, hot reload and rollback, metrics and probes.
//!
//! This module owns the HTTP surface only: routes, authentication ([`auth`]), how errors
//! become responses ([`error`]) and the Prometheus exposition ([`metrics`]). Every operation
//! is the [`PipelineManager`]'s; this module must not touch the disk, the engine or Kafka
//! itself. It builds an axum [`Router`] and serves it on a listener the caller binds (after
//! [`check_listen_address`]). The OpenAPI document, served at `/v1/openapi.json`, lists every
//! call with its bodies and errors.
//!
//! | call | role | answer |
//! |---|---|---|
//! | `POST /v1/modules` (raw module bytes) | admin | `201` stored, `200` already stored: a [`ModuleInfo`] |
//! | `GET /v1/modules` | read | `200` `{"modules": [ModuleInfo, ...]}` sorted by digest |
//! | `GET /v1/modules/{digest}` | read | `200` a [`ModuleInfo`] with `used_by` |
//! | `DELETE /v1/modules/{digest}` | admin | `204`; `409` while a pipeline uses or keeps it |
//! | `GET /v1/pipelines` | read | `200` `{"pipelines": [PipelineSummary, ...]}` |
//! | `PUT /v1/pipelines/{name}` (JSON spec) | admin | `201` created, `200` reloaded, updated or unchanged |
//! | `POST /v1/deploy` (multipart: `spec`, `module`) | admin | the same, with the stored module |
//! | `GET /v1/pipelines/{name}` | read | `200` a [`PipelineReport`] |
//! | `DELETE /v1/pipelines/{name}` | admin | `204` |
//! | `POST /v1/pipelines/{name}/reload` (module bytes, or `{"module": digest}`) | admin | `200` |
//! | `POST /v1/pipelines/{name}/rollback` (`{}` or `{"revision": n}`) | admin | `200` |
//! | `POST /v1/pipelines/{name}/pause`, `.../resume` | admin | `200` |
//! | `POST /v1/pipelines/{name}/offsets` (`{"reset": "earliest"}`, ...) | admin | `200`; `409` unless paused |
//! | `GET /metrics` | read | Prometheus text |
//! | `GET /v1/openapi.json` | none | the OpenAPI document |
//! | `GET /healthz`, `GET /readyz` | none | `200` / `503` |
//!
//! Limits: a module body may be at most the engine's
//! [`Limits::max_module_bytes`](sluice_engine::Limits::max_module_bytes) (default 32 MiB), a
//! JSON body at most [`MAX_JSON_BODY_BYTES`]; a call may take at most
//! [`AdminConfig::request_timeout`]; a reload by digest is a JSON body. Before a call, a
//! connection must send its request head within [`ConnectionLimits::header_read_timeout`], and
//! at most [`ConnectionLimits::max_connections`] are open at once ([`serve`], the one serving
//! function of `sluice serve` and `sluice dev`). Errors are JSON, `{"error": {"code": "...", "message":
//! "..."}}`; [`ApiError::status_and_code`] lists the codes.

pub mod auth;
pub mod error;
pub mod listener;
pub mod metrics;

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{DefaultBodyLimit, Multipart, Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

pub use auth::{AdminConfig, REQUEST_TIMEOUT, check_listen_address};
pub use error::ApiError;
pub use listener::{ConnectionLimits, serve};

use auth::{CanAdminister, CanRead};
use sluice_pipeline::manager::{Applied, ManagerError, ModuleChange, PipelineManager, PipelineReport, PipelineSummary};
use sluice_pipeline::registry::{self, ModuleInfo};
use sluice_pipeline::spec::{PipelineSpec, StartPosition};

/// The most bytes of a JSON request body (a pipeline spec with its settings).
pub const MAX_JSON_BODY_BYTES: usize = 1024 * 1024;

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AdminState {
    manager: PipelineManager,
    config: std::sync::Arc<AdminConfig>,
    upload_limit: usize,
}

/// The admin API over `manager`, guarded by the tokens of `config`.
pub fn router(manager: PipelineManager, config: AdminConfig) -> Router {
    let upload_limit = manager.engine().limits().max_module_bytes;
    let timeout = config.request_timeout;
    let state = AdminState { manager, config: std::sync::Arc::new(config), upload_limit };
    let module_body = DefaultBodyLimit::max(upload_limit);
    // A deploy carries a module and a spec.
    let deploy_body = DefaultBodyLimit::max(upload_limit + MAX_JSON_BODY_BYTES);
    Router::new()
        .route("/v1/modules", get(list_modules).post(upload_module).layer(module_body))
        .route("/v1/modules/{digest}", get(module_info).delete(delete_module))
        .route("/v1/pipelines", get(list_pipelines))
        .route("/v1/pipelines/{name}", get(get_pipeline).put(put_pipeline).delete(delete_pipeline))
        .route("/v1/pipelines/{name}/reload", post(reload_pipeline).layer(module_body))
        .route("/v1/pipelines/{name}/rollback", post(rollback_pipeline))
        .route("/v1/pipelines/{name}/pause", post(pause_pipeline))
        .route("/v1/pipelines/{name}/resume", post(resume_pipeline))
        .route("/v1/pipelines/{name}/offsets", post(reset_offsets))
        .route("/v1/deploy", post(deploy).layer(deploy_body))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY_BYTES))
        .layer(middleware::from_fn(move |request: Request, next: Next| time_limit(timeout, request, next)))
        .with_state(state)
}

/// Answers `408` when a call (reading its body included) takes longer than `limit`.
async fn time_limit(limit: Duration, request: Request, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(%method, %path, "admin API call timed out after {limit:?}");
            ApiError::RequestTimeout { limit }.into_response()
        }
    }
}

/// Runs a change on its own task, so that it completes (and the runtime stays consistent)
/// even when the call is cut short by the request time limit or the client going away.
async fn detached<T: Send + 'static>(
    change: impl std::future::Future<Output = Result<T, ManagerError>> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::spawn(change).await {
        Ok(result) => Ok(result?),
        Err(e) => Err(ApiError::Registry(registry::RegistryError::Task { digest: "*".into(), reason: e.to_string() })),
    }
}

/// The body of `GET /v1/modules`.
#[derive(Debug, Serialize)]
struct ModuleList {
    modules: Vec<ModuleInfo>,
}

/// A module's metadata and the pipelines that use it.
#[derive(Debug, Serialize)]
struct ModuleDetail {
    #[serde(flatten)]
    info: ModuleInfo,
    used_by: Vec<String>,
}

/// The body of `GET /v1/pipelines`.
#[derive(Debug, Serialize)]
struct PipelineList {
    pipelines: Vec<PipelineSummary>,
}

/// The answer to a create, update or deploy.
#[derive(Debug, Serialize)]
struct ApplyResult {
    result: Applied,
    pipeline: PipelineSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    module: Option<ModuleInfo>,
}

/// The body of a reload given by digest.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReloadRequest {
    module: String,
}

/// The body of a rollback.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    revision: Option<u64>,
}

/// The body of an offset reset.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetRequest {
    reset: StartPosition,
}

/// One committed offset of a reset.
#[derive(Debug, Serialize)]
struct CommittedOffset {
    topic: String,
    partition: i32,
    offset: i64,
}

/// The body of the probes.
#[derive(Debug, Serialize)]
struct Status {
    status: &'static str,
}

fn body_bytes(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge { limit }
        } else {
            ApiError::BadBody(rejection.body_text())
        }
    })
}

/// Whether reading a body failed because it is over the limit it was read with.
fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = error.source();
    }
    false
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    match body {
        Ok(Json(value)) => Ok(value),
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(ApiError::JsonTooLarge { limit: MAX_JSON_BODY_BYTES })
        }
        Err(rejection) => Err(ApiError::BadJson { status: rejection.status(), message: rejection.body_text() }),
    }
}

async fn upload_module(
    _: CanAdminister,
    State(state): State<AdminState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body_bytes(body, state.upload_limit)?;
    let manager = state.manager.clone();
    let stored = detached(async move { manager.store_module(bytes).await }).await?;
    let status = if stored.created { StatusCode::CREATED } else { StatusCode::OK };
    let location = format!("/v1/modules/{}", stored.info.digest);
    Ok((status, [(header::LOCATION, location)], Json(stored.info)).into_response())
}

async fn list_modules(_: CanRead, State(state): State<AdminState>) -> Result<Json<ModuleList>, ApiError> {
    Ok(Json(ModuleList { modules: state.manager.registry().list().await? }))
}

async fn module_info(
    _: CanRead,
    State(state): State<AdminState>,
    Path(digest): Path<String>,
) -> Result<Json<ModuleDetail>, ApiError> {
    match state.manager.registry().info(&digest).await? {
        Some(info) => Ok(Json(ModuleDetail { used_by: state.manager.module_users(&info.digest).await?, info })),
        None => Err(module_not_found(&digest)),
    }
}

async fn delete_module(
    _: CanAdminister,
    State(state): State<AdminState>,
    Path(digest): Path<String>,
) -> Result<StatusCode, ApiError> {
    let manager = state.manager.clone();
    detached(async move { manager.delete_module(&digest).await }).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_pipelines(_: CanRead, State(state): State<AdminState>) -> Json<PipelineList> {
    Json(PipelineList { pipelines: state.manager.list().await })
}

async fn get_pipeline(
    _: CanRead,
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<PipelineReport>, ApiError> {
    Ok(Json(state.manager.get(&name).await?))
}

/// Reads a spec from JSON, taking the pipeline's name from the path when the body has none.
fn spec_for(name: &str, mut value: serde_json::Value) -> Result<PipelineSpec, ApiError> {
    let object = value.as_object_mut().ok_or_else(|| ApiError::BadSpec("the spec must be a JSON object".into()))?;
    match object.get("name") {
        None => {
            object.insert("name".into(), name.into());
        }
        Some(given) if given.as_str() == Some(name) => {}
        Some(given) => {
            return Err(ApiError::BadSpec(format!("the spec names pipeline {given}, but the path names {name:?}")));
        }
    }
    serde_json::from_value(value).map_err(|e| ApiError::BadSpec(format!("pipeline {name:?}: {e}")))
}

async fn applied(
    state: &AdminState,
    name: &str,
    result: Applied,
    module: Option<ModuleInfo>,
) -> Result<Response, ApiError> {
    let pipeline = state.manager.summary(name).await?;
    let status = if result == Applied::Created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(ApplyResult { result, pipeline, module })).into_response())
}

async fn put_pipeline(
    _: CanAdminister,
    State(state): State<AdminState>,
    Path(name): Path<String>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let spec = spec_for(&name, json_body(body)?)?;
    let manager = state.manager.clone();
    let result = detached(async move { manager.apply(spec).await }).await?;
    applied(&state, &name, result, None).await
}

async fn deploy(
    _: CanAdminister,
    State(state): State<AdminState>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, ApiError> {
    let mut multipart = multipart.map_err(|e| ApiError::BadMultipart(e.body_text()))?;
    let (mut spec, mut module) = (None, None);
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::BodyTooLarge { limit: state.upload_limit });
            }
            Err(e) => return Err(ApiError::BadMultipart(e.body_text())),
        };
        let name = field.name().unwrap_or_default().to_string();
        let bytes = field.bytes().await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::BodyTooLarge { limit: state.upload_limit }
            } else {
                ApiError::BadMultipart(e.body_text())
            }
        })?;
        match name.as_str() {
            "spec" => spec = Some(bytes),
            "module" => module = Some(bytes),
            other => {
                return Err(ApiError::BadMultipart(format!("unknown part {other:?}: expected `spec` and `module`")));
            }
        }
    }
    let spec =
        spec.ok_or_else(|| ApiError::BadMultipart("the `spec` part (the pipeline spec as JSON) is missing".into()))?;
    let module = module.ok_or_else(|| ApiError::BadMultipart("the `module` part (the component) is missing".into()))?;
    let value: serde_json::Value =
        serde_json::from_slice(&spec).map_err(|e| ApiError::BadSpec(format!("the `spec` part is not JSON: {e}")))?;
    let name = value.get("name").and_then(|n| n.as_str()).unwrap_or_default().to_string();
    if name.is_empty() {
        return Err(ApiError::BadSpec("the spec has no `name`".into()));
    }
    let mut value = value;
    if let Some(object) = value.as_object_mut() {
        // The module is the uploaded one, whatever the spec names (it need not name one).
        object.insert("module".into(), sluice_engine::ModuleDigest::of(&module).to_string().into());
    }
    let spec = spec_for(&name, value)?;
    let manager = state.manager.clone();
    let (result, info) = detached(async move { manager.deploy(spec, module).await }).await?;
    applied(&state, &name, result, Some(info)).await
}

async fn delete_pipeline(
    _: CanAdminister,
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let manager = state.manager.clone();
    detached(async move { manager.delete(&name).await }).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn reload_pipeline(
    _: CanAdminister,
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ModuleChange>, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    // A digest in JSON is held to the JSON limit, module bytes to the module limit.
    let bytes = match axum::body::to_bytes(body, if is_json { MAX_JSON_BODY_BYTES } else { state.upload_limit }).await {
        Ok(bytes) => bytes,
        Err(e) if is_length_limit(&e) && is_json => return Err(ApiError::JsonTooLarge { limit: MAX_JSON_BODY_BYTES }),
        Err(e) if is_length_limit(&e) => return Err(ApiError::BodyTooLarge { limit: state.upload_limit }),
        Err(e) => return Err(ApiError::BadBody(e.to_string())),
    };
    let digest = if is_json {
        let request: ReloadRequest = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::BadJson { status: StatusCode::BAD_REQUEST, message: e.to_string() })?;
        request.module
    } else {
        // Refuse an unknown pipeline before storing its module.
        state.manager.summary(&name).await?;
        let manager = state.manager.clone();
        detached(async move { manager.store_module(bytes).await }).await?.info.digest
    };
    let manager = state.manager.clone();
    Ok(Json(detached(async move { manager.reload(&name, &digest).await }).await?))
}

async fn rollback_pipeline(
    _: CanAdminister,
    State(state): State<AdminState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ModuleChange>, ApiError> {
    // Over the JSON limit, not a module limit.
    let bytes = body_bytes(body, MAX_JSON_BODY_BYTES).map_err(|e| match e {
        ApiError::BodyTooLarge { limit } => ApiError::JsonTooLarge { limit },
        e => e,
    })?;
    let request: RollbackRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
        RollbackRequest::default()
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::BadJson { status: StatusCode::BAD_REQUEST, message: e.to_string() })?
    };
    let manager = state.manager.clone();
    Ok(Json(detached(async move { manager.rollback(&name, request.revision).await }).await?))
}

async fn pause_pipeline(
    _: CanAdminister,
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<PipelineSummary>, ApiError> {
    let manager = state.manager.clone();
    Ok(Json(detached(async move { manager.pause(&name).await }).await?))
}

async fn resume_pipeline(
    _: CanAdminister,
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<PipelineSummary>, ApiError> {
    let manager = state.manager.clone();
    Ok(Json(detached(async move { manager.resume(&name).await }).await?))
}

async fn reset_offsets(
    _: CanAdminister,
    State(state): State<AdminState>,
    Path(name): Path<String>,
    body: Result<Json<ResetRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let request = json_body(body)?;
    let manager = state.manager.clone();
    let committed = detached(async move { manager.reset_offsets(&name, request.reset).await }).await?;
    let offsets: Vec<CommittedOffset> =
        committed.into_iter().map(|(topic, partition, offset)| CommittedOffset { topic, partition, offset }).collect();
    Ok(Json(serde_json::json!({ "offsets": offsets })))
}

async fn metrics(_: CanRead, State(state): State<AdminState>) -> Response {
    let text = metrics::render(&state.manager).await;
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

async fn readyz(State(state): State<AdminState>) -> Response {
    match state.manager.registry().check().await {
        Ok(()) => Json(Status { status: "ready" }).into_response(),
        Err(e) => {
            tracing::warn!("admin API not ready: {e}");
            (StatusCode::SERVICE_UNAVAILABLE, Json(Status { status: "not_ready" })).into_response()
        }
    }
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NoRoute { method: method.to_string(), path: uri.path().to_string() }
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed { method: method.to_string(), path: uri.path().to_string() }
}

fn module_not_found(digest: &str) -> ApiError {
    // `info` parsed the digest already; name it in its canonical form.
    let digest = registry::canonical_digest(digest).unwrap_or_default();
    ApiError::Registry(registry::RegistryError::NotFound { digest })
}
