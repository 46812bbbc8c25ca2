//! The admin API's client, as the `sluice` CLI uses it: blocking calls, one method per route,
//! each answer parsed into the type the server serialised, a bearer token, errors that carry
//! the API's code and message ([`ApiFailure`]), and module uploads streamed from disk with a
//! progress callback.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sluice_pipeline::function_log::LogEntry;
use sluice_pipeline::manager::{ModuleChange, PipelineReport, PipelineSummary};
use sluice_pipeline::registry::ModuleInfo;
use sluice_pipeline::spec::{PipelineSpec, StartPosition};
use ureq::unversioned::multipart::{Form, Part};
use ureq::{Agent, Body, SendBody};

use crate::types::{
    ApplyResult, ClusterView, CommittedOffset, ErrorBody, LogList, LogsQuery, ModuleDetail, ModuleList, OffsetList,
    PipelineList, ReloadRequest, ResetRequest, RollbackRequest,
};

/// The URL of the admin API when none is given: `sluice serve`'s and `sluice dev`'s default.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7070";

/// How long a call may take; an upload also waits for the module to compile.
const CALL_TIMEOUT: Duration = Duration::from_secs(300);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most bytes of an answer read (a report of a pipeline with many partitions is large,
/// but not this large).
const MAX_ANSWER_BYTES: u64 = 64 * 1024 * 1024;

/// The longest line of a followed function log read (an entry's message is at most 8 KiB).
const MAX_LOG_LINE_BYTES: u64 = 1024 * 1024;

/// The name the module part of a deploy is sent under.
const MODULE_FILE_NAME: &str = "module.wasm";

/// Called as an upload progresses, with bytes of the module sent and its size.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// A client of one runtime's admin API.
pub struct AdminClient {
    base: String,
    token: Option<String>,
    agent: Agent,
}

/// An error answer of the API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({code}, HTTP {status})")]
pub struct ApiFailure {
    /// The HTTP status.
    pub status: u16,
    /// The API's stable error code; `http_error` when the answer was not the API's error body
    /// (a proxy's page, say).
    pub code: String,
    /// The API's message; the answer's text when it was not the API's error body.
    pub message: String,
}

impl ApiFailure {
    /// The failure an error answer with `status` and body `text` stands for.
    pub fn from_answer(status: u16, text: &str) -> ApiFailure {
        match serde_json::from_str::<ErrorBody>(text) {
            Ok(ErrorBody { error }) => {
                ApiFailure { status, code: error.code.as_str().to_owned(), message: error.message }
            }
            Err(_) => ApiFailure { status, code: "http_error".into(), message: text.to_string() },
        }
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered with an error.
    #[error(transparent)]
    Api(#[from] ApiFailure),
    /// Nothing listens at the URL.
    #[error(
        "cannot reach the Sluice admin API at {url}: connection refused (is `sluice serve` or `sluice dev` running? \
         set --url or SLUICE_URL)"
    )]
    Unreachable {
        /// The API's URL.
        url: String,
    },
    /// The call could not be made or its answer not read.
    #[error("{method} {url} failed: {error}")]
    Transport {
        /// The call's method.
        method: &'static str,
        /// The call's URL.
        url: String,
        /// What failed.
        error: ureq::Error,
    },
    /// The answer is not the JSON the route answers with.
    #[error("{method} {path}: the answer is not the expected JSON: {error}")]
    BadAnswer {
        /// The call's method.
        method: &'static str,
        /// The call's path.
        path: String,
        /// What is wrong with it.
        error: serde_json::Error,
    },
    /// The module to upload cannot be read.
    #[error("cannot open module {}", path.display())]
    Module {
        /// The module's file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A request body that cannot be encoded (a spec that is not JSON).
    #[error("cannot encode the request to {path}: {error}")]
    BadRequest {
        /// The call's path.
        path: String,
        /// What is wrong.
        error: String,
    },
}

impl ClientError {
    /// The API's error answer, when that is what this is.
    pub fn api(&self) -> Option<&ApiFailure> {
        match self {
            ClientError::Api(failure) => Some(failure),
            _ => None,
        }
    }
}

/// What a call answers with, or why it failed.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

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

    /// `GET /v1/modules`: every stored module, sorted by digest.
    pub fn list_modules(&self) -> Result<Vec<ModuleInfo>> {
        Ok(self.get::<ModuleList>("/v1/modules")?.modules)
    }

    /// `GET /v1/modules/{digest}`: a module's metadata and the pipelines that use it.
    pub fn module(&self, digest: &str) -> Result<ModuleDetail> {
        self.get(&format!("/v1/modules/{digest}"))
    }

    /// `POST /v1/modules`: stores the module file at `module` (streamed), or finds it stored.
    pub fn upload_module(&self, module: &Path, progress: Progress<'_>) -> Result<ModuleInfo> {
        self.post_module("/v1/modules", module, progress)
    }

    /// `DELETE /v1/modules/{digest}`: refused while a pipeline uses or keeps the module.
    pub fn delete_module(&self, digest: &str) -> Result<()> {
        self.delete(&format!("/v1/modules/{digest}"))
    }

    /// `GET /v1/pipelines`: every pipeline, briefly.
    pub fn list_pipelines(&self) -> Result<Vec<PipelineSummary>> {
        Ok(self.get::<PipelineList>("/v1/pipelines")?.pipelines)
    }

    /// `GET /v1/pipelines/{name}`: one pipeline in full.
    pub fn get_pipeline(&self, name: &str) -> Result<PipelineReport> {
        self.get(&format!("/v1/pipelines/{name}"))
    }

    /// `GET /v1/cluster`: this node and the nodes of its cluster, with their heartbeats.
    pub fn cluster(&self) -> Result<ClusterView> {
        self.get("/v1/cluster")
    }

    /// `PUT /v1/pipelines/{name}`: creates or updates the pipeline `spec` names, with a module
    /// already stored (`spec.module` its digest).
    pub fn apply(&self, spec: &PipelineSpec) -> Result<ApplyResult> {
        let path = format!("/v1/pipelines/{}", spec.name);
        let request = self.authorized(self.agent.put(self.url(&path)));
        self.answer("PUT", &path, request.send_json(spec))
    }

    /// `POST /v1/deploy`: uploads the module file at `module` (streamed) and creates or updates
    /// the pipeline `spec` describes, in one call. `spec` is a pipeline spec as JSON; it need
    /// not name a module, and the runtime fills in every default it leaves out.
    pub fn deploy(&self, spec: &impl Serialize, module: &Path, progress: Progress<'_>) -> Result<ApplyResult> {
        const PATH: &str = "/v1/deploy";
        let bad_request = |error: String| ClientError::BadRequest { path: PATH.into(), error };
        let spec = serde_json::to_string(spec).map_err(|e| bad_request(e.to_string()))?;
        let (file, size) = open_module(module)?;
        let mut reader = Counting { inner: file, sent: 0, total: size, progress };
        // The module's part is a reader, so its size is not known to the form: the body is
        // sent chunked.
        let form = Form::new()
            .part("spec", Part::text(&spec).mime_str("application/json").map_err(|e| bad_request(e.to_string()))?)
            .part(
                "module",
                Part::reader(&mut reader)
                    .file_name(MODULE_FILE_NAME)
                    .mime_str("application/wasm")
                    .map_err(|e| bad_request(e.to_string()))?,
            );
        let request = self.authorized(self.agent.post(self.url(PATH)));
        self.answer("POST", PATH, request.send(form))
    }

    /// `DELETE /v1/pipelines/{name}`: stops and removes the pipeline (its consumer group's
    /// offsets stay on the cluster).
    pub fn delete_pipeline(&self, name: &str) -> Result<()> {
        self.delete(&format!("/v1/pipelines/{name}"))
    }

    /// `POST /v1/pipelines/{name}/reload` with the module file at `module` (streamed): switches
    /// the running pipeline to it without stopping.
    pub fn reload(&self, name: &str, module: &Path, progress: Progress<'_>) -> Result<ModuleChange> {
        self.post_module(&format!("/v1/pipelines/{name}/reload"), module, progress)
    }

    /// `POST /v1/pipelines/{name}/reload` with `{"module": digest}`: switches the running
    /// pipeline to a module already stored.
    pub fn reload_stored(&self, name: &str, digest: &str) -> Result<ModuleChange> {
        self.post_json(&format!("/v1/pipelines/{name}/reload"), &ReloadRequest { module: digest.to_string() })
    }

    /// `POST /v1/pipelines/{name}/rollback`: back to the previous module version, or to the kept
    /// `revision`.
    pub fn rollback(&self, name: &str, revision: Option<u64>) -> Result<ModuleChange> {
        self.post_json(&format!("/v1/pipelines/{name}/rollback"), &RollbackRequest { revision })
    }

    /// `POST /v1/pipelines/{name}/pause`.
    pub fn pause(&self, name: &str) -> Result<PipelineSummary> {
        self.post_json(&format!("/v1/pipelines/{name}/pause"), &serde_json::Map::new())
    }

    /// `POST /v1/pipelines/{name}/resume`.
    pub fn resume(&self, name: &str) -> Result<PipelineSummary> {
        self.post_json(&format!("/v1/pipelines/{name}/resume"), &serde_json::Map::new())
    }

    /// `POST /v1/pipelines/{name}/offsets`: moves a paused pipeline's consumer group to `reset`,
    /// answering the offsets committed.
    pub fn reset_offsets(&self, name: &str, reset: StartPosition) -> Result<Vec<CommittedOffset>> {
        let answer: OffsetList = self.post_json(&format!("/v1/pipelines/{name}/offsets"), &ResetRequest { reset })?;
        Ok(answer.offsets)
    }

    /// `GET /v1/pipelines/{name}/logs`: the pipeline's function log on the node this client
    /// speaks to (`query.follow` is ignored: see [`AdminClient::follow_logs`]).
    pub fn logs(&self, name: &str, query: &LogsQuery) -> Result<LogList> {
        let path = format!("/v1/pipelines/{name}/logs");
        let query = LogsQuery { follow: None, ..query.clone() };
        let request = self.authorized(self.agent.get(self.url(&path))).query_pairs(query_pairs(&query));
        self.answer("GET", &path, request.call())
    }

    /// `GET /v1/pipelines/{name}/logs?follow=true`: calls `entry` with each kept entry that
    /// matches `query` and then each new one as it comes, until `entry` answers `false` or the
    /// stream ends (the pipeline deleted, the runtime stopped). The call has no time limit.
    pub fn follow_logs(&self, name: &str, query: &LogsQuery, entry: &mut dyn FnMut(LogEntry) -> bool) -> Result<()> {
        let path = format!("/v1/pipelines/{name}/logs");
        let query = LogsQuery { follow: Some(true), ..query.clone() };
        let request = self
            .authorized(self.agent.get(self.url(&path)))
            .query_pairs(query_pairs(&query))
            .config()
            .timeout_global(None)
            .build();
        let response = self.sent("GET", &path, request.call())?;
        let mut reader = BufReader::new(response.into_body().into_reader());
        let failed =
            |error: std::io::Error| ClientError::Transport { method: "GET", url: self.url(&path), error: error.into() };
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = reader.by_ref().take(MAX_LOG_LINE_BYTES).read_until(b'\n', &mut line).map_err(failed)?;
            if read == 0 {
                return Ok(());
            }
            if line.last() != Some(&b'\n') && read as u64 == MAX_LOG_LINE_BYTES {
                return Err(failed(std::io::Error::other(format!("a line is longer than {MAX_LOG_LINE_BYTES} bytes"))));
            }
            if line.trim_ascii().is_empty() {
                continue;
            }
            let parsed = serde_json::from_slice(&line).map_err(|error| ClientError::BadAnswer {
                method: "GET",
                path: path.clone(),
                error,
            })?;
            if !entry(parsed) {
                return Ok(());
            }
        }
    }

    /// `GET /metrics`: the Prometheus text.
    pub fn metrics(&self) -> Result<String> {
        self.get_text("/metrics")
    }

    /// `GET /v1/openapi.json`: the OpenAPI document, as text.
    pub fn openapi(&self) -> Result<String> {
        self.get_text("/v1/openapi.json")
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let request = self.authorized(self.agent.get(self.url(path)));
        self.answer("GET", path, request.call())
    }

    fn get_text(&self, path: &str) -> Result<String> {
        let request = self.authorized(self.agent.get(self.url(path)));
        let mut response = self.sent("GET", path, request.call())?;
        self.text("GET", path, &mut response)
    }

    fn delete(&self, path: &str) -> Result<()> {
        let request = self.authorized(self.agent.delete(self.url(path)));
        self.sent("DELETE", path, request.call()).map(drop)
    }

    fn post_json<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        let request = self.authorized(self.agent.post(self.url(path)));
        self.answer("POST", path, request.send_json(body))
    }

    /// `POST path` with the file at `module` as an `application/wasm` body, streamed.
    fn post_module<T: DeserializeOwned>(&self, path: &str, module: &Path, progress: Progress<'_>) -> Result<T> {
        let (file, size) = open_module(module)?;
        let mut reader = Counting { inner: file, sent: 0, total: size, progress };
        let request = self
            .authorized(self.agent.post(self.url(path)))
            .header("content-type", "application/wasm")
            .header("content-length", size.to_string());
        self.answer("POST", path, request.send(SendBody::from_reader(&mut reader)))
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

    /// The answer of a call that was sent, or why it failed: an error answer becomes an
    /// [`ApiFailure`].
    fn sent(
        &self,
        method: &'static str,
        path: &str,
        result: std::result::Result<ureq::http::Response<Body>, ureq::Error>,
    ) -> Result<ureq::http::Response<Body>> {
        let mut response = result.map_err(|error| match error {
            ureq::Error::Io(ref io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                ClientError::Unreachable { url: self.base.clone() }
            }
            error => ClientError::Transport { method, url: self.url(path), error },
        })?;
        let status = response.status().as_u16();
        if status >= 400 {
            let text = response.body_mut().read_to_string().unwrap_or_default();
            return Err(ApiFailure::from_answer(status, &text).into());
        }
        Ok(response)
    }

    fn text(&self, method: &'static str, path: &str, response: &mut ureq::http::Response<Body>) -> Result<String> {
        response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_string()
            .map_err(|error| ClientError::Transport { method, url: self.url(path), error })
    }

    fn answer<T: DeserializeOwned>(
        &self,
        method: &'static str,
        path: &str,
        result: std::result::Result<ureq::http::Response<Body>, ureq::Error>,
    ) -> Result<T> {
        let mut response = self.sent(method, path, result)?;
        let text = self.text(method, path, &mut response)?;
        serde_json::from_str(&text).map_err(|error| ClientError::BadAnswer { method, path: path.to_string(), error })
    }
}

/// The query string of a log read: the parameters given, by name.
fn query_pairs(query: &LogsQuery) -> Vec<(&'static str, String)> {
    let mut pairs = Vec::new();
    if let Some(since) = &query.since {
        pairs.push(("since", since.clone()));
    }
    if let Some(level) = &query.level {
        pairs.push(("level", level.clone()));
    }
    if let Some(limit) = query.limit {
        pairs.push(("limit", limit.to_string()));
    }
    if let Some(follow) = query.follow {
        pairs.push(("follow", follow.to_string()));
    }
    pairs
}

/// The module file at `path`, open, and its size.
fn open_module(path: &Path) -> Result<(File, u64)> {
    let failed = |source| ClientError::Module { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(failed)?;
    let size = file.metadata().map_err(failed)?.len();
    Ok((file, size))
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

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::net::TcpListener;
    use std::thread::JoinHandle;

    use super::*;
    use sluice_pipeline::manager::Applied;

    /// A request as the server read it: its head (lower-case) and its body, de-chunked.
    struct Received {
        head: String,
        body: Vec<u8>,
    }

    /// A server on loopback that answers one request with `status` and `body` (JSON), and
    /// hands back the request it read.
    fn answer_once(status: u16, body: &str) -> (String, JoinHandle<Received>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let body = body.to_string();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut bytes = Vec::new();
            let mut buf = [0u8; 8192];
            let received = loop {
                let n = stream.read(&mut buf).unwrap();
                bytes.extend_from_slice(&buf[..n]);
                if let Some(received) = complete_request(&bytes) {
                    break received;
                }
                assert!(n > 0, "the request ended early: {}", String::from_utf8_lossy(&bytes));
            };
            let answer = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(answer.as_bytes()).unwrap();
            received
        });
        (url, server)
    }

    /// The request in `bytes`, once all of it is there.
    fn complete_request(bytes: &[u8]) -> Option<Received> {
        let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&bytes[..end]).to_lowercase();
        let rest = &bytes[end..];
        if head.contains("transfer-encoding: chunked") {
            let mut body = Vec::new();
            let mut at = 0;
            loop {
                let line_end = at + rest[at..].windows(2).position(|w| w == b"\r\n")?;
                let size = usize::from_str_radix(std::str::from_utf8(&rest[at..line_end]).unwrap().trim(), 16).unwrap();
                let data = line_end + 2;
                if rest.len() < data + size + 2 {
                    return None;
                }
                if size == 0 {
                    return Some(Received { head, body });
                }
                body.extend_from_slice(&rest[data..data + size]);
                at = data + size + 2;
            }
        }
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |l| l.trim().parse::<usize>().unwrap());
        (rest.len() >= length).then(|| Received { head, body: rest[..length].to_vec() })
    }

    fn summary_json(name: &str) -> String {
        format!(
            r#"{{"name":"{name}","state":"running","revision":1,"module":"sha256:{}","inputs":["in"],
               "records_in":0,"records_out":0,"failed":0,"lag":0,"partitions":0}}"#,
            "a".repeat(64)
        )
    }

    #[test]
    fn an_error_answer_carries_the_apis_status_code_and_message() {
        let (url, server) =
            answer_once(404, r#"{"error":{"code":"pipeline_not_found","message":"no pipeline named \"x\""}}"#);
        let error = AdminClient::new(&url, None).get_pipeline("x").unwrap_err();
        server.join().unwrap();
        let failure = error.api().expect("an API error");
        assert_eq!(
            failure,
            &ApiFailure { status: 404, code: "pipeline_not_found".into(), message: "no pipeline named \"x\"".into() }
        );
        assert_eq!(error.to_string(), "no pipeline named \"x\" (pipeline_not_found, HTTP 404)");
    }

    #[test]
    fn an_error_answer_that_is_not_the_apis_keeps_its_status_and_text() {
        let failure = ApiFailure::from_answer(502, "<html>bad gateway</html>");
        assert_eq!(
            failure,
            ApiFailure { status: 502, code: "http_error".into(), message: "<html>bad gateway</html>".into() }
        );
        // Valid JSON of another shape is not the API's error either.
        assert_eq!(ApiFailure::from_answer(500, r#"{"error":"boom"}"#).code, "http_error");
    }

    #[test]
    fn an_answer_of_another_shape_is_a_bad_answer() {
        let (url, server) = answer_once(200, r#"{"pipelines":3}"#);
        let error = AdminClient::new(&url, None).list_pipelines().unwrap_err();
        server.join().unwrap();
        assert!(
            matches!(&error, ClientError::BadAnswer { method: "GET", path, .. } if path == "/v1/pipelines"),
            "{error}"
        );
    }

    #[test]
    fn nothing_listening_at_the_url_is_unreachable_and_names_the_url() {
        let url = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", listener.local_addr().unwrap())
        };
        let error = AdminClient::new(&url, None).list_modules().unwrap_err();
        assert!(matches!(&error, ClientError::Unreachable { url: named } if *named == url), "{error}");
        assert!(error.to_string().contains("SLUICE_URL"), "{error}");
    }

    #[test]
    fn a_deploy_sends_the_spec_and_the_streamed_module_as_a_multipart_form() {
        let dir = std::env::temp_dir().join(format!("sluice-api-deploy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let module = dir.join("function.wasm");
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&module, &bytes).unwrap();
        let (url, server) = answer_once(201, &format!(r#"{{"result":"created","pipeline":{}}}"#, summary_json("p")));
        let spec = serde_json::json!({ "name": "p", "inputs": ["in"], "outputs": { "default": "out" } });
        let mut seen = Vec::new();
        let answer = AdminClient::new(&url, Some("secret".into()))
            .deploy(&spec, &module, &mut |sent, total| seen.push((sent, total)));
        let received = server.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();

        let answer = answer.unwrap();
        assert_eq!((answer.result, answer.pipeline.name.as_str(), answer.module), (Applied::Created, "p", None));
        assert!(received.head.starts_with("post /v1/deploy "), "{}", received.head);
        assert!(received.head.contains("authorization: bearer secret"), "{}", received.head);
        let boundary = received
            .head
            .lines()
            .find_map(|l| l.strip_prefix("content-type: multipart/form-data; boundary="))
            .expect("a multipart content type")
            .trim()
            .to_string();
        let body = received.body;
        let spec_part = format!(
            "--{boundary}\r\ncontent-disposition: form-data; name=\"spec\"\r\ncontent-type: application/json\r\n\r\n{spec}\r\n"
        );
        assert!(
            body.to_ascii_lowercase().starts_with(spec_part.to_lowercase().as_bytes()),
            "{}",
            String::from_utf8_lossy(&body[..300])
        );
        let module_head = format!(
            "--{boundary}\r\ncontent-disposition: form-data; name=\"module\"; filename=\"module.wasm\"\r\ncontent-type: application/wasm\r\n\r\n"
        );
        let lower = body.to_ascii_lowercase();
        let at = lower.windows(module_head.len()).position(|w| w == module_head.as_bytes()).expect("the module part")
            + module_head.len();
        let tail = format!("\r\n--{boundary}--\r\n");
        assert_eq!(&body[at..at + bytes.len()], &bytes[..], "the module's bytes, as they are");
        assert_eq!(&body[at + bytes.len()..], tail.as_bytes());
        assert_eq!(seen.last(), Some(&(bytes.len() as u64, bytes.len() as u64)), "progress reaches the module's size");
        assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "progress only grows");
    }

    #[test]
    fn a_reload_streams_the_module_as_application_wasm_with_its_length() {
        let dir = std::env::temp_dir().join(format!("sluice-api-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let module = dir.join("function.wasm");
        std::fs::write(&module, b"\0asm-not-really").unwrap();
        let (url, server) =
            answer_once(200, &format!(r#"{{"applied":"reloaded","superseded":null,{}"#, &summary_json("p")[1..]));
        let change = AdminClient::new(&url, None).reload("p", &module, &mut |_, _| {}).unwrap();
        let received = server.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!((change.applied, change.superseded, change.pipeline.revision), (Applied::Reloaded, None, 1));
        assert!(received.head.starts_with("post /v1/pipelines/p/reload "), "{}", received.head);
        assert!(received.head.contains("content-type: application/wasm"), "{}", received.head);
        assert!(received.head.contains("content-length: 15"), "{}", received.head);
        assert_eq!(received.body, b"\0asm-not-really");
    }

    #[test]
    fn a_rollback_to_the_previous_version_sends_an_empty_object() {
        let body = format!(r#"{{"applied":"reloaded","superseded":null,{}"#, &summary_json("p")[1..]);
        let (url, server) = answer_once(200, &body);
        AdminClient::new(&url, None).rollback("p", None).unwrap();
        let sent = |body: Vec<u8>| serde_json::from_slice::<serde_json::Value>(&body).unwrap();
        assert_eq!(sent(server.join().unwrap().body), serde_json::json!({}));
        let (url, server) = answer_once(200, &body);
        AdminClient::new(&url, None).rollback("p", Some(4)).unwrap();
        assert_eq!(sent(server.join().unwrap().body), serde_json::json!({ "revision": 4 }));
    }
}
