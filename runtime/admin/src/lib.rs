//! The admin HTTP API: modules, pipelines, hot reload and rollback, metrics and probes.
//!
//! This module owns the HTTP surface only: routes, authentication ([`auth`]), how errors
//! become responses ([`error`]) and the Prometheus exposition ([`metrics`]). Every operation
//! is the [`PipelineManager`]'s; this module must not touch the disk, the engine or Kafka
//! itself. It builds an axum [`Router`] and serves it on a listener the caller binds (after
//! [`check_listen_address`]). The OpenAPI document, served at `/v1/openapi.json`, lists every
//! call with its bodies and errors; it is generated from the handlers' annotations and the types
//! of their bodies ([`openapi`]), and the router registers each handler at the path and method
//! of its annotation.
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
//! | `GET /v1/pipelines/{name}/logs` (`?since=5m&level=warn&limit=N&follow=true`) | read | `200` a [`LogList`] of this node's function log, or with `follow` NDJSON entries as they come |
//! | `GET /v1/cluster` | read | `200` a [`ClusterView`]: this node and the nodes of its cluster |
//! | `GET /metrics` | read | Prometheus text |
//! | `GET /v1/openapi.json` | none | the OpenAPI document |
//! | `GET /healthz`, `GET /readyz` | none | `200` / `503` |
//! | `GET /ui` (`/` redirects there) | none | the web console ([`console`]), which calls the API with the token signed in with |
//!
//! Limits: a module body may be at most the engine's
//! [`Limits::max_module_bytes`](sluice_engine::Limits::max_module_bytes) (default 32 MiB), a
//! JSON body at most [`MAX_JSON_BODY_BYTES`]; a call may take at most
//! [`AdminConfig::request_timeout`]; a reload by digest is a JSON body. Before a call, a
//! connection must send its request head within [`ConnectionLimits::header_read_timeout`], and
//! at most [`ConnectionLimits::max_connections`] are open at once ([`serve`], the one serving
//! function of `sluice serve` and `sluice dev`). Errors are JSON, `{"error": {"code": "...", "message":
//! "..."}}`; [`ApiError::status_and_code`] lists the codes.
//!
//! The bodies of requests and answers are types of `sluice-api` (and of `sluice-pipeline`,
//! re-exported there), which the client deserialises: a change of a body is a change of
//! that crate.

pub mod auth;
pub mod console;
pub mod error;
pub mod listener;
pub mod metrics;
pub mod openapi;

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{DefaultBodyLimit, Extension, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

use utoipa::OpenApi as _;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt as _};
use utoipa_axum::routes;

pub use auth::{AdminConfig, REQUEST_TIMEOUT, check_listen_address};
pub use error::ApiError;
pub use listener::{ConnectionLimits, ServerStop, serve};

use auth::{CanAdminister, CanRead};
use openapi::{
    BadRequest, Conflict, DeployForm, DigestParam, InternalError, JsonTooLarge, KafkaError, ModuleBytes,
    ModuleNotFound, ModuleTooLarge, NameParam, PipelineNotFound, StopTimeout, UnsupportedMediaType,
};
use sluice_api::{
    ApplyResult, ClusterView, CommittedOffset, ErrorBody, LogEntry, LogList, LogsQuery, ModuleDetail, ModuleList,
    OffsetList, PipelineList, ProbeStatus, ReloadRequest, ResetRequest, RollbackRequest, Status,
};
use sluice_pipeline::cluster::status::NodeStatus;
use sluice_pipeline::function_log::{self, LogQuery};
use sluice_pipeline::manager::{Applied, ManagerError, ModuleChange, PipelineManager, PipelineReport, PipelineSummary};
use sluice_pipeline::registry::{self, ModuleInfo};
use sluice_pipeline::spec::PipelineSpec;

/// The most bytes of a JSON request body (a pipeline spec with its settings).
pub const MAX_JSON_BODY_BYTES: usize = 1024 * 1024;

/// The role of the calls that change something, as a scope of their bearer security
/// requirement in the OpenAPI document.
pub const ROLE_ADMIN: &str = "admin";
/// The role of the calls that change nothing.
pub const ROLE_READ: &str = "read";

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AdminState {
    manager: PipelineManager,
    config: std::sync::Arc<AdminConfig>,
    upload_limit: usize,
    /// The OpenAPI document, as served.
    document: std::sync::Arc<str>,
}

/// Every route with its handlers, each registered at the path and methods of its
/// `#[utoipa::path]` annotation, which also puts it in the OpenAPI document. A module upload
/// may be up to `upload_limit` bytes.
fn routes(upload_limit: usize) -> OpenApiRouter<AdminState> {
    let module_body = DefaultBodyLimit::max(upload_limit);
    // A deploy carries a module and a spec.
    let deploy_body = DefaultBodyLimit::max(upload_limit + MAX_JSON_BODY_BYTES);
    OpenApiRouter::with_openapi(openapi::AdminApi::openapi())
        .routes(routes!(list_modules, upload_module).layer(module_body))
        .routes(routes!(module_info, delete_module))
        .routes(routes!(list_pipelines))
        .routes(routes!(get_pipeline, put_pipeline, delete_pipeline))
        .routes(routes!(reload_pipeline).layer(module_body))
        .routes(routes!(rollback_pipeline))
        .routes(routes!(pause_pipeline))
        .routes(routes!(resume_pipeline))
        .routes(routes!(reset_offsets))
        .routes(routes!(pipeline_logs))
        .routes(routes!(deploy).layer(deploy_body))
        .routes(routes!(cluster))
        .routes(routes!(openapi_document))
        .routes(routes!(metrics))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// The OpenAPI document of the admin API, as `GET /v1/openapi.json` serves it.
pub fn openapi() -> serde_json::Value {
    openapi::finish(routes(0).into_openapi())
}

/// The admin API over `manager`, guarded by the tokens of `config`.
pub fn router(manager: PipelineManager, config: AdminConfig) -> Router {
    let upload_limit = manager.engine().limits().max_module_bytes;
    let timeout = config.request_timeout;
    let (router, document) = routes(upload_limit).split_for_parts();
    let document = openapi::finish(document).to_string().into();
    let state = AdminState { manager, config: std::sync::Arc::new(config), upload_limit, document };
    router
        .merge(console::routes())
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

/// Upload a module
///
/// Stores a component in the registry under its SHA-256 digest, after checking that it is a
/// valid component of the `sluice:function/processor` world and compiling it. Uploading a
/// stored module again changes nothing. The body is the raw module bytes; its content type is
/// not checked.
#[utoipa::path(post, path = "/v1/modules", operation_id = "uploadModule", tag = "modules",
    security(("bearerAuth" = ["admin"])),
    request_body(
        description = "The component's bytes, at most the module size limit (`max_module_bytes`, default 32 MiB).",
        content((ModuleBytes = "application/wasm"), (ModuleBytes = "application/octet-stream")),
    ),
    responses(
        (status = 200, description = "Already stored: the module as stored first.", body = ModuleInfo),
        (status = 201, description = "Stored.", body = ModuleInfo,
            headers(("Location" = String, description = "`/v1/modules/{digest}`."))),
        (status = 400, response = BadRequest),
        (status = 413, response = ModuleTooLarge),
        (status = 422, description = "`invalid_module`: not a valid component of the processor world.", body = ErrorBody),
        (status = 500, response = InternalError),
    ),
)]
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

/// List the stored modules
///
/// Every module in the registry, sorted by digest.
#[utoipa::path(get, path = "/v1/modules", operation_id = "listModules", tag = "modules",
    security(("bearerAuth" = ["read"])),
    responses(
        (status = 200, description = "The modules.", body = ModuleList),
        (status = 500, response = InternalError),
    ),
)]
async fn list_modules(_: CanRead, State(state): State<AdminState>) -> Result<Json<ModuleList>, ApiError> {
    Ok(Json(ModuleList { modules: state.manager.registry().list().await? }))
}

/// Describe a module
///
/// A stored module and the pipelines that use it.
#[utoipa::path(get, path = "/v1/modules/{digest}", operation_id = "getModule", tag = "modules",
    params(DigestParam),
    security(("bearerAuth" = ["read"])),
    responses(
        (status = 200, description = "The module.", body = ModuleDetail),
        (status = 400, response = BadRequest),
        (status = 404, response = ModuleNotFound),
        (status = 500, response = InternalError),
    ),
)]
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

/// Delete a module
///
/// Removes a module from the registry, unless a pipeline runs it or keeps it as a version to
/// roll back to (409).
#[utoipa::path(delete, path = "/v1/modules/{digest}", operation_id = "deleteModule", tag = "modules",
    params(DigestParam),
    security(("bearerAuth" = ["admin"])),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, response = BadRequest),
        (status = 404, response = ModuleNotFound),
        (status = 409, response = Conflict),
        (status = 500, response = InternalError),
    ),
)]
async fn delete_module(
    _: CanAdminister,
    State(state): State<AdminState>,
    Path(digest): Path<String>,
) -> Result<StatusCode, ApiError> {
    let manager = state.manager.clone();
    detached(async move { manager.delete_module(&digest).await }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List the pipelines
///
/// Every pipeline of this runtime, briefly, sorted by name.
#[utoipa::path(get, path = "/v1/pipelines", operation_id = "listPipelines", tag = "pipelines",
    security(("bearerAuth" = ["read"])),
    responses((status = 200, description = "The pipelines.", body = PipelineList)),
)]
async fn list_pipelines(_: CanRead, State(state): State<AdminState>) -> Json<PipelineList> {
    Json(PipelineList { pipelines: state.manager.list().await })
}

/// Describe a pipeline
///
/// One pipeline in full: state, kept module versions, spec, counters and partitions, and its
/// consumer group's committed offsets asked of the broker (`offsets_error` says why they are
/// missing when the broker cannot be asked).
#[utoipa::path(get, path = "/v1/pipelines/{name}", operation_id = "getPipeline", tag = "pipelines",
    params(NameParam),
    security(("bearerAuth" = ["read"])),
    responses(
        (status = 200, description = "The pipeline.", body = PipelineReport),
        (status = 404, response = PipelineNotFound),
    ),
)]
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

/// Create or update a pipeline
///
/// Creates the pipeline and starts it (201), or updates it (200): a change of `module` alone is
/// a hot reload between two batches; any other change restarts the pipeline, which resumes from
/// its committed offsets; a paused pipeline stays paused. The module must be in the registry
/// already (see `POST /v1/modules`, or `POST /v1/deploy` for both in one call). The spec's
/// `name` may be left out; when given it must be the path's.
#[utoipa::path(put, path = "/v1/pipelines/{name}", operation_id = "putPipeline", tag = "pipelines",
    params(NameParam),
    security(("bearerAuth" = ["admin"])),
    request_body(content = PipelineSpec, description = "The pipeline spec, at most 1 MiB; its `name` may be left out."),
    responses(
        (status = 200, description = "Updated: `result` is `reloaded`, `updated` or `unchanged`.", body = ApplyResult),
        (status = 201, description = "Created and started: `result` is `created`.", body = ApplyResult),
        (status = 400, description = "`invalid_json` (not JSON).", body = ErrorBody),
        (status = 404, response = ModuleNotFound),
        (status = 413, response = JsonTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, description = "`invalid_spec` (naming the key: a `module` that is not `sha256:<64 hex>`, a `cache` URL that does not parse or hides its user info as `***`, ...; nothing is stored), `invalid_module` (the stored module cannot be loaded) or `pipeline_start_failed` (a missing topic, an unreachable broker or cache).", body = ErrorBody),
        (status = 504, response = StopTimeout),
        (status = 500, response = InternalError),
    ),
)]
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

/// Deploy a module and a pipeline in one call
///
/// Checks the spec, stores the module in the registry, then creates or updates the pipeline
/// `spec.name` to run it, as `PUT /v1/pipelines/{name}` does. A spec that is not valid (422
/// `invalid_spec`) is refused before the module is stored; a module that is not valid (422
/// `invalid_module`) is refused before the pipeline changes. When the pipeline then cannot
/// start, the module stays stored.
#[utoipa::path(post, path = "/v1/deploy", operation_id = "deploy", tag = "pipelines",
    security(("bearerAuth" = ["admin"])),
    request_body(
        content = DeployForm, content_type = "multipart/form-data",
        description = "A form of two parts: `spec` (JSON) and `module` (the component's bytes). The body may be at most the module size limit plus 1 MiB.",
    ),
    responses(
        (status = 200, description = "Updated: `result` is `reloaded`, `updated` or `unchanged`; `module` is the stored module.", body = ApplyResult),
        (status = 201, description = "Created and started: `result` is `created`; `module` is the stored module.", body = ApplyResult),
        (status = 400, description = "`invalid_multipart`: not a multipart form, a missing `spec` or `module` part, or another part.", body = ErrorBody),
        (status = 413, response = ModuleTooLarge),
        (status = 422, description = "`invalid_spec`, `invalid_module` or `pipeline_start_failed`.", body = ErrorBody),
        (status = 504, response = StopTimeout),
        (status = 500, response = InternalError),
    ),
)]
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

/// Delete a pipeline
///
/// Stops the pipeline, committing what it processed, and forgets it. Its consumer group and
/// committed offsets stay on the cluster: a pipeline created again with the same name resumes
/// from them. Its modules stay in the registry.
#[utoipa::path(delete, path = "/v1/pipelines/{name}", operation_id = "deletePipeline", tag = "pipelines",
    params(NameParam),
    security(("bearerAuth" = ["admin"])),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, response = PipelineNotFound),
        (status = 504, response = StopTimeout),
        (status = 500, response = InternalError),
    ),
)]
async fn delete_pipeline(
    _: CanAdminister,
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let manager = state.manager.clone();
    detached(async move { manager.delete(&name).await }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Switch a pipeline to another module
///
/// Hot reload: the new module is loaded and checked first, then each partition switches to it
/// between two batches, without stopping the pipeline (a paused pipeline runs it when resumed).
/// The body is either the module's bytes (any content type but JSON: the module is stored in
/// the registry first, after checking that the pipeline exists) or `{"module": digest}` as
/// `application/json` for a module already stored. A change of module is a new revision.
#[utoipa::path(post, path = "/v1/pipelines/{name}/reload", operation_id = "reloadPipeline", tag = "pipelines",
    params(NameParam),
    security(("bearerAuth" = ["admin"])),
    request_body(
        description = "The new module's bytes (at most the module size limit), or its digest as JSON (at most the 1 MiB JSON limit).",
        content((ModuleBytes = "application/wasm"), (ModuleBytes = "application/octet-stream"), (ReloadRequest = "application/json")),
    ),
    responses(
        (status = 200, description = "Switched, or `unchanged` when the module named is the one running.", body = ModuleChange),
        (status = 400, description = "`invalid_json`, `malformed_digest` or `bad_request`.", body = ErrorBody),
        (status = 404, description = "`pipeline_not_found` or `module_not_found`.", body = ErrorBody),
        (status = 413, description = "`module_too_large`: module bytes over the module size limit; `body_too_large`: a JSON body over the 1 MiB limit.", body = ErrorBody),
        (status = 422, description = "`invalid_module`: not a valid component of the processor world.", body = ErrorBody),
        (status = 500, response = InternalError),
    ),
)]
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

/// Go back to a kept module version
///
/// Switches the pipeline, as a hot reload, to the newest kept version before the current one
/// that runs another module, or to `revision`. The rollback is itself a new revision, so a
/// second rollback undoes the first. An empty body is `{}`.
#[utoipa::path(post, path = "/v1/pipelines/{name}/rollback", operation_id = "rollbackPipeline", tag = "pipelines",
    params(NameParam),
    security(("bearerAuth" = ["admin"])),
    request_body(content = Option<RollbackRequest>, description = "Which version to go back to; may be empty."),
    responses(
        (status = 200, description = "Rolled back.", body = ModuleChange),
        (status = 400, description = "`invalid_json`: the body is not `{}` or `{\"revision\": n}`.", body = ErrorBody),
        (status = 404, response = PipelineNotFound),
        (status = 409, response = Conflict),
        (status = 413, response = JsonTooLarge),
        (status = 422, description = "`invalid_module`: the kept module cannot be loaded.", body = ErrorBody),
        (status = 500, response = InternalError),
    ),
)]
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

/// Pause a pipeline
///
/// Stops the pipeline, committing what it processed. It stays paused across runtime restarts
/// until resumed. Pausing a paused pipeline changes nothing.
#[utoipa::path(post, path = "/v1/pipelines/{name}/pause", operation_id = "pausePipeline", tag = "pipelines",
    params(NameParam),
    security(("bearerAuth" = ["admin"])),
    responses(
        (status = 200, description = "Paused.", body = PipelineSummary),
        (status = 404, response = PipelineNotFound),
        (status = 504, response = StopTimeout),
        (status = 500, response = InternalError),
    ),
)]
async fn pause_pipeline(
    _: CanAdminister,
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<PipelineSummary>, ApiError> {
    let manager = state.manager.clone();
    Ok(Json(detached(async move { manager.pause(&name).await }).await?))
}

/// Resume a pipeline
///
/// Starts a paused (or failed) pipeline again, from its committed offsets. On a running
/// pipeline, its blocked partitions (the `block` policy) try their failed record again;
/// nothing else changes.
#[utoipa::path(post, path = "/v1/pipelines/{name}/resume", operation_id = "resumePipeline", tag = "pipelines",
    params(NameParam),
    security(("bearerAuth" = ["admin"])),
    responses(
        (status = 200, description = "Running.", body = PipelineSummary),
        (status = 404, description = "`pipeline_not_found`, or `module_not_found` (its module was removed).", body = ErrorBody),
        (status = 422, description = "`pipeline_start_failed` or `invalid_module`.", body = ErrorBody),
        (status = 500, response = InternalError),
    ),
)]
async fn resume_pipeline(
    _: CanAdminister,
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<PipelineSummary>, ApiError> {
    let manager = state.manager.clone();
    Ok(Json(detached(async move { manager.resume(&name).await }).await?))
}

/// Reset a paused pipeline's offsets
///
/// Commits new offsets for the pipeline's consumer group on every partition of its inputs: each
/// partition's first record (`earliest`), its end (`latest`), the first record at or after a
/// time (`timestamp`; the end when there is none), or explicit offsets. The pipeline resumes
/// from them. It must be paused (409 otherwise).
#[utoipa::path(post, path = "/v1/pipelines/{name}/offsets", operation_id = "resetOffsets", tag = "pipelines",
    params(NameParam),
    security(("bearerAuth" = ["admin"])),
    request_body(content = ResetRequest, description = "Where to start: `{\"reset\": \"earliest\"}`, `\"latest\"`, `{\"timestamp\": ms}` or `{\"offsets\": {topic: {partition: offset}}}`."),
    responses(
        (status = 200, description = "The offsets committed.", body = OffsetList),
        (status = 400, description = "`invalid_json`: not JSON.", body = ErrorBody),
        (status = 404, response = PipelineNotFound),
        (status = 409, response = Conflict),
        (status = 413, response = JsonTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, description = "`invalid_json`: not a reset request; `invalid_spec`: a timestamp, partition or offset out of its range (all are 0 or more).", body = ErrorBody),
        (status = 500, response = InternalError),
        (status = 502, response = KafkaError),
    ),
)]
async fn reset_offsets(
    _: CanAdminister,
    State(state): State<AdminState>,
    Path(name): Path<String>,
    body: Result<Json<ResetRequest>, JsonRejection>,
) -> Result<Json<OffsetList>, ApiError> {
    let request = json_body(body)?;
    let manager = state.manager.clone();
    let committed = detached(async move { manager.reset_offsets(&name, request.reset).await }).await?;
    let offsets: Vec<CommittedOffset> =
        committed.into_iter().map(|(topic, partition, offset)| CommittedOffset { topic, partition, offset }).collect();
    Ok(Json(OffsetList { offsets }))
}

/// How long a followed log may go without a line: then an empty line is sent, which a
/// client skips, so that a client gone away is noticed and its connection closed.
pub const FOLLOW_KEEPALIVE: Duration = Duration::from_secs(15);

/// Read a pipeline's function log
///
/// What the pipeline's function said (its `log` calls, stdout and stderr, line by line) and
/// why its records failed (dead-lettered, skipped or blocking, with the trap or limit behind
/// it), oldest first, as kept in memory by the node that answers: in a cluster each node
/// keeps the entries of the partitions it processed, so ask each node. The log keeps the
/// latest 1,000 entries per pipeline and node (`dropped` counts the older ones it let go).
/// With `follow=true` the answer is NDJSON (`application/x-ndjson`): one entry per line, the
/// kept entries that match and then every new one as it comes, with an empty line after 15 s
/// of silence, until the client goes away, the pipeline is deleted or the runtime stops. A
/// follower that falls more than 1,024 entries behind never holds the pipeline back: it
/// misses entries, and is sent an entry with `seq` 0 and source `runtime` saying how many.
#[utoipa::path(get, path = "/v1/pipelines/{name}/logs", operation_id = "getPipelineLogs", tag = "pipelines",
    params(NameParam, LogsQuery),
    security(("bearerAuth" = ["read"])),
    responses(
        (status = 200, description = "The entries; with `follow=true`, one entry per line as they come.",
            content((LogList = "application/json"), (LogEntry = "application/x-ndjson"))),
        (status = 400, response = BadRequest),
        (status = 404, response = PipelineNotFound),
    ),
)]
async fn pipeline_logs(
    _: CanRead,
    State(state): State<AdminState>,
    Path(name): Path<String>,
    query: Result<Query<LogsQuery>, QueryRejection>,
    stop: Option<Extension<ServerStop>>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::BadQuery(rejection.body_text()))?;
    let log = state.manager.function_log(&name)?;
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_millis() as i64);
    let filter = LogQuery {
        since_ms: query
            .since
            .as_deref()
            .map(|since| function_log::parse_since(since, now_ms))
            .transpose()
            .map_err(bad_param("since"))?,
        min_level: query.level.as_deref().map(str::parse).transpose().map_err(bad_param("level"))?,
        limit: query.limit,
    };
    if query.follow != Some(true) {
        let read = log.read(&filter);
        let node = state.manager.node_id().to_string();
        return Ok(Json(LogList { node, entries: read.entries, dropped: read.dropped, capacity: read.capacity })
            .into_response());
    }
    let follower = log.follow(&filter);
    // The stream holds the follower only, so it ends when the pipeline (and its log) is gone.
    drop(log);
    let stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> = match stop {
        Some(Extension(stop)) => Box::pin(stop.stopped()),
        None => Box::pin(std::future::pending()),
    };
    let lines = futures_util::stream::unfold((follower, stop), |(mut follower, mut stop)| async move {
        let line = tokio::select! {
            entry = follower.next() => {
                let mut line = serde_json::to_vec(&entry?).expect("a log entry is JSON");
                line.push(b'\n');
                line
            }
            () = tokio::time::sleep(FOLLOW_KEEPALIVE) => b"\n".to_vec(),
            () = &mut stop => return None,
        };
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(line)), (follower, stop)))
    });
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(lines)).into_response())
}

/// A query parameter's error, naming it.
fn bad_param(name: &'static str) -> impl Fn(String) -> ApiError {
    move |reason| ApiError::BadQuery(format!("{name}: {reason}"))
}

/// The cluster's nodes
///
/// This node's id and the nodes of its cluster as this node sees them, sorted by id: each
/// one's state (`up`; `gone` when no heartbeat came for the gone time; `left` after a clean
/// shutdown), the seconds since its last heartbeat, and that heartbeat (its pipelines with
/// their revision, module, state, owned partitions and counters). Outside cluster mode,
/// `cluster` is `false` and `nodes` is this node alone, from its own pipelines.
#[utoipa::path(get, path = "/v1/cluster", operation_id = "getCluster", tag = "operations",
    security(("bearerAuth" = ["read"])),
    responses((status = 200, description = "The nodes.", body = ClusterView)),
)]
async fn cluster(_: CanRead, State(state): State<AdminState>) -> Json<ClusterView> {
    let node = state.manager.node_id().to_string();
    let (cluster, nodes) = match state.manager.cluster_nodes() {
        Some(nodes) => (true, nodes),
        None => (false, vec![NodeStatus::local(&node, state.manager.node_pipelines().await)]),
    };
    Json(ClusterView { node, cluster, nodes })
}

/// Prometheus metrics
///
/// The runtime's counters in the Prometheus text format: pipelines (`sluice_pipeline_*`, with a
/// `pipeline` label), their caches (`sluice_cache_*`) and the engine (`sluice_engine_*`).
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operations",
    security(("bearerAuth" = ["read"])),
    responses((status = 200, description = "The metrics.", body = String, content_type = "text/plain; version=0.0.4; charset=utf-8")),
)]
async fn metrics(_: CanRead, State(state): State<AdminState>) -> Response {
    let text = metrics::render(&state.manager).await;
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}

/// This document
///
/// The OpenAPI document of the admin API.
#[utoipa::path(get, path = "/v1/openapi.json", operation_id = "openapi", tag = "operations",
    responses((status = 200, description = "The document.", body = Object)),
)]
async fn openapi_document(State(state): State<AdminState>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], state.document.to_string()).into_response()
}

/// Liveness probe
///
/// Answers while the process serves the API.
#[utoipa::path(get, path = "/healthz", operation_id = "health", tag = "operations",
    responses((status = 200, description = "Alive: `{\"status\": \"ok\"}`.", body = Status)),
)]
async fn healthz() -> Json<Status> {
    Json(Status { status: ProbeStatus::Ok })
}

/// Readiness probe
///
/// Ready when the module registry folder in the data directory can be read.
#[utoipa::path(get, path = "/readyz", operation_id = "ready", tag = "operations",
    responses(
        (status = 200, description = "Ready: `{\"status\": \"ready\"}`.", body = Status),
        (status = 503, description = "Not ready: `{\"status\": \"not_ready\"}`; the reason is in the log.", body = Status),
    ),
)]
async fn readyz(State(state): State<AdminState>) -> Response {
    match state.manager.registry().check().await {
        Ok(()) => Json(Status { status: ProbeStatus::Ready }).into_response(),
        Err(e) => {
            tracing::warn!("admin API not ready: {e}");
            (StatusCode::SERVICE_UNAVAILABLE, Json(Status { status: ProbeStatus::NotReady })).into_response()
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
