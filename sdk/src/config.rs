//! The pipeline's settings for this function, as declared by the operator.
//!
//! Settings are strings; parse numbers yourself and fail records with a clear message when a
//! setting is malformed.

/// The value of setting `key`, or `None` when it is not set.
pub fn get(key: &str) -> Option<String> {
    crate::host::config_get(key)
}

/// The value of setting `key`, or `default` when it is not set.
pub fn get_or(key: &str, default: &str) -> String {
    get(key).unwrap_or_else(|| default.to_owned())
}

/// The setting `key` as a whole number of seconds (`default_seconds` when it is not set), for
/// TTLs and intervals. A value that is not a whole number is a fatal error naming the setting.
pub fn seconds(key: &str, default_seconds: u64) -> crate::Result<std::time::Duration> {
    let Some(text) = get(key) else { return Ok(std::time::Duration::from_secs(default_seconds)) };
    let seconds = text
        .trim()
        .parse::<u64>()
        .map_err(|_| crate::Error::fatal(format!("config {key} = {text:?} is not a whole number of seconds")))?;
    Ok(std::time::Duration::from_secs(seconds))
}

/// Every setting, sorted by key.
pub fn all() -> Vec<(String, String)> {
    crate::host::config_all()
}
