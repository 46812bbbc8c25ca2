//! Lines in the runtime's log, tagged with the pipeline and function.
//!
//! The runtime cuts a message longer than its `max_log_line_bytes` (4,096 bytes unless the
//! operator set it otherwise, from 80 bytes to 1 MiB) at a character boundary. Logging is
//! cheap but not free: prefer one line per notable event over one per record at `info`.

/// How important a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the function handled.
    Warn,
    /// Something failed.
    Error,
}

/// Longest message, in bytes, under the runtime's default `max_log_line_bytes`; longer ones
/// are cut at a character boundary. [`crate::testing`] cuts at this length.
pub const MAX_MESSAGE_BYTES: usize = 4_096;

/// Writes one line at `level`.
pub fn log(level: Level, message: impl AsRef<str>) {
    crate::host::log(level, message.as_ref());
}

/// Writes one line at [`Level::Trace`].
pub fn trace(message: impl AsRef<str>) {
    log(Level::Trace, message);
}

/// Writes one line at [`Level::Debug`].
pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message);
}

/// Writes one line at [`Level::Info`].
pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message);
}

/// Writes one line at [`Level::Warn`].
pub fn warn(message: impl AsRef<str>) {
    log(Level::Warn, message);
}

/// Writes one line at [`Level::Error`].
pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message);
}
