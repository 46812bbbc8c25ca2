//! The one error type of the admin API and how it turns into an HTTP response.
//!
//! Every error body has the same shape, `{"error": {"code": "...", "message": "..."}}`, where
//! `code` is a stable snake_case name clients may match on and `message` is for people. User
//! mistakes get a 4xx status and a precise message; internal failures get a 500 with a generic
//! message, and their details go to the log (one line).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::engine::ModuleError;
use crate::registry::RegistryError;

/// Why an admin API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A registry call failed; the status depends on why.
    #[error(transparent)]
    Registry(#[from] RegistryError),
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

/// The JSON body of every error response.
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Debug, Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: String,
}

/// The message of every 500 response; the details are in the log.
const INTERNAL_MESSAGE: &str = "internal error in the Sluice runtime; the details are in its log";

impl ApiError {
    /// The HTTP status and the stable code of this error.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Registry(error) => match error {
                RegistryError::MalformedDigest { .. } => (StatusCode::BAD_REQUEST, "malformed_digest"),
                RegistryError::NotFound { .. } => (StatusCode::NOT_FOUND, "module_not_found"),
                RegistryError::Refused { source: ModuleError::TooLarge { .. }, .. } => {
                    (StatusCode::PAYLOAD_TOO_LARGE, "module_too_large")
                }
                RegistryError::Refused { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_module"),
                RegistryError::Storage { .. } | RegistryError::Corrupt { .. } | RegistryError::Task { .. } => {
                    (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
                }
            },
            ApiError::MissingToken => (StatusCode::UNAUTHORIZED, "missing_token"),
            ApiError::InvalidToken => (StatusCode::UNAUTHORIZED, "invalid_token"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "module_too_large"),
            ApiError::BadBody(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::NoRoute { .. } => (StatusCode::NOT_FOUND, "no_such_endpoint"),
            ApiError::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = if status.is_server_error() {
            tracing::error!(code, "admin API call failed: {self}");
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
    fn a_module_over_the_size_limit_is_413_whichever_check_caught_it() {
        let refused = ApiError::Registry(RegistryError::Refused {
            digest: "sha256:abc".into(),
            source: ModuleError::TooLarge { size: 2, limit: 1 },
        });
        assert_eq!(refused.status_and_code().0, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(ApiError::BodyTooLarge { limit: 1 }.status_and_code().0, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
