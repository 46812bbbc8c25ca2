//! The admin API's client, as the `sluice` CLI uses it: blocking calls, bearer token, errors
//! that carry the API's code and message, and module uploads streamed from disk with a
//! progress callback.

use std::fs::File;
use std::io::{Cursor, Read};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::Value;
use ureq::{Agent, Body, SendBody};

/// The URL of the admin API when none is given: `sluice serve`'s and `sluice dev`'s default.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7070";

/// How long a call may take; an upload also waits for the module to compile.
const CALL_TIMEOUT: Duration = Duration::from_secs(300);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Called as an upload progresses, with bytes sent and bytes in all.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// A client of one runtime's admin API.
pub struct AdminClient {
    base: String,
    token: Option<String>,
    agent: Agent,
}

/// An error answer of the API.
#[derive(Debug, thiserror::Error)]
#[error("{message} ({code}, HTTP {status})")]
pub struct ApiFailure {
    /// The HTTP status.
    pub status: u16,
    /// The API's stable error code.
    pub code: String,
    /// The API's message.
    pub message: String,
}

impl AdminClient {
    /// A client of the API at `url` (`http://host:port`), sending `token` when given.
    pub fn new(url: &str, token: Option<String>) -> AdminClient {
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(CALL_TIMEOUT))
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .build()
            .new_agent();
        AdminClient { base: url.trim_end_matches('/').to_string(), token, agent }
    }

    /// `GET path`, as JSON.
    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        let request = self.authorized(self.agent.get(self.url(path)));
        self.answer("GET", path, request.call())
    }

    /// `GET path`, as text (for `/metrics`).
    pub fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let request = self.authorized(self.agent.get(self.url(path)));
        let mut response = self.sent("GET", path, request.call())?;
        Ok(response.body_mut().read_to_string()?)
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> anyhow::Result<Value> {
        let request = self.authorized(self.agent.delete(self.url(path)));
        self.answer("DELETE", path, request.call())
    }

    /// `POST path` with a JSON body.
    pub fn post_json(&self, path: &str, body: &impl Serialize) -> anyhow::Result<Value> {
        let request = self.authorized(self.agent.post(self.url(path)));
        self.answer("POST", path, request.send_json(body))
    }

    /// `PUT path` with a JSON body.
    pub fn put_json(&self, path: &str, body: &impl Serialize) -> anyhow::Result<Value> {
        let request = self.authorized(self.agent.put(self.url(path)));
        self.answer("PUT", path, request.send_json(body))
    }

    /// `POST path` with the file at `module` as an `application/wasm` body, streamed.
    pub fn post_module(&self, path: &str, module: &Path, progress: Progress<'_>) -> anyhow::Result<Value> {
        let file = File::open(module).with_context(|| format!("cannot open module {}", module.display()))?;
        let total = file.metadata()?.len();
        let mut reader = Counting { inner: file, sent: 0, total, progress };
        let request = self
            .authorized(self.agent.post(self.url(path)))
            .header("content-type", "application/wasm")
            .header("content-length", total.to_string());
        self.answer("POST", path, request.send(SendBody::from_reader(&mut reader)))
    }

    /// `POST /v1/deploy`: the spec and the module file as one multipart form, streamed.
    pub fn deploy(&self, spec: &Value, module: &Path, progress: Progress<'_>) -> anyhow::Result<Value> {
        let file = File::open(module).with_context(|| format!("cannot open module {}", module.display()))?;
        let module_len = file.metadata()?.len();
        let boundary = format!("sluice-{:016x}{:08x}", rand_u64(), std::process::id());
        let head = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"spec\"\r\nContent-Type: application/json\r\n\r\n{spec}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"module\"; filename=\"module.wasm\"\r\n\
             Content-Type: application/wasm\r\n\r\n"
        );
        let tail = format!("\r\n--{boundary}--\r\n");
        let total = head.len() as u64 + module_len + tail.len() as u64;
        let body = Cursor::new(head.into_bytes()).chain(file).chain(Cursor::new(tail.into_bytes()));
        let mut reader = Counting { inner: body, sent: 0, total, progress };
        let request = self
            .authorized(self.agent.post(self.url("/v1/deploy")))
            .header("content-type", format!("multipart/form-data; boundary={boundary}"))
            .header("content-length", total.to_string());
        self.answer("POST", "/v1/deploy", request.send(SendBody::from_reader(&mut reader)))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authorized<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(token) => request.header("authorization", format!("Bearer {token}")),
            None => request,
        }
    }

    fn sent(
        &self,
        method: &str,
        path: &str,
        result: Result<ureq::http::Response<Body>, ureq::Error>,
    ) -> anyhow::Result<ureq::http::Response<Body>> {
        let mut response = result.map_err(|e| match e {
            ureq::Error::Io(ref io) if io.kind() == std::io::ErrorKind::ConnectionRefused => anyhow::anyhow!(
                "cannot reach the Sluice admin API at {}: connection refused (is `sluice serve` or `sluice dev` running? \
                 set --url or SLUICE_URL)",
                self.base
            ),
            other => anyhow::anyhow!("{method} {}{path} failed: {other}", self.base),
        })?;
        let status = response.status().as_u16();
        if status >= 400 {
            let text = response.body_mut().read_to_string().unwrap_or_default();
            let error: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let code = error["error"]["code"].as_str().unwrap_or("http_error").to_string();
            let message = error["error"]["message"].as_str().map(str::to_string).unwrap_or(text);
            return Err(ApiFailure { status, code, message }.into());
        }
        Ok(response)
    }

    fn answer(
        &self,
        method: &str,
        path: &str,
        result: Result<ureq::http::Response<Body>, ureq::Error>,
    ) -> anyhow::Result<Value> {
        let mut response = self.sent(method, path, result)?;
        let text = response.body_mut().with_config().limit(64 * 1024 * 1024).read_to_string()?;
        if text.is_empty() {
            return Ok(Value::Null);
        }
        match serde_json::from_str(&text) {
            Ok(value) => Ok(value),
            Err(e) => bail!("{method} {path}: the answer is not JSON: {e}"),
        }
    }
}

/// A reader that reports how much of it was read.
struct Counting<'a, R> {
    inner: R,
    sent: u64,
    total: u64,
    progress: Progress<'a>,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sent += n as u64;
        (self.progress)(self.sent, self.total);
        Ok(n)
    }
}

/// A value that differs between calls, for multipart boundaries (not for secrets).
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
