//! The admin HTTP API: upload, list, inspect and delete function modules, and health probes.
//!
//! This module owns the HTTP surface only: routes, authentication ([`auth`]), and how errors
//! become responses ([`error`]). Modules are kept by the [`ModuleRegistry`]; this module must
//! not touch the disk or the engine itself. It builds an axum [`Router`]; the caller decides
//! where it listens (after [`check_listen_address`]).
//!
//! | call | role | answer |
//! |---|---|---|
//! | `POST /v1/modules` (raw module bytes) | admin | `201` stored, `200` already stored: a [`ModuleInfo`] |
//! | `GET /v1/modules` | read | `200` `{"modules": [ModuleInfo, ...]}` sorted by digest |
//! | `GET /v1/modules/{digest}` | read | `200` a [`ModuleInfo`] |
//! | `DELETE /v1/modules/{digest}` | admin | `204` |
//! | `GET /healthz` | none | `200` while the process serves |
//! | `GET /readyz` | none | `200` `{"status": "ready"}` when the registry is usable, else `503` |
//!
//! `{digest}` is `sha256:<hex>` or the 64 hex digits alone. An upload may be at most the
//! engine's [`Limits::max_module_bytes`](crate::engine::Limits::max_module_bytes) (default
//! 32 MiB); a larger body is refused with `413` before it is read whole. Errors are JSON,
//! `{"error": {"code": "...", "message": "..."}}`, with these codes: `malformed_digest` (400),
//! `bad_request` (400), `missing_token` / `invalid_token` (401), `forbidden` (403),
//! `module_not_found` / `no_such_endpoint` (404), `method_not_allowed` (405),
//! `module_too_large` (413), `invalid_module` (422), `internal_error` (500).

pub mod auth;
pub mod error;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

pub use auth::{AdminConfig, check_listen_address};
pub use error::ApiError;

use crate::registry::{ModuleInfo, ModuleRegistry};
use auth::{CanAdminister, CanRead};

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AdminState {
    registry: ModuleRegistry,
    config: Arc<AdminConfig>,
    upload_limit: usize,
}

/// The admin API over `registry`, guarded by the tokens of `config`. Uploads are capped at the
/// registry engine's `max_module_bytes`.
pub fn router(registry: ModuleRegistry, config: AdminConfig) -> Router {
    let upload_limit = registry.engine().limits().max_module_bytes;
    let state = AdminState { registry, config: Arc::new(config), upload_limit };
    Router::new()
        .route("/v1/modules", get(list_modules).post(upload_module))
        .route("/v1/modules/{digest}", get(module_info).delete(delete_module))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(upload_limit))
        .with_state(state)
}

/// The body of `GET /v1/modules`.
#[derive(Debug, Serialize)]
struct ModuleList {
    modules: Vec<ModuleInfo>,
}

/// The body of the probes.
#[derive(Debug, Serialize)]
struct Status {
    status: &'static str,
}

async fn upload_module(
    _: CanAdminister,
    State(state): State<AdminState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge { limit: state.upload_limit }
        } else {
            ApiError::BadBody(rejection.body_text())
        }
    })?;
    let stored = state.registry.put(bytes).await?;
    let status = if stored.created { StatusCode::CREATED } else { StatusCode::OK };
    let location = format!("/v1/modules/{}", stored.info.digest);
    Ok((status, [(header::LOCATION, location)], Json(stored.info)).into_response())
}

async fn list_modules(_: CanRead, State(state): State<AdminState>) -> Result<Json<ModuleList>, ApiError> {
    Ok(Json(ModuleList { modules: state.registry.list().await? }))
}

async fn module_info(
    _: CanRead,
    State(state): State<AdminState>,
    Path(digest): Path<String>,
) -> Result<Json<ModuleInfo>, ApiError> {
    match state.registry.info(&digest).await? {
        Some(info) => Ok(Json(info)),
        None => Err(not_found(&digest)),
    }
}

async fn delete_module(
    _: CanAdminister,
    State(state): State<AdminState>,
    Path(digest): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.registry.delete(&digest).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

async fn readyz(State(state): State<AdminState>) -> Response {
    match state.registry.check().await {
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

fn not_found(digest: &str) -> ApiError {
    // `info` parsed the digest already; name it in its canonical form.
    let digest = crate::registry::parse_digest(digest).map(|hex| format!("sha256:{hex}")).unwrap_or_default();
    ApiError::Registry(crate::registry::RegistryError::NotFound { digest })
}
