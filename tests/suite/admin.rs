//! The admin API and the module registry behind it, called through the router without a socket:
//! uploads are checked before they are stored, errors are JSON with stable codes, tokens guard
//! every call by role, calls on pipelines refuse what they cannot do before touching Kafka, a
//! call has a time limit, and the registry on disk survives restarts and interrupted writes.
//! The OpenAPI document lists every route of the router, and real answers fit its schemas.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use serde_json::{Value, json};
use sluice::admin::{self, AdminConfig, ConnectionLimits, MAX_JSON_BODY_BYTES};
use sluice::engine::{Limits, ModuleDigest};
use sluice::kafka::KafkaConfig;
use sluice::manager::{ManagerConfig, PipelineManager};
use sluice::registry::pipelines::{DesiredState, PipelineRecord, PipelineStore};
use sluice::registry::{MODULES_DIR, ModuleInfo, ModuleRegistry};
use sluice_tests::fixtures::engine;
use sluice_tests::guests;
use sluice_tests::process::sluice_binary;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tower::ServiceExt as _;

/// A token made up for this test run, never a fixed secret.
fn token(role: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{role}-{:x}-{nanos:x}", std::process::id())
}

/// A broker address nothing listens on: the calls tested here fail before a pipeline would
/// contact Kafka.
const NO_BROKER: &str = "127.0.0.1:1";

/// An admin API on a fresh pipeline manager in a temporary data directory.
struct Api {
    router: Router,
    manager: PipelineManager,
    data_dir: tempfile::TempDir,
}

impl Api {
    async fn new(config: AdminConfig) -> Api {
        Api::with_limits(Limits::default(), config).await
    }

    async fn with_limits(limits: Limits, config: AdminConfig) -> Api {
        let data_dir = tempfile::tempdir().unwrap();
        let manager_config =
            ManagerConfig { limits, ..ManagerConfig::new(data_dir.path(), KafkaConfig::new(NO_BROKER)) };
        Api::on(data_dir, manager_config, config).await
    }

    /// An admin API on a manager opened on `data_dir` (which may hold pipelines already).
    async fn on(data_dir: tempfile::TempDir, manager: ManagerConfig, config: AdminConfig) -> Api {
        let manager = PipelineManager::open(manager).await.unwrap();
        Api { router: admin::router(manager.clone(), config), manager, data_dir }
    }

    async fn open() -> Api {
        Api::new(AdminConfig::default()).await
    }

    /// Sends `request`; returns the status, the headers and the body.
    async fn send(&self, request: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let bytes = axum::body::to_bytes(response.into_body(), 4 << 20).await.unwrap();
        (status, headers, bytes)
    }

    /// Calls `method uri` with `body` and its `content_type` when given, with
    /// `Authorization: Bearer <token>` when given. Returns the status and the JSON body (`null`
    /// when empty).
    async fn request(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let (status, _, bytes) = self.send(request.body(Body::from(body)).unwrap()).await;
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
        };
        (status, json)
    }

    /// Calls `method uri` with `body` and no content type.
    async fn call(&self, method: Method, uri: &str, token: Option<&str>, body: Vec<u8>) -> (StatusCode, Value) {
        self.request(method, uri, token, None, body).await
    }

    /// Calls `method uri` with `body` as `application/json`.
    async fn call_json(&self, method: Method, uri: &str, token: Option<&str>, body: &Value) -> (StatusCode, Value) {
        self.request(method, uri, token, Some("application/json"), body.to_string().into_bytes()).await
    }

    async fn upload(&self, token: Option<&str>, bytes: Vec<u8>) -> (StatusCode, Value) {
        self.call(Method::POST, "/v1/modules", token, bytes).await
    }

    async fn get(&self, uri: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::GET, uri, token, Vec::new()).await
    }

    /// `GET uri` as text, with its content type.
    async fn get_text(&self, uri: &str, token: Option<&str>) -> (StatusCode, String, String) {
        let mut request = Request::builder().uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let (status, headers, bytes) = self.send(request.body(Body::empty()).unwrap()).await;
        let content_type = headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_string());
        (status, content_type.unwrap_or_default(), String::from_utf8(bytes.to_vec()).unwrap())
    }

    /// `POST /v1/deploy` with a multipart form of `parts`.
    async fn deploy(&self, token: Option<&str>, parts: &[Part<'_>]) -> (StatusCode, Value) {
        let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
        self.request(Method::POST, "/v1/deploy", token, Some(&content_type), multipart(parts)).await
    }

    fn modules_dir(&self) -> std::path::PathBuf {
        self.data_dir.path().join(MODULES_DIR)
    }

    /// The modules in the registry, asked of the manager rather than the API.
    async fn stored_modules(&self) -> Vec<ModuleInfo> {
        self.manager.registry().list().await.unwrap()
    }

    /// The pipelines as `GET /v1/pipelines` lists them.
    async fn pipelines(&self, token: Option<&str>) -> Vec<Value> {
        let (status, list) = self.get("/v1/pipelines", token).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        list["pipelines"].as_array().unwrap_or_else(|| panic!("no pipeline list: {list}")).clone()
    }
}

fn passthrough() -> Vec<u8> {
    guests::component_bytes("passthrough")
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_else(|| panic!("not an error body: {body}"))
}

fn error_message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_else(|| panic!("not an error body: {body}"))
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

/// The digest of a module that was never uploaded.
fn unknown_digest() -> String {
    ModuleDigest::of(b"never uploaded").to_string()
}

/// A valid spec of pipeline `name` running `module`.
fn spec(name: &str, module: &str) -> Value {
    json!({
        "name": name,
        "inputs": [format!("{name}.in")],
        "outputs": {"default": format!("{name}.out")},
        "module": module,
    })
}

/// The boundary of the multipart forms built here.
const BOUNDARY: &str = "sluice-test-boundary-5f3a9c";

/// One part of a multipart form: its name, content type and bytes.
type Part<'a> = (&'a str, &'a str, &'a [u8]);

/// A `multipart/form-data` body of `parts`, separated by [`BOUNDARY`].
fn multipart(parts: &[Part<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, content_type, bytes) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n").as_bytes());
        body.extend_from_slice(format!("Content-Type: {content_type}\r\n\r\n").as_bytes());
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

// Modules.

#[tokio::test]
async fn uploaded_component_is_described_and_listed_by_digest() {
    let api = Api::open().await;
    let bytes = passthrough();
    let digest = ModuleDigest::of(&bytes).to_string();

    let (status, info) = api.upload(None, bytes.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{info}");
    assert_eq!(info["digest"], digest.as_str());
    assert_eq!(info["size"], bytes.len() as u64);
    assert!(info["uploaded_at"].as_u64().unwrap() > 1_600_000_000, "{info}");
    assert_eq!(info["exports"], "process", "the processor world exports one function");

    // Described with the pipelines that use it: none.
    let mut detail = info.clone();
    detail["used_by"] = json!([]);
    let (status, described) = api.get(&format!("/v1/modules/{digest}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(described, detail);
    let hex = digest.trim_start_matches("sha256:");
    let (status, by_hex) = api.get(&format!("/v1/modules/{hex}"), None).await;
    assert_eq!((status, by_hex), (StatusCode::OK, detail));

    let (status, list) = api.get("/v1/modules", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["modules"], Value::Array(vec![info]));
    assert_eq!(files_in(&api.modules_dir()), vec![format!("{hex}.json"), format!("{hex}.wasm")]);
}

#[tokio::test]
async fn uploading_the_same_module_again_changes_nothing() {
    let api = Api::open().await;
    let (first_status, first) = api.upload(None, passthrough()).await;
    let (again_status, again) = api.upload(None, passthrough()).await;
    assert_eq!((first_status, again_status), (StatusCode::CREATED, StatusCode::OK));
    assert_eq!(first, again);
    let (_, list) = api.get("/v1/modules", None).await;
    assert_eq!(list["modules"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn random_bytes_are_refused_with_422_and_not_stored() {
    let api = Api::open().await;
    let (status, body) = api.upload(None, b"these bytes are not a component".to_vec()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_code(&body), "invalid_module");
    let message = error_message(&body);
    assert!(message.contains("not WebAssembly"), "{message}");
    assert!(message.contains("sha256:"), "the message names the module digest: {message}");
    let (_, list) = api.get("/v1/modules", None).await;
    assert_eq!(list["modules"], Value::Array(vec![]));
    assert_eq!(files_in(&api.modules_dir()), Vec::<String>::new());
}

#[tokio::test]
async fn corrupt_component_is_refused_with_the_validators_reason() {
    let api = Api::open().await;
    let mut bytes = passthrough();
    bytes.truncate(bytes.len() / 2);
    let (status, body) = api.upload(None, bytes).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_module"));
    assert!(error_message(&body).contains("is not a valid component"), "{body}");
}

#[tokio::test]
async fn upload_over_the_module_size_limit_is_refused_with_413() {
    let api = Api::with_limits(Limits { max_module_bytes: 1024, ..Limits::default() }, AdminConfig::default()).await;
    let (status, body) = api.upload(None, passthrough()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::PAYLOAD_TOO_LARGE, "module_too_large"));
    assert!(error_message(&body).contains("1024 byte limit"), "{body}");
    assert_eq!(files_in(&api.modules_dir()), Vec::<String>::new());
}

#[tokio::test]
async fn unknown_digest_is_404() {
    let api = Api::open().await;
    let digest = unknown_digest();
    let (status, body) = api.get(&format!("/v1/modules/{digest}"), None).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "module_not_found"));
    assert!(error_message(&body).contains(&digest), "{body}");
    let (status, body) = api.call(Method::DELETE, &format!("/v1/modules/{digest}"), None, Vec::new()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "module_not_found"));
}

#[tokio::test]
async fn malformed_digest_is_400() {
    let api = Api::open().await;
    for digest in ["abc", "sha256:xyz", "md5:0123"] {
        let (status, body) = api.get(&format!("/v1/modules/{digest}"), None).await;
        assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "malformed_digest"), "{digest}");
    }
}

#[tokio::test]
async fn deleted_module_is_gone_from_the_registry_and_the_disk() {
    let api = Api::open().await;
    let (_, info) = api.upload(None, passthrough()).await;
    let uri = format!("/v1/modules/{}", info["digest"].as_str().unwrap());
    let (status, detail) = api.get(&uri, None).await;
    assert_eq!((status, &detail["used_by"]), (StatusCode::OK, &json!([])), "no pipeline uses the module");
    let (status, body) = api.call(Method::DELETE, &uri, None, Vec::new()).await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    assert_eq!(api.get(&uri, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.stored_modules().await, Vec::new());
    assert_eq!(files_in(&api.modules_dir()), Vec::<String>::new());
}

#[tokio::test]
async fn unknown_endpoint_and_wrong_method_answer_json_errors() {
    let api = Api::open().await;
    let (status, body) = api.get("/v1/nothing-here", None).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "no_such_endpoint"));
    let (status, body) = api.call(Method::PUT, "/v1/modules", None, Vec::new()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
    let (status, body) = api.call(Method::POST, "/v1/pipelines", None, Vec::new()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
}

// Tokens.

/// An API with both tokens, and the tokens.
async fn guarded() -> (Api, String, String) {
    let (read, admin) = (token("read"), token("admin"));
    let config =
        AdminConfig { read_token: Some(read.clone()), admin_token: Some(admin.clone()), ..AdminConfig::default() };
    (Api::new(config).await, read, admin)
}

#[tokio::test]
async fn probes_answer_without_a_token() {
    let (api, _, _) = guarded().await;
    assert_eq!(api.get("/healthz", None).await, (StatusCode::OK, json!({"status": "ok"})));
    assert_eq!(api.get("/readyz", None).await, (StatusCode::OK, json!({"status": "ready"})));
}

#[tokio::test]
async fn call_without_a_token_is_401_when_tokens_are_configured() {
    let (api, _, _) = guarded().await;
    let (status, body) = api.get("/v1/modules", None).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNAUTHORIZED, "missing_token"));
    let (status, body) = api.upload(None, passthrough()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNAUTHORIZED, "missing_token"));
}

#[tokio::test]
async fn call_with_a_wrong_token_is_401() {
    let (api, read, admin) = guarded().await;
    for wrong in [format!("{read}x"), admin[..admin.len() - 1].to_string(), token("guess")] {
        let (status, body) = api.get("/v1/modules", Some(&wrong)).await;
        assert_eq!((status, error_code(&body)), (StatusCode::UNAUTHORIZED, "invalid_token"));
    }
    let (status, body) = api.upload(Some(&token("guess")), passthrough()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNAUTHORIZED, "invalid_token"));
}

#[tokio::test]
async fn read_token_may_read_but_not_change_anything() {
    let (api, read, admin) = guarded().await;
    let (status, info) = api.upload(Some(&admin), passthrough()).await;
    assert_eq!(status, StatusCode::CREATED);
    let uri = format!("/v1/modules/{}", info["digest"].as_str().unwrap());

    assert_eq!(api.get("/v1/modules", Some(&read)).await.0, StatusCode::OK);
    assert_eq!(api.get(&uri, Some(&read)).await.0, StatusCode::OK);

    let (status, body) = api.upload(Some(&read), passthrough()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    let (status, body) = api.call(Method::DELETE, &uri, Some(&read), Vec::new()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    assert_eq!(api.get(&uri, Some(&read)).await.0, StatusCode::OK, "the module is still there");
}

#[tokio::test]
async fn admin_token_may_upload_read_and_delete() {
    let (api, _, admin) = guarded().await;
    let (status, info) = api.upload(Some(&admin), passthrough()).await;
    assert_eq!(status, StatusCode::CREATED, "{info}");
    assert_eq!(api.upload(Some(&admin), passthrough()).await.0, StatusCode::OK);
    let uri = format!("/v1/modules/{}", info["digest"].as_str().unwrap());
    let (status, described) = api.get(&uri, Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(described["digest"], info["digest"], "{described}");
    assert_eq!(api.call(Method::DELETE, &uri, Some(&admin), Vec::new()).await.0, StatusCode::NO_CONTENT);
}

/// Every call that changes a pipeline, each with a body it would accept: method, path,
/// content type and body. The pipeline `p` does not exist.
fn pipeline_changes() -> Vec<(Method, String, Option<String>, Vec<u8>)> {
    let json = |value: Value| (Some("application/json".to_string()), value.to_string().into_bytes());
    let digest = unknown_digest();
    let form = multipart(&[
        ("spec", "application/json", spec("p", &digest).to_string().as_bytes()),
        ("module", "application/wasm", &passthrough()),
    ]);
    let (spec_type, spec_body) = json(spec("p", &digest));
    let (reload_type, reload_body) = json(json!({"module": digest}));
    let (rollback_type, rollback_body) = json(json!({}));
    let (offsets_type, offsets_body) = json(json!({"reset": "earliest"}));
    vec![
        (Method::PUT, "/v1/pipelines/p".into(), spec_type, spec_body),
        (Method::DELETE, "/v1/pipelines/p".into(), None, Vec::new()),
        (Method::POST, "/v1/pipelines/p/pause".into(), None, Vec::new()),
        (Method::POST, "/v1/pipelines/p/resume".into(), None, Vec::new()),
        (Method::POST, "/v1/pipelines/p/reload".into(), reload_type, reload_body),
        (Method::POST, "/v1/pipelines/p/reload".into(), Some("application/wasm".into()), passthrough()),
        (Method::POST, "/v1/pipelines/p/rollback".into(), rollback_type, rollback_body),
        (Method::POST, "/v1/pipelines/p/offsets".into(), offsets_type, offsets_body),
        (Method::POST, "/v1/deploy".into(), Some(format!("multipart/form-data; boundary={BOUNDARY}")), form),
    ]
}

#[tokio::test]
async fn pipeline_calls_without_a_token_or_with_a_wrong_one_are_401() {
    let (api, read, admin) = guarded().await;
    let reads = [(Method::GET, "/v1/pipelines".to_string()), (Method::GET, "/v1/pipelines/p".to_string())];
    let changes = pipeline_changes();
    let calls = reads.into_iter().map(|(m, u)| (m, u, None, Vec::new())).chain(changes);
    for (method, uri, content_type, body) in calls {
        let call = format!("{method} {uri}");
        let (status, error) = api.request(method.clone(), &uri, None, content_type.as_deref(), body.clone()).await;
        assert_eq!((status, error_code(&error)), (StatusCode::UNAUTHORIZED, "missing_token"), "{call}");
        for wrong in [format!("{read}x"), format!("{admin}x"), token("guess")] {
            let (status, error) =
                api.request(method.clone(), &uri, Some(&wrong), content_type.as_deref(), body.clone()).await;
            assert_eq!((status, error_code(&error)), (StatusCode::UNAUTHORIZED, "invalid_token"), "{call}");
        }
    }
    assert_eq!(api.stored_modules().await, Vec::new(), "no call stored a module");
}

#[tokio::test]
async fn read_token_may_read_pipelines_and_metrics_but_not_change_pipelines() {
    let (api, read, admin) = guarded().await;
    assert_eq!(api.get("/v1/pipelines", Some(&read)).await, (StatusCode::OK, json!({"pipelines": []})));
    let (status, _, text) = api.get_text("/metrics", Some(&read)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains("sluice_engine_instances"), "{text}");
    // Past the token check, to the manager: the pipeline does not exist.
    let (status, error) = api.get("/v1/pipelines/p", Some(&read)).await;
    assert_eq!((status, error_code(&error)), (StatusCode::NOT_FOUND, "pipeline_not_found"));

    for (method, uri, content_type, body) in pipeline_changes() {
        let call = format!("{method} {uri}");
        let (status, error) = api.request(method, &uri, Some(&read), content_type.as_deref(), body).await;
        assert_eq!((status, error_code(&error)), (StatusCode::FORBIDDEN, "forbidden"), "{call}: {error}");
        assert!(error_message(&error).contains("admin token"), "{call}: {error}");
    }
    assert_eq!(api.pipelines(Some(&admin)).await, Vec::<Value>::new(), "no pipeline was created");
    assert_eq!(api.stored_modules().await, Vec::new(), "no module was stored");
}

#[tokio::test]
async fn probes_and_the_openapi_document_need_no_token() {
    let (api, _, _) = guarded().await;
    assert_eq!(api.get("/healthz", None).await.0, StatusCode::OK);
    assert_eq!(api.get("/readyz", None).await.0, StatusCode::OK);
    let (status, content_type, text) = api.get_text("/v1/openapi.json", None).await;
    assert_eq!((status, content_type.as_str()), (StatusCode::OK, "application/json"));
    let document: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    // Everything else needs one.
    assert_eq!(api.get_text("/metrics", None).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_console_is_served_without_a_token_and_its_api_calls_still_need_one() {
    let (api, read, _) = guarded().await;
    let (status, content_type, page) = api.get_text("/ui", None).await;
    assert_eq!((status, content_type.as_str()), (StatusCode::OK, "text/html; charset=utf-8"));
    assert!(page.contains(r#"<script src="/ui/console.js""#), "{page}");
    for (asset, kind) in [("/ui/console.js", "text/javascript"), ("/ui/console.css", "text/css")] {
        let (status, content_type, body) = api.get_text(asset, None).await;
        assert_eq!(status, StatusCode::OK, "{asset}");
        assert!(content_type.starts_with(kind), "{asset}: {content_type}");
        assert!(!body.is_empty(), "{asset}");
    }
    // The page holds no data: what it shows comes from the API, with the token signed in with.
    assert_eq!(api.get("/v1/pipelines", None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(api.get("/v1/pipelines", Some(&read)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_console_allows_only_its_own_origin_and_the_root_leads_to_it() {
    let api = Api::open().await;
    let (status, headers, _) = api.send(Request::builder().uri("/ui").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let policy = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert_eq!(policy, admin::console::CONTENT_SECURITY_POLICY);
    for directive in ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"] {
        assert!(policy.contains(directive), "{directive} in {policy}");
    }
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let (status, headers, _) = api.send(Request::builder().uri("/").body(Body::empty()).unwrap()).await;
    assert!(status.is_redirection(), "{status}");
    assert_eq!(headers[header::LOCATION], "/ui");
}

// Pipelines: calls refused before anything reaches Kafka.

#[tokio::test]
async fn a_fresh_runtime_lists_no_pipelines() {
    let api = Api::open().await;
    assert_eq!(api.get("/v1/pipelines", None).await, (StatusCode::OK, json!({"pipelines": []})));
}

#[tokio::test]
async fn every_call_on_an_unknown_pipeline_is_404_naming_it() {
    let api = Api::open().await;
    let name = "no-such-pipeline";
    let digest = unknown_digest();
    let calls: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/v1/pipelines/{name}"), None),
        (Method::DELETE, format!("/v1/pipelines/{name}"), None),
        (Method::POST, format!("/v1/pipelines/{name}/pause"), None),
        (Method::POST, format!("/v1/pipelines/{name}/resume"), None),
        (Method::POST, format!("/v1/pipelines/{name}/rollback"), None),
        (Method::POST, format!("/v1/pipelines/{name}/rollback"), Some(json!({}))),
        (Method::POST, format!("/v1/pipelines/{name}/rollback"), Some(json!({"revision": 1}))),
        (Method::POST, format!("/v1/pipelines/{name}/reload"), Some(json!({"module": digest}))),
        (Method::POST, format!("/v1/pipelines/{name}/offsets"), Some(json!({"reset": "latest"}))),
        (
            Method::POST,
            format!("/v1/pipelines/{name}/offsets"),
            Some(json!({"reset": {"timestamp": 1_700_000_000_000_i64}})),
        ),
        (Method::POST, format!("/v1/pipelines/{name}/offsets"), Some(json!({"reset": {"offsets": {"t": {"0": 5}}}}))),
    ];
    for (method, uri, body) in calls {
        let call = format!("{method} {uri} {body:?}");
        let (status, error) = match &body {
            Some(body) => api.call_json(method, &uri, None, body).await,
            None => api.call(method, &uri, None, Vec::new()).await,
        };
        assert_eq!((status, error_code(&error)), (StatusCode::NOT_FOUND, "pipeline_not_found"), "{call}: {error}");
        assert!(error_message(&error).contains(name), "{call}: the message names the pipeline: {error}");
    }
}

#[tokio::test]
async fn reload_of_an_unknown_pipeline_with_module_bytes_is_404_and_stores_nothing() {
    let api = Api::open().await;
    for bytes in [b"these bytes are not a component".to_vec(), passthrough()] {
        let (status, error) =
            api.request(Method::POST, "/v1/pipelines/ghost/reload", None, Some("application/wasm"), bytes).await;
        assert_eq!((status, error_code(&error)), (StatusCode::NOT_FOUND, "pipeline_not_found"), "{error}");
        assert!(error_message(&error).contains("ghost"), "{error}");
    }
    assert_eq!(api.stored_modules().await, Vec::new());
    assert_eq!(files_in(&api.modules_dir()), Vec::<String>::new());
}

#[tokio::test]
async fn pipeline_bodies_that_cannot_be_read_are_invalid_json() {
    let api = Api::open().await;
    let (status, error) = api
        .request(Method::POST, "/v1/pipelines/p/rollback", None, Some("application/json"), b"{\"revision\":".to_vec())
        .await;
    assert_eq!((status, error_code(&error)), (StatusCode::BAD_REQUEST, "invalid_json"), "{error}");
    let (status, error) = api.call_json(Method::POST, "/v1/pipelines/p/rollback", None, &json!({"to": 1})).await;
    assert_eq!((status, error_code(&error)), (StatusCode::BAD_REQUEST, "invalid_json"), "{error}");
    assert!(error_message(&error).contains("to"), "{error}");
    let (status, error) = api.call_json(Method::POST, "/v1/pipelines/p/reload", None, &json!({})).await;
    assert_eq!((status, error_code(&error)), (StatusCode::BAD_REQUEST, "invalid_json"), "{error}");
    assert!(error_message(&error).contains("module"), "{error}");
    let (status, error) =
        api.call_json(Method::POST, "/v1/pipelines/p/offsets", None, &json!({"reset": "sideways"})).await;
    assert_eq!((status, error_code(&error)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_json"), "{error}");
    let body = json!({"reset": "earliest"}).to_string().into_bytes();
    let (status, error) = api.call(Method::POST, "/v1/pipelines/p/offsets", None, body).await;
    assert_eq!((status, error_code(&error)), (StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_json"), "{error}");
}

#[tokio::test]
async fn malformed_spec_json_is_400() {
    let api = Api::open().await;
    let (status, error) = api
        .request(Method::PUT, "/v1/pipelines/x", None, Some("application/json"), b"{\"name\": \"x\",".to_vec())
        .await;
    assert_eq!((status, error_code(&error)), (StatusCode::BAD_REQUEST, "invalid_json"), "{error}");
    assert_eq!(api.pipelines(None).await, Vec::<Value>::new());
}

#[tokio::test]
async fn spec_without_a_json_content_type_is_415() {
    let api = Api::open().await;
    let body = spec("x", &unknown_digest()).to_string().into_bytes();
    let (status, error) = api.call(Method::PUT, "/v1/pipelines/x", None, body.clone()).await;
    assert_eq!((status, error_code(&error)), (StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_json"), "{error}");
    let (status, error) = api.request(Method::PUT, "/v1/pipelines/x", None, Some("text/plain"), body).await;
    assert_eq!((status, error_code(&error)), (StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_json"), "{error}");
}

#[tokio::test]
async fn spec_with_an_unknown_or_a_missing_field_is_422_naming_it() {
    let api = Api::open().await;
    let mut unknown = spec("x", &unknown_digest());
    unknown["batch_size"] = json!(10);
    let mut unknown_setting = spec("x", &unknown_digest());
    unknown_setting["processing"] = json!({"batch_size": 10, "lingering": 5});
    let mut missing = spec("x", &unknown_digest());
    missing.as_object_mut().unwrap().remove("inputs");
    let mut missing_module = spec("x", &unknown_digest());
    missing_module.as_object_mut().unwrap().remove("module");
    for (body, field) in
        [(unknown, "batch_size"), (unknown_setting, "lingering"), (missing, "inputs"), (missing_module, "module")]
    {
        let (status, error) = api.call_json(Method::PUT, "/v1/pipelines/x", None, &body).await;
        assert_eq!((status, error_code(&error)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec"), "{body}: {error}");
        assert!(error_message(&error).contains(&format!("`{field}`")), "names {field}: {error}");
    }
    assert_eq!(api.pipelines(None).await, Vec::<Value>::new());
}

#[tokio::test]
async fn spec_naming_another_pipeline_than_the_path_is_422() {
    let api = Api::open().await;
    let (status, error) = api.call_json(Method::PUT, "/v1/pipelines/x", None, &spec("y", &unknown_digest())).await;
    assert_eq!((status, error_code(&error)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec"), "{error}");
    let message = error_message(&error);
    assert!(message.contains("\"x\"") && message.contains("\"y\""), "names both: {message}");
    assert_eq!(api.pipelines(None).await, Vec::<Value>::new());
}

#[tokio::test]
async fn spec_that_cannot_run_is_422_and_creates_nothing() {
    let api = Api::open().await;
    let mut no_default = spec("x", &unknown_digest());
    no_default["outputs"] = json!({"alerts": "x.alerts"});
    let mut loops = spec("x", &unknown_digest());
    loops["outputs"] = json!({"default": "x.in"});
    let mut empty_batch = spec("x", &unknown_digest());
    empty_batch["processing"] = json!({"batch_size": 0});
    let cases = [
        ("/v1/pipelines/x", no_default, "`default`"),
        ("/v1/pipelines/x", loops, "loop forever"),
        ("/v1/pipelines/x", empty_batch, "batch_size"),
    ];
    for (uri, body, reason) in cases {
        let (status, error) = api.call_json(Method::PUT, uri, None, &body).await;
        assert_eq!((status, error_code(&error)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec"), "{body}: {error}");
        assert!(error_message(&error).contains(reason), "{reason}: {error}");
    }
    // A name that is not allowed, from the path (the body names none).
    for name in ["bad!name", &"n".repeat(65)] {
        let mut body = spec(name, &unknown_digest());
        body.as_object_mut().unwrap().remove("name");
        let (status, error) = api.call_json(Method::PUT, &format!("/v1/pipelines/{name}"), None, &body).await;
        assert_eq!((status, error_code(&error)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec"), "{name}: {error}");
        assert!(error_message(&error).contains("the name must be"), "{error}");
    }
    assert_eq!(api.pipelines(None).await, Vec::<Value>::new());
}

#[tokio::test]
async fn spec_running_a_module_not_in_the_registry_is_404() {
    let api = Api::open().await;
    let digest = unknown_digest();
    let (status, error) = api.call_json(Method::PUT, "/v1/pipelines/x", None, &spec("x", &digest)).await;
    assert_eq!((status, error_code(&error)), (StatusCode::NOT_FOUND, "module_not_found"), "{error}");
    assert!(error_message(&error).contains(&digest), "names the module: {error}");
    assert_eq!(api.pipelines(None).await, Vec::<Value>::new());
}

#[tokio::test]
async fn spec_whose_module_is_not_a_digest_is_422_naming_the_module() {
    let api = Api::open().await;
    let digest = unknown_digest();
    let hex = digest.trim_start_matches("sha256:");
    for module in ["f.wasm", "sha256:xyz", "md5:0123", hex, &format!("{digest}0"), ""] {
        let (status, error) = api.call_json(Method::PUT, "/v1/pipelines/x", None, &spec("x", module)).await;
        assert_eq!(
            (status, error_code(&error)),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec"),
            "{module}: {error}"
        );
        let message = error_message(&error);
        assert!(
            message.contains("module: ") && message.contains("expected sha256:<64 hex digits>"),
            "{module}: {message}"
        );
    }
    let (status, error) = api.call_json(Method::PUT, "/v1/pipelines/x", None, &json!({"module": 7})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert!(error_message(&error).contains("module: invalid type"), "{error}");
    assert_eq!(api.pipelines(None).await, Vec::<Value>::new());
}

#[tokio::test]
async fn json_body_over_the_limit_is_413() {
    let api = Api::open().await;
    let padding = "p".repeat(MAX_JSON_BODY_BYTES);
    let mut spec = spec("x", &unknown_digest());
    spec["config"] = json!({"padding": padding});
    let calls = [
        (Method::PUT, "/v1/pipelines/x", spec),
        (Method::POST, "/v1/pipelines/x/rollback", json!({"revision": 1, "padding": padding})),
        (Method::POST, "/v1/pipelines/x/offsets", json!({"reset": "earliest", "padding": padding})),
    ];
    for (method, uri, body) in calls {
        let call = format!("{method} {uri}");
        let (status, error) = api.call_json(method, uri, None, &body).await;
        assert_eq!((status, error_code(&error)), (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"), "{call}: {error}");
        let message = error_message(&error);
        assert!(message.contains(&MAX_JSON_BODY_BYTES.to_string()), "{call}: names the limit: {message}");
        assert!(!message.contains("module"), "{call}: a JSON body is not a module: {message}");
    }
    assert_eq!(api.pipelines(None).await, Vec::<Value>::new());
}

// Deploy.

#[tokio::test]
async fn deploy_that_is_not_a_multipart_form_is_400() {
    let api = Api::open().await;
    let body = spec("x", &unknown_digest());
    let (status, error) = api.call_json(Method::POST, "/v1/deploy", None, &body).await;
    assert_eq!((status, error_code(&error)), (StatusCode::BAD_REQUEST, "invalid_multipart"), "{error}");
    let (status, error) = api.call(Method::POST, "/v1/deploy", None, passthrough()).await;
    assert_eq!((status, error_code(&error)), (StatusCode::BAD_REQUEST, "invalid_multipart"), "{error}");
    assert_eq!(api.stored_modules().await, Vec::new());
}

#[tokio::test]
async fn deploy_without_its_module_or_spec_part_is_400_naming_it() {
    let api = Api::open().await;
    let spec = spec("x", &unknown_digest()).to_string();
    let module = passthrough();
    let (status, error) = api.deploy(None, &[("spec", "application/json", spec.as_bytes())]).await;
    assert_eq!((status, error_code(&error)), (StatusCode::BAD_REQUEST, "invalid_multipart"), "{error}");
    assert!(error_message(&error).contains("`module`"), "{error}");
    let (status, error) = api.deploy(None, &[("module", "application/wasm", &module)]).await;
    assert_eq!((status, error_code(&error)), (StatusCode::BAD_REQUEST, "invalid_multipart"), "{error}");
    assert!(error_message(&error).contains("`spec`"), "{error}");
    let parts = [
        ("spec", "application/json", spec.as_bytes()),
        ("module", "application/wasm", &module),
        ("extra", "text/plain", b"?"),
    ];
    let (status, error) = api.deploy(None, &parts).await;
    assert_eq!((status, error_code(&error)), (StatusCode::BAD_REQUEST, "invalid_multipart"), "{error}");
    assert!(error_message(&error).contains("extra"), "{error}");
    assert_eq!(api.stored_modules().await, Vec::new());
    assert_eq!(api.pipelines(None).await, Vec::<Value>::new());
}

#[tokio::test]
async fn deploy_of_an_invalid_module_is_422_and_stores_nothing() {
    let api = Api::open().await;
    let mut spec = spec("x", "ignored");
    spec.as_object_mut().unwrap().remove("module");
    let spec = spec.to_string();
    let parts = [
        ("spec", "application/json", spec.as_bytes()),
        ("module", "application/wasm", b"these bytes are not a component".as_slice()),
    ];
    let (status, error) = api.deploy(None, &parts).await;
    assert_eq!((status, error_code(&error)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_module"), "{error}");
    assert_eq!(api.get("/v1/modules", None).await, (StatusCode::OK, json!({"modules": []})));
    assert_eq!(files_in(&api.modules_dir()), Vec::<String>::new());
    assert_eq!(api.pipelines(None).await, Vec::<Value>::new());
}

#[tokio::test]
async fn deploy_of_an_invalid_spec_is_422_and_stores_nothing() {
    let api = Api::open().await;
    let module = passthrough();
    let mut no_default = spec("x", "ignored");
    no_default["outputs"] = json!({"alerts": "x.alerts"});
    let no_default = no_default.to_string();
    let mut unknown_field = spec("x", "ignored");
    unknown_field["colour"] = json!("blue");
    let unknown_field = unknown_field.to_string();
    let unnamed = json!({"inputs": ["in"], "outputs": {"default": "out"}}).to_string();
    for (spec, reason) in [
        (no_default.as_str(), "`default`"),
        (unknown_field.as_str(), "`colour`"),
        (unnamed.as_str(), "`name`"),
        ("{", "not JSON"),
    ] {
        let parts = [("spec", "application/json", spec.as_bytes()), ("module", "application/wasm", &module)];
        let (status, error) = api.deploy(None, &parts).await;
        assert_eq!((status, error_code(&error)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec"), "{spec}: {error}");
        assert!(error_message(&error).contains(reason), "{reason}: {error}");
    }
    assert_eq!(api.stored_modules().await, Vec::new(), "the module of a refused deploy is not stored");
    assert_eq!(api.pipelines(None).await, Vec::<Value>::new());
}

// Time limit.

/// Reads one HTTP/1.1 response with a `Content-Length`: its status and JSON body.
async fn read_response(stream: &mut tokio::net::TcpStream) -> (u16, Value) {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before a response: {}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(received[..header_end].to_vec()).unwrap();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("status line: {head}"));
    let length: usize = head
        .lines()
        .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("no content length: {head}"));
    while received.len() < header_end + length {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed within the body");
        received.extend_from_slice(&chunk[..n]);
    }
    (status, serde_json::from_slice(&received[header_end..header_end + length]).unwrap())
}

/// Serves `api`'s router on a free loopback port through the one serving function of
/// `sluice serve` and `sluice dev`, with `limits`. Stops when the returned sender is dropped.
async fn serve_on_socket(api: &Api, limits: ConnectionLimits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(admin::serve(listener, api.router.clone(), limits, async move {
        let _ = stopped.await;
    }));
    (address, stop)
}

/// A bound for a broken server only: every answer or close tested here is due within a second.
const GENEROUS: Duration = Duration::from_secs(60);

/// Reads until the server closes the connection (end of stream or reset); returns what was read.
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return received,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Limits with a short header timeout, for the tests that wait for it.
fn short_header_timeout() -> ConnectionLimits {
    ConnectionLimits { header_read_timeout: Duration::from_millis(300), ..ConnectionLimits::default() }
}

#[tokio::test]
async fn a_call_whose_body_never_ends_is_answered_408() {
    let config = AdminConfig { request_timeout: Duration::from_millis(200), ..AdminConfig::default() };
    let api = Api::new(config).await;
    // Through a socket: the client announces 1000 bytes, sends 4 and keeps the connection open.
    let (address, _stop) = serve_on_socket(&api, ConnectionLimits::default()).await;
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = "POST /v1/modules HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/wasm\r\n\
                Content-Length: 1000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(b"\0asm").await.unwrap();
    // The answer is due after the 200 ms limit.
    let (status, error) = tokio::time::timeout(GENEROUS, read_response(&mut stream)).await.expect("an answer");
    assert_eq!((status, error_code(&error)), (408, "request_timeout"), "{error}");
    assert!(error_message(&error).contains("200ms"), "names the limit: {error}");
    assert_eq!(api.stored_modules().await, Vec::new());
}

#[tokio::test]
async fn a_half_sent_request_head_is_closed_after_the_header_timeout() {
    let api = Api::open().await;
    let (address, _stop) = serve_on_socket(&api, short_header_timeout()).await;
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n").await.unwrap();
    let received = tokio::time::timeout(GENEROUS, read_until_closed(&mut stream)).await.expect("the server closes");
    assert!(!String::from_utf8_lossy(&received).contains("200 OK"), "no answer to half a request");
}

#[tokio::test]
async fn a_request_head_sent_one_line_at_a_time_is_closed_after_the_header_timeout() {
    let api = Api::open().await;
    let (address, _stop) = serve_on_socket(&api, short_header_timeout()).await;
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let closed = tokio::spawn(async move {
        let mut chunk = [0u8; 1024];
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    writer.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    // One header line every 50 ms, each well within the timeout, for as long as the server
    // keeps the connection (at most 1,200 lines: a minute).
    for line in 0..1_200 {
        if closed.is_finished() || writer.write_all(format!("X-Slow-{line}: 1\r\n").as_bytes()).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::timeout(GENEROUS, closed).await.expect("the server closes").unwrap();
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let api = Api::open().await;
    let (address, _stop) = serve_on_socket(&api, short_header_timeout()).await;
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let (status, body) = tokio::time::timeout(GENEROUS, read_response(&mut stream)).await.expect("an answer");
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    // Kept alive, then idle: closed once the next request head is overdue.
    let rest = tokio::time::timeout(GENEROUS, read_until_closed(&mut stream)).await.expect("the server closes");
    assert!(rest.is_empty(), "nothing more is sent: {}", String::from_utf8_lossy(&rest));
}

#[tokio::test]
async fn connections_over_the_cap_wait_until_one_closes() {
    let api = Api::open().await;
    let limits = ConnectionLimits { max_connections: 2, header_read_timeout: GENEROUS };
    let (address, _stop) = serve_on_socket(&api, limits).await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
    // Two connections answered once and kept alive hold both slots.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.write_all(request).await.unwrap();
        let (status, _) = tokio::time::timeout(GENEROUS, read_response(&mut stream)).await.expect("an answer");
        assert_eq!(status, 200);
        held.push(stream);
    }
    let mut third = tokio::net::TcpStream::connect(address).await.unwrap();
    third.write_all(request).await.unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut byte)).await;
    assert!(early.is_err(), "a connection over the cap is not served: {early:?}");
    // One held connection closes: the waiting one is accepted and answered.
    drop(held.remove(0));
    let (status, body) = tokio::time::timeout(GENEROUS, read_response(&mut third)).await.expect("an answer");
    assert_eq!((status, body), (200, json!({"status": "ok"})));
}

// Metrics.

#[tokio::test]
async fn metrics_describe_the_engine_and_count_compiled_modules() {
    let api = Api::open().await;
    let (status, content_type, text) = api.get_text("/metrics", None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    assert!(text.contains("sluice_engine_instances"), "{text}");
    assert!(text.contains("# TYPE sluice_engine_compile_seconds_total counter"), "{text}");
    assert!(text.lines().any(|l| l == "sluice_engine_modules_compiled_total 0"), "{text}");
    assert!(!text.contains("sluice_pipeline_"), "no pipeline, no pipeline metrics: {text}");

    assert_eq!(api.upload(None, passthrough()).await.0, StatusCode::CREATED);
    let (_, _, text) = api.get_text("/metrics", None).await;
    assert!(text.lines().any(|l| l == "sluice_engine_modules_compiled_total 1"), "{text}");
}

// The OpenAPI document.

/// The methods a route may answer, as OpenAPI names them (axum answers `HEAD` on a `GET` route).
const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

/// `path` of the document with its parameters filled in: an unknown digest, a pipeline name.
fn concrete(path: &str) -> String {
    path.replace("{digest}", &unknown_digest()).replace("{name}", "p")
}

/// `value` with a `$ref` followed into the document.
fn resolve<'a>(document: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("a local reference: {reference}"));
            resolve(document, document.pointer(pointer).unwrap_or_else(|| panic!("{reference} resolves")))
        }
        None => value,
    }
}

#[tokio::test]
async fn the_served_openapi_document_lists_every_route_with_its_method_and_role() {
    let (api, read, _) = guarded().await;
    let (status, content_type, text) = api.get_text("/v1/openapi.json", None).await;
    assert_eq!((status, content_type.as_str()), (StatusCode::OK, "application/json"));
    let document: Value = serde_json::from_str(&text).expect("the OpenAPI document is JSON");
    assert_eq!(document, admin::openapi(), "the served document is the generated one");
    assert!(document["openapi"].as_str().is_some_and(|v| v.starts_with("3.1.")), "OpenAPI 3.1");
    assert!(document["info"]["title"].is_string() && document["info"]["version"].is_string());
    assert_eq!(document["components"]["securitySchemes"]["bearerAuth"]["scheme"], "bearer");
    let paths = document["paths"].as_object().expect("paths");
    assert!(paths.len() >= 14, "every route: {:?}", paths.keys());

    let mut operations = 0;
    for (path, item) in paths {
        let uri = concrete(path);
        for method in METHODS {
            let call = format!("{method} {path}");
            let request_method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let Some(operation) = item.get(method) else {
                // Not documented: the router refuses it as a method the path does not have.
                let (status, error) = api.call(request_method, &uri, Some(&read), Vec::new()).await;
                assert_eq!(
                    (status, error_code(&error)),
                    (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
                    "{call}"
                );
                continue;
            };
            operations += 1;
            assert!(operation["operationId"].is_string() && operation["tags"][0].is_string(), "{call}");
            let responses = operation["responses"].as_object().expect("answers");
            assert!(responses.contains_key("408"), "{call}: every call has a time limit");
            // Every `{parameter}` of the path is a required path parameter of the operation.
            for name in path.split('{').skip(1).map(|p| p.split('}').next().unwrap()) {
                let declared = operation["parameters"].as_array().into_iter().flatten().map(|p| resolve(&document, p));
                assert!(
                    declared.clone().any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true),
                    "{call}: the path parameter {name} is not declared"
                );
            }
            // The documented role is the one the router asks for: an admin call refuses the
            // read token, a read call takes it, a call without a role needs no token.
            let role = operation["x-sluice-role"].as_str().unwrap_or_else(|| panic!("{call}: a role"));
            let (token, roles) = match role {
                "none" => (None, json!([])),
                role => (Some(read.as_str()), json!([{"bearerAuth": [role]}])),
            };
            assert_eq!(operation["security"], roles, "{call}");
            let mut request = Request::builder().method(request_method).uri(&uri);
            if let Some(token) = token {
                request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
            }
            let (status, _, bytes) = api.send(request.body(Body::empty()).unwrap()).await;
            // Errors are JSON; metrics are text.
            let answer: Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let code = answer["error"]["code"].as_str().unwrap_or_default();
            assert!(!["no_such_endpoint", "method_not_allowed"].contains(&code), "{call} is routed: {answer}");
            match role {
                "admin" => {
                    assert_eq!((status, code), (StatusCode::FORBIDDEN, "forbidden"), "{call}");
                    assert!(responses.contains_key("401") && responses.contains_key("403"), "{call}");
                }
                "read" => {
                    assert!(!["missing_token", "invalid_token", "forbidden"].contains(&code), "{call}: {answer}");
                    assert!(responses.contains_key("401"), "{call}");
                }
                "none" => assert!(status.is_success(), "{call} answers without a token: {status} {answer}"),
                other => panic!("{call}: unknown role {other}"),
            }
            let description = operation["description"].as_str().unwrap_or_default();
            assert!(description.contains("Role: ") || description.contains("No token needed"), "{call}");
        }
    }
    assert!(operations >= 18, "every operation: {operations}");

    // The error codes of the document are those the API answers with.
    let codes = resolve(&document, &document["components"]["schemas"]["ErrorDetail"]["properties"]["code"]);
    let listed: BTreeSet<&str> = codes["enum"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    let answered: BTreeSet<&str> = admin::error::ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(listed, answered);
}

#[tokio::test]
async fn outside_a_cluster_the_cluster_route_shows_this_node_alone_with_its_pipelines() {
    let data_dir = tempfile::tempdir().unwrap();
    let v1 = seed_module(data_dir.path(), guests::component_bytes("tagged-v1")).await;
    seed_pipeline(data_dir.path(), spec("p", &v1), DesiredState::Paused);
    let manager = ManagerConfig::new(data_dir.path(), KafkaConfig::new(NO_BROKER));
    let api = Api::on(data_dir, manager, AdminConfig::default()).await;
    let (status, body) = api.get("/v1/cluster", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let node = api.manager.node_id();
    assert_eq!((&body["node"], &body["cluster"]), (&json!(node), &json!(false)), "{body}");
    let nodes = body["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 1, "this node alone: {body}");
    assert_eq!(
        (&nodes[0]["node"], &nodes[0]["state"], &nodes[0]["heartbeat"]["left"]),
        (&json!(node), &json!("up"), &json!(false))
    );
    let pipelines = nodes[0]["heartbeat"]["pipelines"].as_array().expect("pipelines");
    assert_eq!(pipelines.len(), 1, "{body}");
    assert_eq!(
        (&pipelines[0]["name"], &pipelines[0]["state"], &pipelines[0]["module"]),
        (&json!("p"), &json!("paused"), &json!(v1))
    );
    assert_eq!(pipelines[0]["partitions"], json!([]), "a paused pipeline owns no partition");
    // The typed client reads the same answer; a pipeline's report has no node shares outside a cluster.
    let view: sluice::api::ClusterView = serde_json::from_value(body).expect("the client's type reads the answer");
    assert!(!view.cluster);
    let (_, report) = api.get("/v1/pipelines/p", None).await;
    assert_eq!(report["nodes"], json!([]), "{report}");
}

/// What is wrong with `value` against `schema` of `document`: a property the schema does not
/// declare, a required one missing, a wrong JSON type or a value out of its enum, recursively.
/// `allOf` parts (flattened structs) are read as one object; `oneOf` needs one fitting part.
fn mismatches(document: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    let schema = resolve(document, schema);
    if let Some(choices) = schema["oneOf"].as_array().or(schema["anyOf"].as_array()) {
        let fitting = choices.iter().filter(|choice| mismatches(document, choice, value, at).is_empty()).count();
        return if fitting >= 1 { Vec::new() } else { vec![format!("{at}: {value} fits none of {choices:?}")] };
    }
    let mut wrong = Vec::new();
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::Array(types) => types.iter().filter_map(Value::as_str).collect(),
            other => vec![other.as_str().unwrap()],
        };
        let kind = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let fits = types.contains(&kind) || (kind == "integer" && types.contains(&"number"));
        if !fits {
            wrong.push(format!("{at}: a {kind}, documented as {types:?}"));
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        wrong.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let Value::Object(object) = value {
        // The object's parts: its `allOf` parts (flattened structs) and itself; of a flattened
        // enum (`oneOf` of objects), the part whose constant fields the value has.
        let fits_constants = |choice: &&Value| {
            choice["properties"].as_object().is_some_and(|properties| {
                properties
                    .iter()
                    .all(|(name, p)| p["enum"].as_array().is_none_or(|allowed| allowed.contains(&object[name])))
            })
        };
        let mut parts = Vec::new();
        for part in schema["allOf"].as_array().into_iter().flatten().map(|p| resolve(document, p)).chain([schema]) {
            match part["oneOf"].as_array() {
                Some(choices) => match choices.iter().map(|c| resolve(document, c)).find(|c| fits_constants(c)) {
                    Some(choice) => parts.push(choice),
                    None => wrong.push(format!("{at}: fits no part of {}", part["oneOf"])),
                },
                None => parts.push(part),
            }
        }
        let mut declared: BTreeMap<&str, &Value> = BTreeMap::new();
        let mut open = false;
        for part in parts {
            declared.extend(part["properties"].as_object().into_iter().flatten().map(|(k, v)| (k.as_str(), v)));
            for required in part["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                if !object.contains_key(required) {
                    wrong.push(format!("{at}: the required {required:?} is missing"));
                }
            }
            let additional = &part["additionalProperties"];
            if additional.is_object() && part["properties"].is_null() {
                // A map: every value fits the schema of its values.
                for (name, item) in object {
                    wrong.extend(mismatches(document, additional, item, &format!("{at}.{name}")));
                }
            }
            open |= additional.is_object() || additional == &Value::Bool(true);
        }
        for (name, item) in object {
            match declared.get(name.as_str()) {
                Some(property) => wrong.extend(mismatches(document, property, item, &format!("{at}.{name}"))),
                None if open => {}
                None => wrong.push(format!("{at}: {name:?} is not declared")),
            }
        }
    }
    if let (Value::Array(items), Some(item)) = (value, schema.get("items")) {
        for (i, element) in items.iter().enumerate() {
            wrong.extend(mismatches(document, item, element, &format!("{at}[{i}]")));
        }
    }
    wrong
}

#[test]
fn the_schema_check_finds_undeclared_and_missing_properties_and_unknown_codes() {
    let document = admin::openapi();
    let error = json!({"$ref": "#/components/schemas/Error"});
    let check = |body: Value| mismatches(&document, &error, &body, "answer").len();
    assert_eq!(check(json!({"error": {"code": "conflict", "message": "m"}})), 0);
    assert_eq!(check(json!({"error": {"code": "conflict", "message": "m", "extra": 1}})), 1);
    assert_eq!(check(json!({"error": {"code": "conflict"}})), 1);
    assert_eq!(check(json!({"error": {"code": "no_such_code", "message": "m"}})), 1);
    assert_eq!(check(json!({"error": {"code": "conflict", "message": 1}})), 1);
}

/// Checks the answer `status`, `body` of the documented operation `method path` against the
/// schema the document gives for that status.
fn check_answer(document: &Value, method: &str, path: &str, status: StatusCode, body: &Value) {
    let call = format!("{method} {path} -> {status}");
    let operation = &document["paths"][path][method];
    assert!(operation.is_object(), "{call}: not documented");
    let response = resolve(document, &operation["responses"][status.as_str()]);
    assert!(response.is_object(), "{call}: this status is not documented: {body}");
    match response["content"]["application/json"]["schema"] {
        Value::Null => assert_eq!(body, &Value::Null, "{call}: documented without a body"),
        ref schema => {
            let wrong = mismatches(document, schema, body, "answer");
            assert!(wrong.is_empty(), "{call}: the answer does not fit its schema:\n{}\n{body:#}", wrong.join("\n"));
        }
    }
}

#[tokio::test]
async fn real_answers_have_the_properties_their_documented_schemas_declare() {
    let document = admin::openapi();
    let data_dir = tempfile::tempdir().unwrap();
    let v1 = seed_module(data_dir.path(), guests::component_bytes("tagged-v1")).await;
    // A paused pipeline: every call below answers without a broker.
    seed_pipeline(data_dir.path(), spec("p", &v1), DesiredState::Paused);
    let manager = ManagerConfig::new(data_dir.path(), KafkaConfig::new(NO_BROKER));
    let api = Api::on(data_dir, manager, AdminConfig::default()).await;
    let check = |method: &str, path: &str, (status, body): (StatusCode, Value)| {
        check_answer(&document, method, path, status, &body);
        body
    };

    let stored = check("post", "/v1/modules", api.upload(None, passthrough()).await);
    check("post", "/v1/modules", api.upload(None, passthrough()).await);
    let digest = stored["digest"].as_str().unwrap().to_string();
    check("get", "/v1/modules", api.get("/v1/modules", None).await);
    check("get", "/v1/modules/{digest}", api.get(&format!("/v1/modules/{v1}"), None).await);
    check("get", "/v1/modules/{digest}", api.get(&format!("/v1/modules/{}", unknown_digest()), None).await);
    check("get", "/v1/modules/{digest}", api.get("/v1/modules/sha256:nothex", None).await);
    check("get", "/v1/pipelines", api.get("/v1/pipelines", None).await);
    check("get", "/v1/pipelines/{name}", api.get("/v1/pipelines/p", None).await);
    check("get", "/v1/pipelines/{name}", api.get("/v1/pipelines/ghost", None).await);
    check("put", "/v1/pipelines/{name}", api.call_json(Method::PUT, "/v1/pipelines/p", None, &spec("p", &v1)).await);
    check("get", "/v1/cluster", api.get("/v1/cluster", None).await);
    let reload = json!({"module": digest});
    check(
        "post",
        "/v1/pipelines/{name}/reload",
        api.call_json(Method::POST, "/v1/pipelines/p/reload", None, &reload).await,
    );
    check(
        "post",
        "/v1/pipelines/{name}/rollback",
        api.call_json(Method::POST, "/v1/pipelines/p/rollback", None, &json!({})).await,
    );
    check(
        "post",
        "/v1/pipelines/{name}/pause",
        api.call(Method::POST, "/v1/pipelines/p/pause", None, Vec::new()).await,
    );
    check(
        "delete",
        "/v1/modules/{digest}",
        api.call(Method::DELETE, &format!("/v1/modules/{v1}"), None, Vec::new()).await,
    );
    check("get", "/healthz", api.get("/healthz", None).await);
    check("get", "/readyz", api.get("/readyz", None).await);
    let report = check("get", "/v1/pipelines/{name}", api.get("/v1/pipelines/p", None).await);
    assert_eq!(report["revisions"].as_array().map(Vec::len), Some(3), "deploy, reload, rollback: {report}");
    check("delete", "/v1/pipelines/{name}", api.call(Method::DELETE, "/v1/pipelines/p", None, Vec::new()).await);
}

// The registry on disk.

#[tokio::test]
async fn registry_survives_reopening_on_the_same_data_dir() {
    let data_dir = tempfile::tempdir().unwrap();
    let bytes = passthrough();
    let stored = ModuleRegistry::open(data_dir.path(), engine()).unwrap().put(bytes.clone().into()).await.unwrap();
    assert!(stored.created);

    let reopened = ModuleRegistry::open(data_dir.path(), engine()).unwrap();
    assert_eq!(reopened.list().await.unwrap(), vec![stored.info.clone()]);
    let (info, stored_bytes) = reopened.get(&stored.info.digest).await.unwrap().expect("module kept");
    assert_eq!((info, stored_bytes), (stored.info, bytes));
}

#[tokio::test]
async fn leftovers_of_an_interrupted_write_are_ignored_and_removed_on_open() {
    let data_dir = tempfile::tempdir().unwrap();
    let registry = ModuleRegistry::open(data_dir.path(), engine()).unwrap();
    let stored = registry.put(passthrough().into()).await.unwrap();
    let dir = registry.dir().to_path_buf();
    let kept = files_in(&dir);

    // A crash while writing another module: its binary renamed in, its metadata still a
    // temporary file.
    let other = ModuleDigest::of(b"interrupted upload");
    std::fs::write(dir.join(format!("{}.wasm", other.hex())), b"\0asm partial").unwrap();
    std::fs::write(dir.join(format!("{}.json.4242-0.tmp", other.hex())), b"{\"digest\":").unwrap();
    assert_eq!(registry.list().await.unwrap(), vec![stored.info.clone()], "leftovers are not modules");
    assert!(registry.get(&other.to_string()).await.unwrap().is_none());

    let reopened = ModuleRegistry::open(data_dir.path(), engine()).unwrap();
    assert_eq!(files_in(&dir), kept, "leftovers are removed");
    assert_eq!(reopened.list().await.unwrap(), vec![stored.info]);
}

#[tokio::test]
async fn concurrent_uploads_of_one_module_store_it_once() {
    let data_dir = tempfile::tempdir().unwrap();
    let registry = ModuleRegistry::open(data_dir.path(), engine()).unwrap();
    let bytes: axum::body::Bytes = passthrough().into();
    let (a, b) = tokio::join!(registry.put(bytes.clone()), registry.put(bytes));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.info, b.info);
    assert!(a.created != b.created, "exactly one upload stores the module: {a:?} {b:?}");
    assert_eq!(registry.list().await.unwrap().len(), 1);
    assert_eq!(files_in(registry.dir()).len(), 2, "one binary and one metadata file");
}

// Hardening: races, secrets, damaged and foreign files on disk, ranges, small protocol points.

/// Stores pipeline `spec` in `state` in the data directory `data_dir`, as a runtime that ran
/// before would have left it.
fn seed_pipeline(data_dir: &Path, spec: Value, state: DesiredState) {
    let mut record = PipelineRecord::new(serde_json::from_value(spec).unwrap());
    record.state = state;
    PipelineStore::open(data_dir).unwrap().save(&record).unwrap();
}

/// Stores `bytes` in the registry of `data_dir`; returns the digest.
async fn seed_module(data_dir: &Path, bytes: Vec<u8>) -> String {
    ModuleRegistry::open(data_dir, engine()).unwrap().put(bytes.into()).await.unwrap().info.digest
}

/// `method uri` with an optional JSON body on `router`, from a task of its own.
async fn status_of(router: &Router, method: Method, uri: String, body: Option<Value>) -> StatusCode {
    let mut request = Request::builder().method(method).uri(uri);
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    router.clone().oneshot(request.body(body).unwrap()).await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_a_module_delete_and_a_deploy_of_that_module_exactly_one_succeeds() {
    let data_dir = tempfile::tempdir().unwrap();
    let v1 = seed_module(data_dir.path(), guests::component_bytes("tagged-v1")).await;
    let v2_bytes = guests::component_bytes("tagged-v2");
    // A paused pipeline: applying a module to it needs no broker. Keeping one version only,
    // its previous module is free to delete again after each round.
    seed_pipeline(data_dir.path(), spec("racer", &v1), DesiredState::Paused);
    let manager =
        ManagerConfig { keep_versions: 1, ..ManagerConfig::new(data_dir.path(), KafkaConfig::new(NO_BROKER)) };
    let api = Api::on(data_dir, manager, AdminConfig::default()).await;
    let mut outcomes = BTreeMap::new();
    for round in 0..40 {
        let (status, stored) = api.upload(None, v2_bytes.clone()).await;
        assert!(status.is_success(), "{stored}");
        let v2 = stored["digest"].as_str().unwrap().to_string();
        let (status, back) = api.call_json(Method::PUT, "/v1/pipelines/racer", None, &spec("racer", &v1)).await;
        assert_eq!(status, StatusCode::OK, "{back}");

        let router = api.router.clone();
        let delete = tokio::spawn({
            let (router, uri) = (router.clone(), format!("/v1/modules/{v2}"));
            async move { status_of(&router, Method::DELETE, uri, None).await }
        });
        let deploy = tokio::spawn({
            let body = spec("racer", &v2);
            async move { status_of(&router, Method::PUT, "/v1/pipelines/racer".into(), Some(body)).await }
        });
        let (deleted, deployed) = (delete.await.unwrap(), deploy.await.unwrap());
        let outcome = match (deleted, deployed) {
            (StatusCode::NO_CONTENT, StatusCode::NOT_FOUND) => "deleted first",
            (StatusCode::CONFLICT, StatusCode::OK) => "deployed first",
            other => panic!("round {round}: delete and deploy answered {other:?}"),
        };
        *outcomes.entry(outcome).or_insert(0) += 1;
        // The pipeline's module is in the registry, whichever won.
        let listed = api.pipelines(None).await;
        let module = listed[0]["module"].as_str().unwrap().to_string();
        let (status, _) = api.get(&format!("/v1/modules/{module}"), None).await;
        assert_eq!(status, StatusCode::OK, "round {round}: the pipeline runs {module}, which is not stored");
    }
    eprintln!("outcomes of 40 rounds: {outcomes:?}");
}

/// A password made up for this test run.
fn password() -> String {
    format!("pw{}", token("cache"))
}

#[tokio::test]
async fn a_cache_password_never_leaves_the_process_in_answers_or_errors() {
    let secret = password();
    // Nothing listens on port 1: the cache cannot be reached.
    let cache = format!("redis://app:{secret}@127.0.0.1:1/0?connect_timeout_ms=200");
    let data_dir = tempfile::tempdir().unwrap();
    let module = seed_module(data_dir.path(), passthrough()).await;
    // A pipeline that should run but cannot reach its cache, and a paused one.
    let mut failing = spec("failing", &module);
    failing["cache"] = cache.clone().into();
    seed_pipeline(data_dir.path(), failing, DesiredState::Running);
    let mut paused = spec("paused", &module);
    paused["cache"] = cache.clone().into();
    seed_pipeline(data_dir.path(), paused, DesiredState::Paused);
    let (read, admin_token) = (token("read"), token("admin"));
    let config = AdminConfig {
        read_token: Some(read.clone()),
        admin_token: Some(admin_token.clone()),
        ..AdminConfig::default()
    };
    let manager = ManagerConfig::new(data_dir.path(), KafkaConfig::new(NO_BROKER));
    let api = Api::on(data_dir, manager, config).await;

    for name in ["failing", "paused"] {
        for token in [&read, &admin_token] {
            let (status, report) = api.get(&format!("/v1/pipelines/{name}"), Some(token)).await;
            assert_eq!(status, StatusCode::OK, "{report}");
            let shown = report.to_string();
            assert!(!shown.contains(&secret), "{name}: the password is in the answer: {shown}");
            assert_eq!(report["spec"]["cache"], "redis://***@127.0.0.1:1/0?connect_timeout_ms=200", "{shown}");
        }
    }
    let (_, report) = api.get("/v1/pipelines/failing", Some(&read)).await;
    assert_eq!(report["state"], "failed", "{report}");
    assert!(
        report["error"].as_str().unwrap().contains("redis://***@127.0.0.1:1"),
        "the error names the cache: {report}"
    );

    // Creating a pipeline on that cache fails with a 422 that names the cache, not its password.
    let mut new = spec("new", &module);
    new["cache"] = cache.clone().into();
    let (status, error) = api.call_json(Method::PUT, "/v1/pipelines/new", Some(&admin_token), &new).await;
    assert_eq!((status, error_code(&error)), (StatusCode::UNPROCESSABLE_ENTITY, "pipeline_start_failed"), "{error}");
    assert!(!error.to_string().contains(&secret) && error_message(&error).contains("***@127.0.0.1:1"), "{error}");
    // A URL the parser refuses is named without its password too.
    new["cache"] = format!("redis://app:{secret}@127.0.0.1:1/0?bogus=1").into();
    let (status, error) = api.call_json(Method::PUT, "/v1/pipelines/new", Some(&admin_token), &new).await;
    assert_eq!((status, error_code(&error)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec"), "{error}");
    assert!(!error.to_string().contains(&secret), "{error}");
    let (_, _, metrics) = api.get_text("/metrics", Some(&read)).await;
    assert!(!metrics.contains(&secret), "{metrics}");
}

/// The stored record of pipeline `name` in `data_dir`, as text.
fn stored_record(data_dir: &Path, name: &str) -> String {
    std::fs::read_to_string(data_dir.join("pipelines").join(format!("{name}.json"))).unwrap()
}

#[tokio::test]
async fn a_bad_cache_url_is_422_naming_the_cache_and_nothing_is_stored_even_for_a_paused_pipeline() {
    let secret = password();
    let data_dir = tempfile::tempdir().unwrap();
    let module = seed_module(data_dir.path(), passthrough()).await;
    // A paused pipeline is updated without starting: before the cache was typed, a bad URL
    // was saved as its spec (and only refused at the next start).
    seed_pipeline(data_dir.path(), spec("paused", &module), DesiredState::Paused);
    let dir = data_dir.path().to_path_buf();
    let before = stored_record(&dir, "paused");
    let manager = ManagerConfig::new(data_dir.path(), KafkaConfig::new(NO_BROKER));
    let api = Api::on(data_dir, manager, AdminConfig::default()).await;
    let bad = [
        (format!("redis://app:{secret}@127.0.0.1:0"), "port \"0\""),
        (format!("redis://app:{secret}@127.0.0.1?pool_size=2"), "unknown setting \"pool_size\""),
        ("127.0.0.1:6379".to_string(), "no scheme"),
        ("memcache://a,a".to_string(), "listed twice"),
        ("memory://?capacity_mb=0".to_string(), "capacity_mb=0 is out of range"),
    ];
    for name in ["paused", "new"] {
        for (url, says) in &bad {
            let mut body = spec(name, &module);
            body["cache"] = url.clone().into();
            let (status, error) = api.call_json(Method::PUT, &format!("/v1/pipelines/{name}"), None, &body).await;
            assert_eq!(
                (status, error_code(&error)),
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec"),
                "{name}, {url}: {error}"
            );
            let message = error_message(&error);
            assert!(message.contains("cache: cache URL") && message.contains(says), "{name}, {url}: {message}");
            assert!(!message.contains(&secret), "{message}");
        }
    }
    assert_eq!(stored_record(&dir, "paused"), before, "the paused pipeline's record is unchanged");
    let listed = api.pipelines(None).await;
    assert_eq!(listed.len(), 1, "no pipeline was created: {listed:?}");
    let (_, report) = api.get("/v1/pipelines/paused", None).await;
    assert_eq!((report["state"].as_str(), &report["spec"]["cache"]), (Some("paused"), &json!("memory://")));
}

#[tokio::test]
async fn a_get_answer_put_back_with_its_hidden_password_is_refused_and_the_stored_password_kept() {
    let secret = password();
    let cache = format!("redis://app:{secret}@127.0.0.1:1/0?connect_timeout_ms=200");
    let data_dir = tempfile::tempdir().unwrap();
    let module = seed_module(data_dir.path(), passthrough()).await;
    let mut paused = spec("paused", &module);
    paused["cache"] = cache.clone().into();
    seed_pipeline(data_dir.path(), paused, DesiredState::Paused);
    let dir = data_dir.path().to_path_buf();
    let before = stored_record(&dir, "paused");
    assert!(before.contains(&secret), "the store keeps the password to connect with");
    let manager = ManagerConfig::new(data_dir.path(), KafkaConfig::new(NO_BROKER));
    let api = Api::on(data_dir, manager, AdminConfig::default()).await;

    let (_, report) = api.get("/v1/pipelines/paused", None).await;
    let mut answer = report["spec"].clone();
    assert_eq!(answer["cache"], "redis://***@127.0.0.1:1/0?connect_timeout_ms=200");
    // Sent back as it is, or with another setting changed: `***` is not a password.
    for change in [json!(null), json!({"batch_size": 7})] {
        if !change.is_null() {
            answer["processing"] = change;
        }
        let (status, error) = api.call_json(Method::PUT, "/v1/pipelines/paused", None, &answer).await;
        assert_eq!((status, error_code(&error)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec"), "{error}");
        let message = error_message(&error);
        assert!(
            message.contains("cache: redis://***@127.0.0.1:1/0")
                && message.contains("write the user name and password again"),
            "{message}"
        );
    }
    assert_eq!(stored_record(&dir, "paused"), before, "the stored password is kept");
    // With the password written again, the update is applied and the answers still hide it.
    answer["cache"] = cache.into();
    let (status, applied) = api.call_json(Method::PUT, "/v1/pipelines/paused", None, &answer).await;
    assert_eq!((status, applied["result"].as_str()), (StatusCode::OK, Some("updated")), "{applied}");
    let (_, report) = api.get("/v1/pipelines/paused", None).await;
    assert!(!report.to_string().contains(&secret), "{report}");
    assert_eq!(report["spec"]["processing"]["batch_size"], 7);
}

#[tokio::test]
async fn uploading_a_module_again_repairs_its_damaged_copy() {
    let api = Api::open().await;
    let bytes = passthrough();
    let (status, stored) = api.upload(None, bytes.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    let digest = stored["digest"].as_str().unwrap().to_string();
    let hex = digest.trim_start_matches("sha256:").to_string();
    let (wasm, json) = (api.modules_dir().join(format!("{hex}.wasm")), api.modules_dir().join(format!("{hex}.json")));
    /// A way to damage the stored copy.
    type Damage<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let damages: [Damage; 3] = [
        ("a binary overwritten", Box::new(|| std::fs::write(&wasm, b"\0asm damaged").unwrap())),
        ("a binary removed", Box::new(|| std::fs::remove_file(&wasm).unwrap())),
        ("metadata overwritten", Box::new(|| std::fs::write(&json, b"{ not json").unwrap())),
    ];
    for (damage, apply) in damages {
        apply();
        let (status, again) = api.upload(None, bytes.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{damage}: the damaged copy is replaced: {again}");
        assert_eq!(again["digest"], digest.as_str());
        let (status, info) = api.get(&format!("/v1/modules/{digest}"), None).await;
        assert_eq!(status, StatusCode::OK, "{damage}: {info}");
        let (_, kept) = api.manager.registry().get(&digest).await.unwrap().expect("stored");
        assert_eq!(kept, bytes, "{damage}: the binary is whole again");
        // An intact copy is left as it is.
        assert_eq!(api.upload(None, bytes.clone()).await.0, StatusCode::OK, "{damage}");
    }
}

#[tokio::test]
async fn numeric_settings_out_of_range_are_422_naming_the_setting() {
    let api = Api::open().await;
    for (setting, value) in [
        ("linger_ms", json!(u64::MAX)),
        ("linger_ms", json!(60_001)),
        ("batch_size", json!(100_001)),
        ("batch_max_bytes", json!(0)),
        ("max_retries", json!(101)),
        ("retry_backoff_ms", json!(0)),
        ("retry_backoff_max_ms", json!(600_001)),
    ] {
        let mut body = spec("x", &unknown_digest());
        body["processing"] = json!({ setting: value });
        let (status, error) = api.call_json(Method::PUT, "/v1/pipelines/x", None, &body).await;
        assert_eq!(
            (status, error_code(&error)),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec"),
            "{setting}: {error}"
        );
        assert!(error_message(&error).contains(setting) && error_message(&error).contains("out of range"), "{error}");
    }
    // At a bound: valid, so the call goes on to the (unknown) module.
    let mut body = spec("x", &unknown_digest());
    body["processing"] = json!({ "linger_ms": 60_000, "start": { "timestamp": 0 } });
    assert_eq!(api.call_json(Method::PUT, "/v1/pipelines/x", None, &body).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_offsets_reset_to_a_negative_timestamp_or_offset_is_422() {
    let data_dir = tempfile::tempdir().unwrap();
    seed_pipeline(data_dir.path(), spec("paused", &unknown_digest()), DesiredState::Paused);
    let manager = ManagerConfig::new(data_dir.path(), KafkaConfig::new(NO_BROKER));
    let api = Api::on(data_dir, manager, AdminConfig::default()).await;
    for (reset, says) in [
        (json!({"timestamp": -1}), "timestamp = -1"),
        (json!({"offsets": {"paused.in": {"0": -3}}}), "offset = -3"),
        (json!({"offsets": {"paused.in": {"-1": 0}}}), "partition = -1"),
    ] {
        let body = json!({ "reset": reset });
        let (status, error) = api.call_json(Method::POST, "/v1/pipelines/paused/offsets", None, &body).await;
        assert_eq!((status, error_code(&error)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec"), "{body}: {error}");
        assert!(error_message(&error).contains(says) && error_message(&error).contains("paused"), "{error}");
    }
}

#[tokio::test]
async fn a_reload_by_digest_is_held_to_the_json_body_limit() {
    let data_dir = tempfile::tempdir().unwrap();
    seed_pipeline(data_dir.path(), spec("paused", &unknown_digest()), DesiredState::Paused);
    let manager = ManagerConfig::new(data_dir.path(), KafkaConfig::new(NO_BROKER));
    let api = Api::on(data_dir, manager, AdminConfig::default()).await;
    let padded = format!("{{\"module\": \"{}\"{}}}", unknown_digest(), " ".repeat(MAX_JSON_BODY_BYTES));
    let (status, error) = api
        .request(Method::POST, "/v1/pipelines/paused/reload", None, Some("application/json"), padded.into_bytes())
        .await;
    assert_eq!((status, error_code(&error)), (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"), "{error}");
    // Within the limit, the digest is read (and is not in the registry).
    let body = json!({ "module": unknown_digest() });
    let (status, error) = api.call_json(Method::POST, "/v1/pipelines/paused/reload", None, &body).await;
    assert_eq!((status, error_code(&error)), (StatusCode::NOT_FOUND, "module_not_found"), "{error}");
}

#[tokio::test]
async fn the_bearer_scheme_is_accepted_in_any_case() {
    let (api, read, _) = guarded().await;
    for scheme in ["Bearer", "bearer", "BEARER", "BeArEr"] {
        let request = Request::builder()
            .uri("/v1/modules")
            .header(header::AUTHORIZATION, format!("{scheme} {read}"))
            .body(Body::empty())
            .unwrap();
        let (status, _, body) = api.send(request).await;
        assert_eq!(status, StatusCode::OK, "{scheme}: {}", String::from_utf8_lossy(&body));
    }
}

#[tokio::test]
async fn foreign_pipeline_records_are_not_restored_and_never_name_a_path() {
    let data_dir = tempfile::tempdir().unwrap();
    let store = PipelineStore::open(data_dir.path()).unwrap();
    let mut record =
        serde_json::to_value(PipelineRecord::new(serde_json::from_value(spec("evil", &unknown_digest())).unwrap()))
            .unwrap();
    record["spec"]["name"] = "../evil".into();
    std::fs::write(store.dir().join("evil.json"), record.to_string()).unwrap();
    // What a delete of `../evil` removed: a file next to the store.
    let outside = data_dir.path().join("evil.json");
    std::fs::write(&outside, b"not a pipeline").unwrap();
    let manager = ManagerConfig::new(data_dir.path(), KafkaConfig::new(NO_BROKER));
    let api = Api::on(data_dir, manager, AdminConfig::default()).await;
    assert_eq!(api.pipelines(None).await, Vec::<Value>::new(), "the foreign record is not restored");
    let (status, _) = api.call(Method::DELETE, "/v1/pipelines/..%2Fevil", None, Vec::new()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(std::fs::read(&outside).unwrap(), b"not a pipeline");
}

#[test]
fn serve_help_names_the_token_environment_variables() {
    let output = std::process::Command::new(sluice_binary()).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{help}");
    for variable in ["SLUICE_ADMIN_TOKEN", "SLUICE_READ_TOKEN"] {
        assert!(help.contains(variable), "`sluice serve --help` names {variable}: {help}");
    }
}
