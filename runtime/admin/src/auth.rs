//! Who may call the admin API: bearer tokens with two roles, and the rule that keeps an open
//! API off the network.
//!
//! A *read* token allows the calls that change nothing (`GET`); the *admin* token allows every
//! call. With no token configured at all the API is open, which is only acceptable on a
//! loopback address: [`check_listen_address`] says so before anything listens.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::AdminState;
use super::error::ApiError;

/// The tokens of the admin API.
///
/// - Both `None`: the API is open (loopback addresses only, see [`check_listen_address`]).
/// - `admin_token` set: mutating calls need it; reads accept it too.
/// - `read_token` set: reads accept it; it never allows a mutating call.
/// - Only `read_token` set: reads need it, and mutating calls are refused to everyone.
#[derive(Clone)]
pub struct AdminConfig {
    /// The token for read-only calls.
    pub read_token: Option<String>,
    /// The token for every call, including uploads and deletes.
    pub admin_token: Option<String>,
    /// The longest a call may take, from its first byte to its answer (a slow upload, a
    /// compile, a pipeline restart). Default [`REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
}

/// The default [`AdminConfig::request_timeout`]: long enough to upload and compile a module
/// of the maximum size on a small machine.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { read_token: None, admin_token: None, request_timeout: REQUEST_TIMEOUT }
    }
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens themselves.
        f.debug_struct("AdminConfig")
            .field("read_token", &self.read_token.as_ref().map(|_| "<set>"))
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl AdminConfig {
    /// `true` when no token is configured, so anyone who can connect may call anything.
    pub fn is_open(&self) -> bool {
        self.read_token.is_none() && self.admin_token.is_none()
    }

    /// The role `token` grants, checking every configured token in constant time.
    fn role_of(&self, token: &str) -> Option<Role> {
        let is = |configured: &Option<String>| {
            configured.as_deref().is_some_and(|expected| constant_time_eq(token.as_bytes(), expected.as_bytes()))
        };
        // Both comparisons always run, so the time taken does not tell which token matched.
        let (admin, read) = (is(&self.admin_token), is(&self.read_token));
        if admin {
            Some(Role::Admin)
        } else if read {
            Some(Role::Read)
        } else {
            None
        }
    }

    /// Refuses empty tokens, which would match an empty `Bearer` header.
    fn check_tokens(&self) -> Result<(), String> {
        for (name, token) in [("read_token", &self.read_token), ("admin_token", &self.admin_token)] {
            if token.as_deref().is_some_and(|t| t.trim().is_empty()) {
                return Err(format!("the admin API {name} is empty; set a real token or none"));
            }
        }
        Ok(())
    }
}

/// Checks that the admin API may listen on `addr` with `config`: tokens must not be empty, and
/// an API without any token may only listen on a loopback address (127.0.0.0/8, `::1`).
pub fn check_listen_address(addr: SocketAddr, config: &AdminConfig) -> Result<(), String> {
    config.check_tokens()?;
    if config.is_open() && !is_loopback(addr.ip()) {
        return Err(format!(
            "refusing to serve the admin API on {addr} without a token: anyone who can reach it could \
             upload and run code; set an admin token (and a read token) or listen on 127.0.0.1"
        ));
    }
    Ok(())
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Read,
    Admin,
}

/// Compares two byte strings in time that depends only on their lengths, not on where they
/// first differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let longest = a.len().max(b.len());
    // Lengths that differ make the result false, but every byte is still visited.
    let mut difference = u8::from(a.len() != b.len());
    for i in 0..longest {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        difference |= x ^ y;
    }
    std::hint::black_box(difference) == 0
}

/// The role the request's bearer token grants, or the error to answer with.
fn authorize(parts: &Parts, config: &AdminConfig, needed: Role) -> Result<(), ApiError> {
    if config.is_open() {
        return Ok(());
    }
    let header = parts.headers.get(header::AUTHORIZATION).ok_or(ApiError::MissingToken)?;
    let token = header.to_str().ok().and_then(bearer_token).ok_or(ApiError::MissingToken)?;
    match (config.role_of(token), needed) {
        (None, _) => Err(ApiError::InvalidToken),
        (Some(Role::Admin), _) | (Some(Role::Read), Role::Read) => Ok(()),
        (Some(Role::Read), Role::Admin) if config.admin_token.is_none() => {
            Err(ApiError::Forbidden("changes are disabled: no admin token is configured"))
        }
        (Some(Role::Read), Role::Admin) => {
            Err(ApiError::Forbidden("this call needs the admin token, not the read token"))
        }
    }
}

/// The token of an `Authorization` header value `Bearer <token>`. The scheme is matched
/// without regard to case (RFC 7235: `bearer`, `BEARER` and `Bearer` are one scheme).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|token| !token.is_empty())
}

/// Extractor: the caller may read (read or admin token, or an open API).
#[derive(Debug)]
pub(crate) struct CanRead;

impl FromRequestParts<AdminState> for CanRead {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, Self::Rejection> {
        authorize(parts, &state.config, Role::Read).map(|()| CanRead)
    }
}

/// Extractor: the caller may change things (admin token, or an open API).
#[derive(Debug)]
pub(crate) struct CanAdminister;

impl FromRequestParts<AdminState> for CanAdminister {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, Self::Rejection> {
        authorize(parts, &state.config, Role::Admin).map(|()| CanAdminister)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(read: Option<&str>, admin: Option<&str>) -> AdminConfig {
        AdminConfig {
            read_token: read.map(str::to_string),
            admin_token: admin.map(str::to_string),
            ..AdminConfig::default()
        }
    }

    #[test]
    fn constant_time_comparison_is_plain_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"token", b"token"));
        assert!(!constant_time_eq(b"token", b"tokem"));
        assert!(!constant_time_eq(b"token", b"token-longer"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(!constant_time_eq(b"a\0", b"a"));
    }

    #[test]
    fn open_api_listens_only_on_loopback() {
        let open = AdminConfig::default();
        for addr in ["127.0.0.1:9000", "127.3.2.1:9000", "[::1]:9000", "[::ffff:127.0.0.1]:9000"] {
            assert_eq!(check_listen_address(addr.parse().unwrap(), &open), Ok(()), "{addr}");
        }
        for addr in ["0.0.0.0:9000", "10.1.2.3:9000", "[::]:9000", "[2001:db8::1]:9000"] {
            let error = check_listen_address(addr.parse().unwrap(), &open).unwrap_err();
            assert!(error.contains("without a token"), "{addr}: {error}");
        }
    }

    #[test]
    fn api_with_a_token_may_listen_anywhere() {
        let addr = "0.0.0.0:9000".parse().unwrap();
        assert_eq!(check_listen_address(addr, &config(None, Some("a-secret"))), Ok(()));
        assert_eq!(check_listen_address(addr, &config(Some("r-secret"), None)), Ok(()));
    }

    #[test]
    fn empty_tokens_are_refused() {
        let addr = "127.0.0.1:9000".parse().unwrap();
        let error = check_listen_address(addr, &config(None, Some(" "))).unwrap_err();
        assert!(error.contains("admin_token is empty"), "{error}");
    }

    #[test]
    fn tokens_grant_their_role() {
        let both = config(Some("r-secret"), Some("a-secret"));
        assert_eq!(both.role_of("a-secret"), Some(Role::Admin));
        assert_eq!(both.role_of("r-secret"), Some(Role::Read));
        assert_eq!(both.role_of("a-secre"), None);
        assert_eq!(both.role_of(""), None);
    }

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case() {
        for value in ["Bearer t0k", "bearer t0k", "BEARER t0k", "bEaReR   t0k  "] {
            assert_eq!(bearer_token(value), Some("t0k"), "{value:?}");
        }
        for value in ["Basic t0k", "Bearer", "Bearer ", "Bearert0k", "t0k"] {
            assert_eq!(bearer_token(value), None, "{value:?}");
        }
    }

    #[test]
    fn debug_output_hides_the_tokens() {
        let shown = format!("{:?}", config(Some("r-secret"), Some("a-secret")));
        assert!(!shown.contains("secret"), "{shown}");
    }
}
