//! The one error type of the admin API and how it turns into an HTTP response.
//!
//! Every error body has the same shape, `{"error": {"code": "...", "message": "..."}}`, where
//! `code` is a stable snake_case name clients may match on and `message` is for people. User
//! mistakes get a 4xx status and a precise message; internal failures get a 500 with a generic
//! message, and their details go to the log (one line).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use std::time::Duration;

pub use sluice_api::{ErrorBody, ErrorCode, ErrorDetail};
use sluice_engine::ModuleError;
use sluice_pipeline::manager::ManagerError;
use sluice_pipeline::registry::RegistryError;

/// Why an admin API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A registry call failed; the status depends on why.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A pipeline operation failed; the status depends on why.
    #[error(transparent)]
    Manager(#[from] ManagerError),
    /// A JSON body that cannot be read (syntax, wrong fields, wrong content type).
    #[error("{message}")]
    BadJson {
        /// 400, 415 or 422, as the JSON extractor said.
        status: StatusCode,
        /// What is wrong.
        message: String,
    },
    /// A JSON body over [`super::MAX_JSON_BODY_BYTES`].
    #[error("the JSON body is over the {limit} byte limit")]
    JsonTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A pipeline spec that cannot be read.
    #[error("invalid pipeline spec: {0}")]
    BadSpec(String),
    /// A deploy body that is not the expected multipart form.
    #[error("invalid deploy request: {0}")]
    BadMultipart(String),
    /// The call took longer than [`super::AdminConfig::request_timeout`].
    #[error("the request took longer than the {limit:?} limit (request_timeout)")]
    RequestTimeout {
        /// The limit.
        limit: Duration,
    },
    /// No `Authorization: Bearer <token>` header, and the API requires one.
    #[error("this call needs a bearer token: send `Authorization: Bearer <token>`")]
    MissingToken,
    /// A token was sent but is not one of the configured tokens.
    #[error("the bearer token is not valid")]
    InvalidToken,
    /// A valid token without the role the call needs.
    #[error("{0}")]
    Forbidden(&'static str),
    /// The uploaded body is over the upload limit.
    #[error("the upload is over the {limit} byte limit on modules (max_module_bytes)")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The request body could not be read.
    #[error("cannot read the request body: {0}")]
    BadBody(String),
    /// A query string parameter that cannot be read.
    #[error("invalid query: {0}")]
    BadQuery(String),
    /// No route matches the request.
    #[error("no such endpoint: {method} {path}")]
    NoRoute {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
    },
    /// The route exists but not with this method.
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
    },
}

/// The message of every 500 response; the details are in the log.
const INTERNAL_MESSAGE: &str = "internal error in the Sluice runtime; the details are in its log";

impl ApiError {
    /// The HTTP status and the stable code of this error ([`ErrorCode`] lists the codes).
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        let (status, code) = self.status_and_error_code();
        (status, code.as_str())
    }

    /// The HTTP status and the [`ErrorCode`] of this error.
    pub fn status_and_error_code(&self) -> (StatusCode, ErrorCode) {
        use ErrorCode::*;
        match self {
            ApiError::Manager(error) => match error {
                ManagerError::NotFound { .. } => (StatusCode::NOT_FOUND, PipelineNotFound),
                ManagerError::InvalidSpec(_) => (StatusCode::UNPROCESSABLE_ENTITY, InvalidSpec),
                ManagerError::Conflict(_) => (StatusCode::CONFLICT, Conflict),
                ManagerError::Registry(error) => registry_status(error),
                ManagerError::Start { .. } => (StatusCode::UNPROCESSABLE_ENTITY, PipelineStartFailed),
                ManagerError::Kafka(_) => (StatusCode::BAD_GATEWAY, KafkaError),
                ManagerError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, InternalError),
                ManagerError::StopTimeout { .. } => (StatusCode::GATEWAY_TIMEOUT, StopTimeout),
            },
            ApiError::BadJson { status, .. } => (*status, InvalidJson),
            ApiError::JsonTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, BodyTooLarge),
            ApiError::BadSpec(_) => (StatusCode::UNPROCESSABLE_ENTITY, InvalidSpec),
            ApiError::BadMultipart(_) => (StatusCode::BAD_REQUEST, InvalidMultipart),
            ApiError::RequestTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, RequestTimeout),
            ApiError::Registry(error) => registry_status(error),
            ApiError::MissingToken => (StatusCode::UNAUTHORIZED, MissingToken),
            ApiError::InvalidToken => (StatusCode::UNAUTHORIZED, InvalidToken),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, Forbidden),
            ApiError::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, ModuleTooLarge),
            ApiError::BadBody(_) | ApiError::BadQuery(_) => (StatusCode::BAD_REQUEST, BadRequest),
            ApiError::NoRoute { .. } => (StatusCode::NOT_FOUND, NoSuchEndpoint),
            ApiError::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, MethodNotAllowed),
        }
    }
}

fn registry_status(error: &RegistryError) -> (StatusCode, ErrorCode) {
    use ErrorCode::*;
    match error {
        RegistryError::MalformedDigest { .. } => (StatusCode::BAD_REQUEST, MalformedDigest),
        RegistryError::NotFound { .. } => (StatusCode::NOT_FOUND, ModuleNotFound),
        RegistryError::Refused { source: ModuleError::TooLarge { .. }, .. } => {
            (StatusCode::PAYLOAD_TOO_LARGE, ModuleTooLarge)
        }
        RegistryError::Refused { .. } => (StatusCode::UNPROCESSABLE_ENTITY, InvalidModule),
        RegistryError::Storage { .. } | RegistryError::Corrupt { .. } | RegistryError::Task { .. } => {
            (StatusCode::INTERNAL_SERVER_ERROR, InternalError)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_error_code();
        // Internal failures keep their details in the log; a Kafka error (502) is the
        // cluster's answer and is shown.
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(code = code.as_str(), "admin API call failed: {self}");
            INTERNAL_MESSAGE.to_string()
        } else {
            self.to_string()
        };
        let mut response = (status, Json(ErrorBody { error: ErrorDetail { code, message } })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_errors_keep_their_details_out_of_the_response() {
        let error = ApiError::Registry(RegistryError::Storage {
            digest: "sha256:abc".into(),
            action: "cannot write /private/path".into(),
            source: std::io::Error::other("disk full"),
        });
        assert_eq!(error.status_and_code(), (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"));
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 4096).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "internal_error");
        assert_eq!(body["error"]["message"], INTERNAL_MESSAGE);
    }

    #[test]
    fn every_error_code_is_written_in_bodies_as_its_documented_name() {
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
        let distinct: std::collections::BTreeSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(distinct.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn a_module_over_the_size_limit_is_413_whichever_check_caught_it() {
        let refused = ApiError::Registry(RegistryError::Refused {
            digest: "sha256:abc".into(),
            source: ModuleError::TooLarge { size: 2, limit: 1 },
        });
        assert_eq!(refused.status_and_code().0, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(ApiError::BodyTooLarge { limit: 1 }.status_and_code().0, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
