//! Where a guest's words go: its `log` calls and its stdout/stderr, as runtime log lines
//! tagged with the function's name, and to the context's [`GuestLogSink`] when it has one (a
//! pipeline's ring of function logs). Nothing a guest writes reaches the host's own stdout.
//!
//! The last lines a guest wrote to stderr during a call are also kept, so that when the call
//! traps (a Rust panic prints its message to stderr before it aborts) the error can say why.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

use sluice_record::bindings::sluice::function::log::Level;

/// How many of the latest stderr lines of a call are kept for its error message.
const RECENT_STDERR_LINES: usize = 8;

/// Where a guest line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestOutput {
    /// A call of the `log` import.
    Log,
    /// A line written to stdout.
    Stdout,
    /// A line written to stderr.
    Stderr,
}

/// Takes every line a function instance logs (already cut to
/// [`Limits::max_log_line_bytes`](crate::Limits::max_log_line_bytes)), besides the runtime
/// log. Called on the worker's task while the guest runs: it must not block.
pub trait GuestLogSink: Send + Sync + std::fmt::Debug {
    /// One line at `level`.
    fn line(&self, output: GuestOutput, level: Level, message: &str);
}

/// Writes one guest log line at `level`, cut to `max_bytes`, to the runtime log and `sink`.
pub(crate) fn emit(
    function: &str,
    sink: Option<&dyn GuestLogSink>,
    output: GuestOutput,
    level: Level,
    message: &str,
    max_bytes: usize,
) {
    let message = truncate(message, max_bytes);
    if let Some(sink) = sink {
        sink.line(output, level, message);
    }
    match level {
        Level::Trace => tracing::trace!(target: "sluice::guest", function, "{message}"),
        Level::Debug => tracing::debug!(target: "sluice::guest", function, "{message}"),
        Level::Info => tracing::info!(target: "sluice::guest", function, "{message}"),
        Level::Warn => tracing::warn!(target: "sluice::guest", function, "{message}"),
        Level::Error => tracing::error!(target: "sluice::guest", function, "{message}"),
    }
}

fn truncate(text: &str, max_bytes: usize) -> &str {
    &text[..text.floor_char_boundary(max_bytes)]
}

/// A guest's stdout or stderr, split into lines and logged.
#[derive(Clone)]
pub(crate) struct GuestStream {
    inner: Arc<Mutex<StreamState>>,
}

struct StreamState {
    function: Arc<str>,
    sink: Option<Arc<dyn GuestLogSink>>,
    output: GuestOutput,
    level: Level,
    max_line_bytes: usize,
    partial: Vec<u8>,
    recent: VecDeque<String>,
}

impl GuestStream {
    /// The guest's stdout, logged at info level.
    pub(crate) fn stdout(function: Arc<str>, sink: Option<Arc<dyn GuestLogSink>>, max_line_bytes: usize) -> Self {
        Self::new(function, sink, GuestOutput::Stdout, Level::Info, max_line_bytes)
    }

    /// The guest's stderr, logged at warn level and remembered for error messages.
    pub(crate) fn stderr(function: Arc<str>, sink: Option<Arc<dyn GuestLogSink>>, max_line_bytes: usize) -> Self {
        Self::new(function, sink, GuestOutput::Stderr, Level::Warn, max_line_bytes)
    }

    fn new(
        function: Arc<str>,
        sink: Option<Arc<dyn GuestLogSink>>,
        output: GuestOutput,
        level: Level,
        max_line_bytes: usize,
    ) -> Self {
        let state =
            StreamState { function, sink, output, level, max_line_bytes, partial: Vec::new(), recent: VecDeque::new() };
        GuestStream { inner: Arc::new(Mutex::new(state)) }
    }

    /// Forgets the lines of the previous call.
    pub(crate) fn start_call(&self) {
        self.lock().recent.clear();
    }

    /// The latest lines written during this call, unfinished line included, joined by `; `.
    pub(crate) fn recent(&self) -> String {
        let mut state = self.lock();
        state.flush_partial();
        state.recent.iter().map(String::as_str).collect::<Vec<_>>().join("; ")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StreamState> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl StreamState {
    fn write(&mut self, mut bytes: &[u8]) {
        while let Some(newline) = bytes.iter().position(|&b| b == b'\n') {
            self.push(&bytes[..newline]);
            self.flush_partial();
            bytes = &bytes[newline + 1..];
        }
        self.push(bytes);
    }

    fn push(&mut self, bytes: &[u8]) {
        let room = self.max_line_bytes.saturating_sub(self.partial.len());
        self.partial.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn flush_partial(&mut self) {
        if self.partial.is_empty() {
            return;
        }
        let line = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        emit(&self.function, self.sink.as_deref(), self.output, self.level, &line, self.max_line_bytes);
        if self.recent.len() == RECENT_STDERR_LINES {
            self.recent.pop_front();
        }
        self.recent.push_back(line);
    }
}

impl OutputStream for GuestStream {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.lock().write(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for GuestStream {
    async fn ready(&mut self) {}
}

impl IsTerminal for GuestStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for GuestStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.lock().write(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod fuzz;
