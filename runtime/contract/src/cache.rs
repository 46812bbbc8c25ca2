//! The cache contract: what a key, a value, a TTL, a batch and a counter are, and which error
//! a call that breaks a rule fails with.
//!
//! Every implementation of the cache (the runtime's `Cache` over any backend, the SDK's native
//! stand-in) checks a call with the `check_*` function of that call before doing anything, and
//! reads and writes counters with [`parse_counter`], [`add_to_counter`] and [`format_counter`].
//! The checks run in a fixed order, so a call that breaks two rules fails the same way
//! everywhere:
//!
//! | call | checks, in order |
//! |---|---|
//! | `get`, `delete` | key |
//! | `get-many` | batch size, then each key in order |
//! | `set` | key, value, TTL |
//! | `set-many` | batch size, TTL, then each entry's key and value in order |
//! | `incr` | key, TTL |
//! | `incr-many` | batch size, TTL, then each key in order |
//!
//! A TTL is `None` (no expiry) or 1 to [`limits::MAX_TTL_SECONDS`] whole seconds; 0 is not
//! "no expiry" but an error, so a computed TTL that rounds to nothing is caught. `incr` applies
//! its TTL only when it creates the counter; an existing counter keeps its expiry.

use std::time::Duration;

/// Limits on cache calls. They are the same on every backend, so a function that works on the
/// in-memory cache works unchanged on Memcached or Redis, and the same in the SDK's stand-in.
pub mod limits {
    /// Longest key a function may use, in bytes (before the namespace prefix). Memcached allows
    /// 250 bytes in all; the rest is kept for the namespace.
    pub const MAX_KEY_BYTES: usize = 200;
    /// Longest namespace, in bytes.
    pub const MAX_NAMESPACE_BYTES: usize = 48;
    /// Largest value, in bytes. Memcached's default item size is 1 MiB including its own
    /// overhead; this leaves room for it.
    pub const MAX_VALUE_BYTES: usize = 1_000_000;
    /// Longest TTL, in seconds (30 days). Memcached reads larger TTLs as absolute Unix times.
    pub const MAX_TTL_SECONDS: u32 = 30 * 24 * 60 * 60;
    /// Most keys in one `get-many` or entries in one `set-many` or `incr-many`.
    pub const MAX_BATCH_KEYS: usize = 1_000;
    /// Most bytes the host buffers for one `get-many` answer before handing it to the guest.
    pub const MAX_HOST_BUFFERED_BYTES: usize = 16 * 1024 * 1024;
}

/// Why a cache call failed. The variants match the WIT `cache-error` variant one to one; each
/// carries a message for operators.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// The backend could not be reached or did not answer in time; the call may succeed later.
    #[error("cache unavailable: {0}")]
    Unavailable(String),
    /// The key is empty, too long, or has whitespace or control characters.
    #[error("invalid cache key: {0}")]
    InvalidKey(String),
    /// A value (or a batch answer) is larger than the limit.
    #[error("cache value too large: {0}")]
    TooLarge(String),
    /// `incr` on a value that is not a signed 64-bit decimal integer, or that would overflow.
    #[error("cache value is not a number: {0}")]
    NotANumber(String),
    /// Any other argument out of range (a TTL of 0 or over 30 days, too many keys).
    #[error("invalid cache argument: {0}")]
    InvalidArgument(String),
    /// Any other backend failure.
    #[error("cache error: {0}")]
    Other(String),
}

/// The kind of a [`CacheError`], without its message: what two implementations of the contract
/// must agree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// [`CacheError::Unavailable`].
    Unavailable,
    /// [`CacheError::InvalidKey`].
    InvalidKey,
    /// [`CacheError::TooLarge`].
    TooLarge,
    /// [`CacheError::NotANumber`].
    NotANumber,
    /// [`CacheError::InvalidArgument`].
    InvalidArgument,
    /// [`CacheError::Other`].
    Other,
}

/// How the message of an [`CacheError::Unavailable`] for a deadline that passed starts; see
/// [`CacheError::timed_out`].
const TIMED_OUT_PREFIX: &str = "timed out after ";

impl CacheError {
    /// `true` for [`CacheError::Unavailable`]: the only cache error worth retrying.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, CacheError::Unavailable(_))
    }

    /// The [`CacheError::Unavailable`] of a call to `backend` (e.g. `redis at 10.0.0.5:6379`)
    /// that did not complete within `timeout`. Backends build every deadline error with this, so
    /// [`CacheError::is_timeout`] can tell a slow backend from an unreachable one.
    pub fn timed_out(backend: &str, timeout: Duration) -> CacheError {
        CacheError::Unavailable(format!("{TIMED_OUT_PREFIX}{} ms: {backend} did not answer", timeout.as_millis()))
    }

    /// `true` for an [`CacheError::Unavailable`] made by [`CacheError::timed_out`]: the backend
    /// did not answer in time (as opposed to refusing or dropping the connection).
    pub fn is_timeout(&self) -> bool {
        matches!(self, CacheError::Unavailable(message) if message.starts_with(TIMED_OUT_PREFIX))
    }

    /// The message the error carries.
    pub fn message(&self) -> &str {
        match self {
            CacheError::Unavailable(m)
            | CacheError::InvalidKey(m)
            | CacheError::TooLarge(m)
            | CacheError::NotANumber(m)
            | CacheError::InvalidArgument(m)
            | CacheError::Other(m) => m,
        }
    }

    /// The kind of error, without the message.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CacheError::Unavailable(_) => ErrorKind::Unavailable,
            CacheError::InvalidKey(_) => ErrorKind::InvalidKey,
            CacheError::TooLarge(_) => ErrorKind::TooLarge,
            CacheError::NotANumber(_) => ErrorKind::NotANumber,
            CacheError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            CacheError::Other(_) => ErrorKind::Other,
        }
    }
}

/// Checks a function's key against the rules every backend shares (those of memcached's text
/// protocol): 1 to [`limits::MAX_KEY_BYTES`] bytes, no whitespace or control characters.
pub fn check_key(key: &str) -> Result<(), CacheError> {
    if key.is_empty() {
        return Err(CacheError::InvalidKey("key is empty".into()));
    }
    if key.len() > limits::MAX_KEY_BYTES {
        return Err(CacheError::InvalidKey(format!(
            "key of {} bytes is over the {} byte limit",
            key.len(),
            limits::MAX_KEY_BYTES
        )));
    }
    // Printable ASCII (0x21 to 0x7e) is the common case, and has neither.
    if key.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Ok(());
    }
    if let Some(c) = key.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(CacheError::InvalidKey(format!(
            "key {key:?} contains {c:?}; spaces and control characters are not allowed"
        )));
    }
    Ok(())
}

/// Checks a value: at most [`limits::MAX_VALUE_BYTES`] bytes (an empty value is a value).
pub fn check_value(value: &[u8]) -> Result<(), CacheError> {
    if value.len() > limits::MAX_VALUE_BYTES {
        return Err(CacheError::TooLarge(format!(
            "value of {} bytes is over the {} byte limit",
            value.len(),
            limits::MAX_VALUE_BYTES
        )));
    }
    Ok(())
}

/// Checks a TTL: `None` (no expiry) or 1 to [`limits::MAX_TTL_SECONDS`] seconds.
pub fn check_ttl(ttl_seconds: Option<u32>) -> Result<(), CacheError> {
    match ttl_seconds {
        Some(ttl) if ttl == 0 || ttl > limits::MAX_TTL_SECONDS => Err(CacheError::InvalidArgument(format!(
            "TTL of {ttl} s is out of range: use 1 to {} s, or no TTL",
            limits::MAX_TTL_SECONDS
        ))),
        _ => Ok(()),
    }
}

/// Checks the number of keys or entries of a batch call: at most [`limits::MAX_BATCH_KEYS`]
/// (an empty batch is allowed and does nothing).
pub fn check_batch_len(len: usize) -> Result<(), CacheError> {
    if len > limits::MAX_BATCH_KEYS {
        return Err(CacheError::InvalidArgument(format!(
            "{len} keys in one call is over the {} key limit",
            limits::MAX_BATCH_KEYS
        )));
    }
    Ok(())
}

/// Checks a `get-many` answer before it is handed to the function: at most
/// [`limits::MAX_HOST_BUFFERED_BYTES`] bytes of values in all (a key asked for twice counts
/// twice).
pub fn check_get_many_answer(values: &[Option<Vec<u8>>]) -> Result<(), CacheError> {
    let buffered: usize = values.iter().flatten().map(Vec::len).sum();
    if buffered > limits::MAX_HOST_BUFFERED_BYTES {
        return Err(CacheError::TooLarge(format!(
            "get-many answer of {buffered} bytes is over the {} byte limit; ask for fewer keys",
            limits::MAX_HOST_BUFFERED_BYTES
        )));
    }
    Ok(())
}

/// Checks a namespace, the prefix that keeps one pipeline's keys apart from another's: 1 to
/// [`limits::MAX_NAMESPACE_BYTES`] ASCII letters, digits, `_`, `-`, `.`.
pub fn check_namespace(name: &str) -> Result<(), CacheError> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if name.is_empty() || name.len() > limits::MAX_NAMESPACE_BYTES || !name.chars().all(valid_char) {
        return Err(CacheError::InvalidArgument(format!(
            "namespace {name:?} must be 1 to {} ASCII letters, digits, '_', '-' or '.'",
            limits::MAX_NAMESPACE_BYTES
        )));
    }
    Ok(())
}

/// The backend key of a function's `key` in `namespace`: `<namespace>:<key>`. A namespace has
/// no `:`, so two namespaces never share a backend key.
pub fn qualify(namespace: &str, key: &str) -> String {
    let mut full = String::with_capacity(namespace.len() + 1 + key.len());
    full.push_str(namespace);
    full.push(':');
    full.push_str(key);
    full
}

/// Checks a `get` or a `delete`.
pub fn check_get(key: &str) -> Result<(), CacheError> {
    check_key(key)
}

/// Checks a `get-many`: batch size, then each key in order.
pub fn check_get_many<'a>(keys: impl ExactSizeIterator<Item = &'a str>) -> Result<(), CacheError> {
    check_batch_len(keys.len())?;
    keys.into_iter().try_for_each(check_key)
}

/// Checks a `set`: key, value, TTL.
pub fn check_set(key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<(), CacheError> {
    check_key(key)?;
    check_value(value)?;
    check_ttl(ttl_seconds)
}

/// Checks a `set-many`: batch size, TTL, then each entry's key and value in order.
pub fn check_set_many<'a>(
    entries: impl ExactSizeIterator<Item = (&'a str, &'a [u8])>,
    ttl_seconds: Option<u32>,
) -> Result<(), CacheError> {
    check_batch_len(entries.len())?;
    check_ttl(ttl_seconds)?;
    entries.into_iter().try_for_each(|(key, value)| {
        check_key(key)?;
        check_value(value)
    })
}

/// Checks an `incr`: key, TTL.
pub fn check_incr(key: &str, ttl_seconds: Option<u32>) -> Result<(), CacheError> {
    check_key(key)?;
    check_ttl(ttl_seconds)
}

/// Checks an `incr-many`: batch size, TTL, then each key in order.
pub fn check_incr_many<'a>(
    keys: impl ExactSizeIterator<Item = &'a str>,
    ttl_seconds: Option<u32>,
) -> Result<(), CacheError> {
    check_batch_len(keys.len())?;
    check_ttl(ttl_seconds)?;
    keys.into_iter().try_for_each(check_key)
}

/// Parses a stored counter: signed 64-bit decimal text in its one canonical form, the form
/// [`format_counter`] writes: an optional `-`, then digits without leading zeros (`0`, `42`,
/// `-3`; not `007`, `+5`, `-0` or ` 5`). The canonical form is what Redis' `INCRBY` accepts,
/// so every backend agrees on what a number is.
pub fn parse_counter(key: &str, raw: &[u8]) -> Result<i64, CacheError> {
    let digits = raw.strip_prefix(b"-").unwrap_or(raw);
    let canonical = match digits {
        [b'0'] => digits.len() == raw.len(),
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    canonical
        .then(|| std::str::from_utf8(raw).ok()?.parse::<i64>().ok())
        .flatten()
        .ok_or_else(|| CacheError::NotANumber(format!("value at {key:?} is not a signed 64-bit decimal integer")))
}

/// The text `incr` stores for `value`: its canonical decimal form (see [`parse_counter`]).
pub fn format_counter(value: i64) -> String {
    value.to_string()
}

/// Adds `delta` to `current`, or says why it cannot: a result outside the signed 64-bit range
/// is [`CacheError::NotANumber`], and the counter keeps its value.
pub fn add_to_counter(key: &str, current: i64, delta: i64) -> Result<i64, CacheError> {
    current
        .checked_add(delta)
        .ok_or_else(|| CacheError::NotANumber(format!("incr of {current} by {delta} at {key:?} overflows 64 bits")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_only_in_their_canonical_decimal_form() {
        for (text, value) in [("0", 0), ("42", 42), ("-3", -3), ("9223372036854775807", i64::MAX)] {
            assert_eq!(parse_counter("k", text.as_bytes()), Ok(value), "{text}");
            assert_eq!(format_counter(value), text);
        }
        assert_eq!(parse_counter("k", b"-9223372036854775808"), Ok(i64::MIN));
        for text in ["", "-", "007", "+5", "-0", " 5", "5 ", "1.5", "1e3", "9223372036854775808", "٣"] {
            assert!(matches!(parse_counter("k", text.as_bytes()), Err(CacheError::NotANumber(_))), "{text:?}");
        }
    }

    #[test]
    fn every_formatted_counter_parses_back_to_itself() {
        for value in [i64::MIN, i64::MIN + 1, -10, -1, 0, 1, 9, 10, i64::MAX - 1, i64::MAX] {
            assert_eq!(parse_counter("k", format_counter(value).as_bytes()), Ok(value), "{value}");
        }
    }

    #[test]
    fn timeouts_are_told_apart_from_other_unavailability() {
        let timeout = CacheError::timed_out("redis at h:1", Duration::from_millis(500));
        assert!(timeout.is_timeout() && timeout.is_unavailable());
        assert_eq!(timeout.to_string(), "cache unavailable: timed out after 500 ms: redis at h:1 did not answer");
        assert!(!CacheError::Unavailable("redis at h:1 is not reachable".into()).is_timeout());
        assert!(!CacheError::Other("timed out after 1 ms".into()).is_timeout());
    }

    #[test]
    fn a_call_that_breaks_two_rules_fails_on_the_first_in_the_contract_order() {
        let long = "k".repeat(limits::MAX_KEY_BYTES + 1);
        let big = vec![0; limits::MAX_VALUE_BYTES + 1];
        assert_eq!(check_set(&long, &big, Some(0)).unwrap_err().kind(), ErrorKind::InvalidKey);
        assert_eq!(check_set("k", &big, Some(0)).unwrap_err().kind(), ErrorKind::TooLarge);
        assert_eq!(check_incr("", Some(0)).unwrap_err().kind(), ErrorKind::InvalidKey);
        let entries = [(long.as_str(), &b"v"[..])];
        assert_eq!(check_set_many(entries.into_iter(), Some(0)).unwrap_err().kind(), ErrorKind::InvalidArgument);
        assert_eq!(check_incr_many([""].into_iter(), Some(0)).unwrap_err().kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn namespaces_are_short_plain_names_and_never_contain_the_separator() {
        for good in ["a", "clicks-v2", "team.orders_1", &"n".repeat(limits::MAX_NAMESPACE_BYTES)] {
            assert_eq!(check_namespace(good), Ok(()), "{good}");
        }
        for bad in ["", "a:b", "a b", "é", &"n".repeat(limits::MAX_NAMESPACE_BYTES + 1)] {
            assert_eq!(check_namespace(bad).unwrap_err().kind(), ErrorKind::InvalidArgument, "{bad}");
        }
        assert_eq!(qualify("clicks", "user:1"), "clicks:user:1");
    }

    #[test]
    fn display_names_the_kind() {
        assert_eq!(CacheError::InvalidKey("empty".into()).to_string(), "invalid cache key: empty");
        assert_eq!(CacheError::TooLarge("x".into()).message(), "x");
        assert!(!CacheError::TooLarge(String::new()).is_unavailable());
    }
}
