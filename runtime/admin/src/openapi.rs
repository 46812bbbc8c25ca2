//! The OpenAPI document of the admin API, generated: each handler's `#[utoipa::path]`
//! annotation gives its method, path, parameters, bodies and answers, the types of the bodies
//! give their schemas, and the router registers each handler at the path of its annotation
//! (`utoipa_axum::routes!`), so the document and the routes cannot drift apart.
//!
//! This module holds what the annotations share: the document's frame ([`AdminApi`]), the
//! path parameters, the schemas of the bodies that are not JSON, the error answers many calls
//! give, and [`finish`], which derives from each operation's security requirement its role
//! (`x-sluice-role`, a line of its description) and the answers every call of that role may
//! get (401, 403, 408). It must not serve anything: [`super::router`] does.

use serde_json::{Value, json};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{IntoParams, OpenApi, PartialSchema, ToResponse, ToSchema};

use super::auth::REQUEST_TIMEOUT;
use super::error::ErrorBody;
use super::listener::{HEADER_READ_TIMEOUT, MAX_CONNECTIONS};
use super::{MAX_JSON_BODY_BYTES, ROLE_ADMIN, ROLE_READ};
use sluice_engine::Limits;

/// The name of the bearer token scheme in the document.
pub const BEARER: &str = "bearerAuth";

/// The frame of the document: tags, shared components. The paths come from the router.
#[derive(OpenApi)]
#[openapi(
    tags(
        (name = "modules", description = "The module registry: components stored by digest."),
        (name = "pipelines", description = "Pipelines: create, update, deploy, reload, roll back, pause, resume, reset offsets, delete."),
        (name = "operations", description = "The cluster's nodes, metrics, probes and this document."),
    ),
    components(
        schemas(ErrorBody),
        responses(Unauthorized, Forbidden, RequestTimeout, InternalError, BadRequest, ModuleNotFound,
            PipelineNotFound, Conflict, ModuleTooLarge, JsonTooLarge, UnsupportedMediaType, KafkaError, StopTimeout),
    )
)]
pub struct AdminApi;

/// The path parameter of the calls on one module.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Describes the path only; handlers read it with `Path<String>`.
pub struct DigestParam {
    /// A module digest, `sha256:<64 hex>` or the 64 hex digits alone (400 `malformed_digest`
    /// otherwise).
    #[param(pattern = "^(sha256:)?[0-9a-fA-F]{64}$")]
    digest: String,
}

/// The path parameter of the calls on one pipeline.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Describes the path only; handlers read it with `Path<String>`.
pub struct NameParam {
    /// The pipeline's name.
    #[param(pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    name: String,
}

/// A component's bytes (`application/wasm`), a body that is not JSON.
pub struct ModuleBytes;

impl PartialSchema for ModuleBytes {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .content_media_type("application/wasm")
            .description(Some("The component's bytes."))
            .into()
    }
}

impl ToSchema for ModuleBytes {}

/// The form of `POST /v1/deploy`: a pipeline spec and its module, and no other part.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes the form only; the handler reads it part by part.
pub struct DeployForm {
    /// The pipeline spec as JSON, with its `name`; its `module` may be left out.
    spec: sluice_pipeline::spec::PipelineSpec,
    /// The component's bytes.
    module: ModuleBytes,
}

/// Declares the error answers many calls share, each a reusable response whose body is an
/// [`ErrorBody`]; the doc comment is the response's description.
macro_rules! error_responses {
    ($($(#[doc = $doc:literal])+ $name:ident;)+) => {
        $(
            $(#[doc = $doc])+
            #[derive(ToResponse)]
            #[allow(dead_code)] // Describes an answer; the handlers answer an `ApiError`.
            pub struct $name(ErrorBody);
        )+
    };
}

error_responses! {
    /// `missing_token` or `invalid_token`: a token is required and was not sent, or is not
    /// valid. The answer has `WWW-Authenticate: Bearer`.
    Unauthorized;
    /// `forbidden`: the call needs the admin token.
    Forbidden;
    /// `request_timeout`: the call took longer than the request time limit.
    RequestTimeout;
    /// `internal_error`: a failure inside the runtime; the details are in its log.
    InternalError;
    /// `malformed_digest`, `bad_request`, `invalid_json` or `invalid_multipart`.
    BadRequest;
    /// `module_not_found`: no module with this digest.
    ModuleNotFound;
    /// `pipeline_not_found`: no pipeline of this name.
    PipelineNotFound;
    /// `conflict`: the call does not fit the current state.
    Conflict;
    /// `module_too_large`: the body is over the module size limit.
    ModuleTooLarge;
    /// `body_too_large`: the JSON body is over the JSON body limit (1 MiB).
    JsonTooLarge;
    /// `invalid_json`: the body is not sent as `application/json`.
    UnsupportedMediaType;
    /// `kafka_error`: a request to the Kafka cluster failed.
    KafkaError;
    /// `stop_timeout`: the pipeline did not stop within the stop limit (30 s); it shows as
    /// `stopping` until it has.
    StopTimeout;
}

/// The document's description: tokens, limits and errors, with the limits' current defaults.
fn description() -> String {
    let json_limit = MAX_JSON_BODY_BYTES;
    let module_limit = Limits::default().max_module_bytes;
    format!(
        "The admin API of a Sluice runtime, which runs WebAssembly stream functions on Kafka.\n\n\
         **Tokens.** Calls send `Authorization: Bearer <token>` (the scheme in any case: `bearer`, \
         `BEARER`). The read token allows the calls that change nothing; the admin token allows \
         every call. Each operation says which role it needs (in its security requirement, in \
         `x-sluice-role`: `admin`, `read` or `none`, and in its description). With no token \
         configured the API is open, which the runtime only allows on a loopback address. With \
         only a read token configured, calls that need the admin role are refused to everyone \
         (403).\n\n\
         **Limits.** A module body may be at most the module size limit (`max_module_bytes`, \
         default {module_mib} MiB), a JSON body at most {json_mib} MiB ({json_limit} bytes); a call, \
         reading its body included, may take at most the request time limit (`request_timeout`, \
         default {timeout} s), after which it is answered 408. Before a call starts, its request \
         head must arrive within the header read timeout (`header_read_timeout_secs`, default \
         {header} s, counted from the connection's opening or the previous answer, so also the \
         idle keep-alive limit), or the connection is closed; at most `max_connections` (default \
         {connections}) connections are open at once, further clients wait to be accepted.\n\n\
         **Errors.** Every error is JSON, `{{\"error\": {{\"code\": \"...\", \"message\": \"...\"}}}}`; \
         see the `Error` and `ErrorCode` schemas for the codes. An unknown path is 404 \
         `no_such_endpoint`, a known path with another method 405 `method_not_allowed`.",
        module_mib = module_limit / (1024 * 1024),
        json_mib = json_limit / (1024 * 1024),
        timeout = REQUEST_TIMEOUT.as_secs(),
        header = HEADER_READ_TIMEOUT.as_secs(),
        connections = MAX_CONNECTIONS,
    )
}

/// The role an operation needs, read from its bearer security requirement: `admin`, `read` or
/// `none` (no requirement).
fn role_of(operation: &Value) -> &'static str {
    let roles: Vec<&str> = operation["security"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|requirement| requirement[BEARER].as_array())
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if roles.contains(&ROLE_ADMIN) {
        ROLE_ADMIN
    } else if roles.contains(&ROLE_READ) {
        ROLE_READ
    } else {
        "none"
    }
}

/// Completes the generated document: its info and security scheme, and for each operation what
/// its role implies (see the module documentation).
pub fn finish(document: utoipa::openapi::OpenApi) -> Value {
    let mut document = serde_json::to_value(document).expect("an OpenAPI document serialises");
    document["info"] = json!({
        "title": "Sluice admin API",
        "version": "1",
        "summary": "Modules, pipelines, hot reload and rollback, metrics and probes of a Sluice runtime.",
        "description": description(),
        "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
    });
    document["components"]["securitySchemes"] = json!({
        BEARER: {
            "type": "http",
            "scheme": "bearer",
            "description": "The admin token (every call) or the read token (calls that change nothing). \
                            The scopes of a requirement name the role a call needs: `admin` or `read`.",
        }
    });
    document["security"] = json!([{ BEARER: [] }]);
    let reference = |name: &str| json!({"$ref": format!("#/components/responses/{name}")});
    let paths = document["paths"].as_object_mut().expect("the document has paths");
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for operation in item.values_mut() {
            let role = role_of(operation);
            let responses = operation["responses"].as_object_mut().expect("every operation has answers");
            let mut add = |status: &str, name: &str| {
                responses.entry(status.to_string()).or_insert_with(|| reference(name));
            };
            add("408", "RequestTimeout");
            let line = match role {
                "none" => "No token needed.",
                ROLE_READ => "Role: read (the read or the admin token; open when no token is configured).",
                _ => "Role: admin (the admin token; open when no token is configured).",
            };
            if role != "none" {
                add("401", "Unauthorized");
            }
            if role == ROLE_ADMIN {
                add("403", "Forbidden");
            }
            let description = operation["description"].as_str().unwrap_or_default();
            operation["description"] =
                Value::from(if description.is_empty() { line.to_string() } else { format!("{description}\n\n{line}") });
            operation["x-sluice-role"] = Value::from(role);
            if role == "none" {
                operation["security"] = json!([]);
            }
        }
    }
    document
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use sluice_pipeline::spec::{
        MAX_BATCH_MAX_BYTES, MAX_BATCH_SIZE, MAX_LINGER_MS, MAX_RETRIES, MAX_RETRY_BACKOFF_MAX_MS,
        MAX_RETRY_BACKOFF_MS, MIN_HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_RANGE_MS,
    };

    #[test]
    fn the_ranges_of_the_spec_schema_are_the_ranges_the_spec_checks() {
        let document = super::super::openapi();
        if std::env::var_os("SLUICE_PRINT_OPENAPI").is_some() {
            println!("{}", serde_json::to_string_pretty(&document).unwrap());
        }
        let schemas = &document["components"]["schemas"];
        let range = |schema: &str, field: &str| {
            let property = &schemas[schema]["properties"][field];
            (property["minimum"].as_u64(), property["maximum"].as_u64())
        };
        let max = |value: usize| Some(value as u64);
        assert_eq!(range("Processing", "batch_size"), (Some(1), max(MAX_BATCH_SIZE)));
        assert_eq!(range("Processing", "batch_max_bytes"), (Some(1), max(MAX_BATCH_MAX_BYTES)));
        assert_eq!(range("Processing", "linger_ms"), (Some(0), Some(MAX_LINGER_MS)));
        assert_eq!(range("Processing", "max_retries"), (Some(0), Some(u64::from(MAX_RETRIES))));
        assert_eq!(range("Processing", "retry_backoff_ms"), (Some(1), Some(MAX_RETRY_BACKOFF_MS)));
        assert_eq!(range("Processing", "retry_backoff_max_ms"), (Some(1), Some(MAX_RETRY_BACKOFF_MAX_MS)));
        assert_eq!(
            range("GroupSettings", "session_timeout_ms"),
            (Some(*SESSION_TIMEOUT_RANGE_MS.start()), Some(*SESSION_TIMEOUT_RANGE_MS.end()))
        );
        assert_eq!(range("GroupSettings", "heartbeat_interval_ms").0, Some(MIN_HEARTBEAT_INTERVAL_MS));
        assert_eq!(document["openapi"], Value::from("3.1.0"));
    }
}
