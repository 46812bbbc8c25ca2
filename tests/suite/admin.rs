//! The admin API and the module registry behind it, called through the router without a socket:
//! uploads are checked before they are stored, errors are JSON with stable codes, tokens guard
//! every call by role, and the registry on disk survives restarts and interrupted writes.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::Value;
use sluice::admin::{self, AdminConfig};
use sluice::engine::{Engine, Limits, ModuleDigest};
use sluice::registry::{MODULES_DIR, ModuleRegistry};
use sluice_tests::fixtures::{engine, engine_with};
use sluice_tests::guests;
use tower::ServiceExt as _;

/// A token made up for this test run, never a fixed secret.
fn token(role: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{role}-{:x}-{nanos:x}", std::process::id())
}

/// An admin API on a fresh registry in a temporary data directory.
struct Api {
    router: Router,
    data_dir: tempfile::TempDir,
}

impl Api {
    fn new(config: AdminConfig) -> Api {
        Api::with_engine(engine(), config)
    }

    fn with_engine(engine: Engine, config: AdminConfig) -> Api {
        let data_dir = tempfile::tempdir().unwrap();
        let registry = ModuleRegistry::open(data_dir.path(), engine).unwrap();
        Api { router: admin::router(registry, config), data_dir }
    }

    fn open() -> Api {
        Api::new(AdminConfig::default())
    }

    /// Calls `method uri` with `body`, with `Authorization: Bearer <token>` when given.
    /// Returns the status and the JSON body (`null` when empty).
    async fn call(&self, method: Method, uri: &str, token: Option<&str>, body: Vec<u8>) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = self.router.clone().oneshot(request.body(Body::from(body)).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let json = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        (status, json)
    }

    async fn upload(&self, token: Option<&str>, bytes: Vec<u8>) -> (StatusCode, Value) {
        self.call(Method::POST, "/v1/modules", token, bytes).await
    }

    async fn get(&self, uri: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::GET, uri, token, Vec::new()).await
    }

    fn modules_dir(&self) -> std::path::PathBuf {
        self.data_dir.path().join(MODULES_DIR)
    }
}

fn passthrough() -> Vec<u8> {
    guests::component_bytes("passthrough")
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_else(|| panic!("not an error body: {body}"))
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn uploaded_component_is_described_and_listed_by_digest() {
    let api = Api::open();
    let bytes = passthrough();
    let digest = ModuleDigest::of(&bytes).to_string();

    let (status, info) = api.upload(None, bytes.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{info}");
    assert_eq!(info["digest"], digest.as_str());
    assert_eq!(info["size"], bytes.len() as u64);
    assert!(info["uploaded_at"].as_u64().unwrap() > 1_600_000_000, "{info}");
    assert_eq!(info["exports"], "process", "the processor world exports one function");

    let (status, described) = api.get(&format!("/v1/modules/{digest}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(described, info);
    let hex = digest.trim_start_matches("sha256:");
    let (status, by_hex) = api.get(&format!("/v1/modules/{hex}"), None).await;
    assert_eq!((status, by_hex), (StatusCode::OK, info.clone()));

    let (status, list) = api.get("/v1/modules", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["modules"], Value::Array(vec![info]));
    assert_eq!(files_in(&api.modules_dir()), vec![format!("{hex}.json"), format!("{hex}.wasm")]);
}

#[tokio::test]
async fn uploading_the_same_module_again_changes_nothing() {
    let api = Api::open();
    let (first_status, first) = api.upload(None, passthrough()).await;
    let (again_status, again) = api.upload(None, passthrough()).await;
    assert_eq!((first_status, again_status), (StatusCode::CREATED, StatusCode::OK));
    assert_eq!(first, again);
    let (_, list) = api.get("/v1/modules", None).await;
    assert_eq!(list["modules"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn random_bytes_are_refused_with_422_and_not_stored() {
    let api = Api::open();
    let (status, body) = api.upload(None, b"these bytes are not a component".to_vec()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_code(&body), "invalid_module");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("not WebAssembly"), "{message}");
    assert!(message.contains("sha256:"), "the message names the module digest: {message}");
    let (_, list) = api.get("/v1/modules", None).await;
    assert_eq!(list["modules"], Value::Array(vec![]));
    assert_eq!(files_in(&api.modules_dir()), Vec::<String>::new());
}

#[tokio::test]
async fn corrupt_component_is_refused_with_the_validators_reason() {
    let api = Api::open();
    let mut bytes = passthrough();
    bytes.truncate(bytes.len() / 2);
    let (status, body) = api.upload(None, bytes).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_module"));
    assert!(body["error"]["message"].as_str().unwrap().contains("is not a valid component"), "{body}");
}

#[tokio::test]
async fn upload_over_the_module_size_limit_is_refused_with_413() {
    let api =
        Api::with_engine(engine_with(Limits { max_module_bytes: 1024, ..Limits::default() }), AdminConfig::default());
    let (status, body) = api.upload(None, passthrough()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::PAYLOAD_TOO_LARGE, "module_too_large"));
    assert!(body["error"]["message"].as_str().unwrap().contains("1024 byte limit"), "{body}");
    assert_eq!(files_in(&api.modules_dir()), Vec::<String>::new());
}

#[tokio::test]
async fn unknown_digest_is_404() {
    let api = Api::open();
    let digest = ModuleDigest::of(b"never uploaded").to_string();
    let (status, body) = api.get(&format!("/v1/modules/{digest}"), None).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "module_not_found"));
    assert!(body["error"]["message"].as_str().unwrap().contains(&digest), "{body}");
    let (status, body) = api.call(Method::DELETE, &format!("/v1/modules/{digest}"), None, Vec::new()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "module_not_found"));
}

#[tokio::test]
async fn malformed_digest_is_400() {
    let api = Api::open();
    for digest in ["abc", "sha256:xyz", "md5:0123"] {
        let (status, body) = api.get(&format!("/v1/modules/{digest}"), None).await;
        assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "malformed_digest"), "{digest}");
    }
}

#[tokio::test]
async fn deleted_module_is_gone_from_the_registry_and_the_disk() {
    let api = Api::open();
    let (_, info) = api.upload(None, passthrough()).await;
    let uri = format!("/v1/modules/{}", info["digest"].as_str().unwrap());
    let (status, body) = api.call(Method::DELETE, &uri, None, Vec::new()).await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    assert_eq!(api.get(&uri, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(files_in(&api.modules_dir()), Vec::<String>::new());
}

#[tokio::test]
async fn unknown_endpoint_and_wrong_method_answer_json_errors() {
    let api = Api::open();
    let (status, body) = api.get("/v1/pipelines", None).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "no_such_endpoint"));
    let (status, body) = api.call(Method::PUT, "/v1/modules", None, Vec::new()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
}

#[tokio::test]
async fn probes_answer_without_a_token() {
    let api = Api::new(AdminConfig { read_token: Some(token("read")), admin_token: Some(token("admin")) });
    assert_eq!(api.get("/healthz", None).await, (StatusCode::OK, serde_json::json!({"status": "ok"})));
    assert_eq!(api.get("/readyz", None).await, (StatusCode::OK, serde_json::json!({"status": "ready"})));
}

/// An API with both tokens, and the tokens.
fn guarded() -> (Api, String, String) {
    let (read, admin) = (token("read"), token("admin"));
    let api = Api::new(AdminConfig { read_token: Some(read.clone()), admin_token: Some(admin.clone()) });
    (api, read, admin)
}

#[tokio::test]
async fn call_without_a_token_is_401_when_tokens_are_configured() {
    let (api, _, _) = guarded();
    let (status, body) = api.get("/v1/modules", None).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNAUTHORIZED, "missing_token"));
    let (status, body) = api.upload(None, passthrough()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNAUTHORIZED, "missing_token"));
}

#[tokio::test]
async fn call_with_a_wrong_token_is_401() {
    let (api, read, admin) = guarded();
    for wrong in [format!("{read}x"), admin[..admin.len() - 1].to_string(), token("guess")] {
        let (status, body) = api.get("/v1/modules", Some(&wrong)).await;
        assert_eq!((status, error_code(&body)), (StatusCode::UNAUTHORIZED, "invalid_token"));
    }
    let (status, body) = api.upload(Some(&token("guess")), passthrough()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNAUTHORIZED, "invalid_token"));
}

#[tokio::test]
async fn read_token_may_read_but_not_change_anything() {
    let (api, read, admin) = guarded();
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
    let (api, _, admin) = guarded();
    let (status, info) = api.upload(Some(&admin), passthrough()).await;
    assert_eq!(status, StatusCode::CREATED, "{info}");
    assert_eq!(api.upload(Some(&admin), passthrough()).await.0, StatusCode::OK);
    let uri = format!("/v1/modules/{}", info["digest"].as_str().unwrap());
    assert_eq!(api.get(&uri, Some(&admin)).await, (StatusCode::OK, info));
    assert_eq!(api.call(Method::DELETE, &uri, Some(&admin), Vec::new()).await.0, StatusCode::NO_CONTENT);
}

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
