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

/// Every setting, sorted by key.
pub fn all() -> Vec<(String, String)> {
    crate::host::config_all()
}
