//! The error a function returns for one record.

use std::fmt;

use crate::cache::CacheError;

/// `Result` with the SDK's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why one input record failed.
///
/// The message is for operators: it ends up in dead-letter headers and the runtime's log, so
/// say which record and which field (the [`Record`](crate::Record) getters already name the
/// offset). A **retryable** error means trying the same record again may succeed (the cache is
/// down): the runtime retries it with backoff before applying the pipeline's failure policy. A
/// **fatal** one means the input itself is bad: the failure policy applies at once.
///
/// Conversions make `?` do the right thing: a [`CacheError`] is retryable exactly when it is
/// [`CacheError::Unavailable`]; JSON and UTF-8 errors are fatal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
    retryable: bool,
}

impl Error {
    /// An error that retrying will not fix (bad input).
    pub fn fatal(message: impl Into<String>) -> Self {
        Error { message: message.into(), retryable: false }
    }

    /// An error that retrying the same record may fix (an outage, a timeout).
    pub fn retryable(message: impl Into<String>) -> Self {
        Error { message: message.into(), retryable: true }
    }

    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// `true` when the runtime should retry the record.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The message and retryability, moved out.
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn into_parts(self) -> (String, bool) {
        (self.message, self.retryable)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<CacheError> for Error {
    fn from(e: CacheError) -> Self {
        Error { retryable: e.is_unavailable(), message: e.to_string() }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::fatal(format!("JSON error: {e}"))
    }
}

impl From<std::str::Utf8Error> for Error {
    fn from(e: std::str::Utf8Error) -> Self {
        Error::fatal(format!("invalid UTF-8: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unavailable_cache_is_retryable() {
        let e = Error::from(CacheError::Unavailable("down".into()));
        assert!(e.is_retryable());
        assert_eq!(e.message(), "cache unavailable: down");
        assert!(!Error::from(CacheError::NotANumber("x".into())).is_retryable());
        assert!(!Error::from(CacheError::Other("x".into())).is_retryable());
    }

    #[test]
    fn json_and_utf8_errors_are_fatal() {
        let json = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        assert!(!Error::from(json).is_retryable());
        let bytes = std::hint::black_box(vec![0xffu8]);
        let utf8 = std::str::from_utf8(&bytes).unwrap_err();
        let e = Error::from(utf8);
        assert!(!e.is_retryable());
        assert!(e.to_string().starts_with("invalid UTF-8"));
    }

    #[test]
    fn constructors_and_display() {
        assert_eq!(Error::fatal("bad").to_string(), "bad");
        assert!(Error::retryable("later").is_retryable());
        assert!(!Error::fatal("bad").is_retryable());
    }
}
