//! The bodies of the admin API that only the API has: list wrappers, the requests of reload,
//! rollback and offset reset, the answer of an apply or deploy, and the error body. The
//! answers that are the pipeline manager's own types (a pipeline's summary and report, a
//! module's metadata) are re-exported from the crate root.
//!
//! Each type is both serialised by the server and deserialised by the client, so the two
//! cannot drift apart; the field names are the JSON keys.

use serde::{Deserialize, Serialize};
use sluice_pipeline::cluster::status::NodeStatus;
use sluice_pipeline::function_log::LogEntry;
use sluice_pipeline::manager::{Applied, PipelineSummary};
use sluice_pipeline::registry::ModuleInfo;
use sluice_pipeline::spec::StartPosition;

/// The body of `GET /v1/modules`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModuleList {
    /// Every stored module, sorted by digest.
    pub modules: Vec<ModuleInfo>,
}

/// A module's metadata and the pipelines that use it: the body of `GET /v1/modules/{digest}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModuleDetail {
    /// The module's metadata.
    #[serde(flatten)]
    pub info: ModuleInfo,
    /// The pipelines that run the module or keep it as a revision.
    pub used_by: Vec<String>,
}

/// The body of `GET /v1/pipelines`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PipelineList {
    /// Every pipeline, by name.
    pub pipelines: Vec<PipelineSummary>,
}

/// The answer to a create, update or deploy (`PUT /v1/pipelines/{name}`, `POST /v1/deploy`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApplyResult {
    /// What the call did.
    pub result: Applied,
    /// The pipeline after it.
    pub pipeline: PipelineSummary,
    /// The module stored by a deploy; absent from the answer of a `PUT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<ModuleInfo>,
}

/// The body of a reload given by digest (`POST /v1/pipelines/{name}/reload` as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReloadRequest {
    /// The digest of a stored module, `sha256:<hex>` (or the 64 hex digits alone).
    #[schema(pattern = "^(sha256:)?[0-9a-fA-F]{64}$")]
    pub module: String,
}

/// The body of a rollback (`POST /v1/pipelines/{name}/rollback`): `{}` for the previous
/// module version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The kept revision to switch to; the previous module version when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
}

/// The body of an offset reset (`POST /v1/pipelines/{name}/offsets`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(
    json!({"reset": "earliest"}),
    json!({"reset": {"timestamp": 1_700_000_000_000_i64}}),
    json!({"reset": {"offsets": {"clicks": {"0": 42}}}})
))]
pub struct ResetRequest {
    /// Where the paused pipeline's consumer group is moved.
    pub reset: StartPosition,
}

/// One committed offset of a reset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CommittedOffset {
    /// Input topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The offset committed: the next record the pipeline processes.
    pub offset: i64,
}

/// The answer to an offset reset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OffsetList {
    /// The offsets committed, one per input partition.
    pub offsets: Vec<CommittedOffset>,
}

/// The body of `GET /v1/cluster`: the nodes of this runtime's cluster as this node sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClusterView {
    /// This node's id.
    pub node: String,
    /// Whether this runtime runs in cluster mode; when not, `nodes` is this node alone.
    pub cluster: bool,
    /// Every node seen in the cluster's status topic, sorted by id: its state (`up`, `gone`,
    /// `left`), the seconds since its last heartbeat, and that heartbeat (its pipelines, their
    /// revisions and owned partitions).
    pub nodes: Vec<NodeStatus>,
}

/// Which function log entries to read (`GET /v1/pipelines/{name}/logs`'s query).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Only entries since then: a duration back from now (`30s`, `5m`, `2h`, `1d`) or an
    /// RFC 3339 time (`2026-11-03T14:05:09Z`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Only entries at this level or above: `trace`, `debug`, `info`, `warn` or `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// Only the latest this many of the matching entries kept (with `follow`, of the
    /// entries sent before the new ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// `true`: answer NDJSON (one entry per line), the kept entries that match and then each
    /// new one as it comes, until the client goes away or the pipeline is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow: Option<bool>,
}

/// The body of `GET /v1/pipelines/{name}/logs`: a pipeline's function log on the node that
/// answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogList {
    /// The node whose log this is: each node keeps the entries of the partitions it
    /// processed.
    pub node: String,
    /// The matching entries, oldest first.
    pub entries: Vec<LogEntry>,
    /// Entries this node's log of the pipeline dropped since the runtime started, oldest
    /// first, to stay within `capacity`.
    pub dropped: u64,
    /// The most entries the log keeps.
    pub capacity: usize,
}

/// The body of the probes (`GET /healthz`, `GET /readyz`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Status {
    /// `ok` (alive), `ready` or `not_ready`.
    pub status: ProbeStatus,
}

/// What a probe says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProbeStatus {
    /// The process serves the API.
    Ok,
    /// The runtime can serve calls.
    Ready,
    /// The runtime cannot serve calls now; the reason is in its log.
    NotReady,
}

/// The stable code of an error, for programs to match on:
///
/// | code | status | meaning |
/// |---|---|---|
/// | `malformed_digest` | 400 | A module digest in a path or a reload body that is not `sha256:<64 hex>` or `<64 hex>`. |
/// | `bad_request` | 400 | A request body that cannot be read. |
/// | `invalid_json` | 400, 415, 422 | A JSON body that is not JSON (400), not sent as `application/json` (415) or has wrong fields (422, or 400 for reload and rollback bodies). |
/// | `invalid_multipart` | 400 | A deploy body that is not a `multipart/form-data` form of exactly the parts `spec` and `module`. |
/// | `missing_token` | 401 | No `Authorization: Bearer <token>` header, and tokens are configured. |
/// | `invalid_token` | 401 | A bearer token that is not one of the configured tokens. |
/// | `forbidden` | 403 | A read token on a call that needs the admin role, or any token on such a call when no admin token is configured. |
/// | `module_not_found` | 404 | No module with this digest in the registry. |
/// | `pipeline_not_found` | 404 | No pipeline of this name. |
/// | `no_such_endpoint` | 404 | No route matches the path. |
/// | `method_not_allowed` | 405 | The route exists, but not with this method. |
/// | `request_timeout` | 408 | The call (reading its body included) took longer than the runtime's request time limit (`request_timeout`, default 120 s). |
/// | `conflict` | 409 | The call does not fit the current state: a module used or kept by a pipeline, an offset reset of a running pipeline, no earlier module version or an unknown revision to roll back to. |
/// | `module_too_large` | 413 | A module (or deploy) body over the module size limit (`max_module_bytes`, default 32 MiB). |
/// | `body_too_large` | 413 | A JSON body over 1 MiB (1048576 bytes). |
/// | `invalid_module` | 422 | Bytes that are not a valid component of the `sluice:function/processor` world; the message gives the validator's reason and the digest. |
/// | `invalid_spec` | 422 | A pipeline spec that cannot be read (unknown or missing fields, a name that differs from the path, a `module` that is not `sha256:<64 hex>`, a `cache` URL that does not parse or has `***` for its user info) or cannot run (no `default` output, a bad name or topic, an output that is also an input, a setting out of its range). |
/// | `pipeline_start_failed` | 422 | The pipeline could not start: a missing topic, an unreachable broker or cache. |
/// | `internal_error` | 500 | A failure inside the runtime (disk, store); the details are in its log, not in the response. |
/// | `kafka_error` | 502 | A request to the Kafka cluster failed; the message is the cluster's answer. |
/// | `stop_timeout` | 504 | A pause, delete or update whose pipeline did not stop within the stop limit (`STOP_TIMEOUT`, 30 s); the pipeline shows as `stopping` until it has. |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)] // The table above says what each code means.
pub enum ErrorCode {
    MalformedDigest,
    BadRequest,
    InvalidJson,
    InvalidMultipart,
    MissingToken,
    InvalidToken,
    Forbidden,
    ModuleNotFound,
    PipelineNotFound,
    NoSuchEndpoint,
    MethodNotAllowed,
    RequestTimeout,
    Conflict,
    ModuleTooLarge,
    BodyTooLarge,
    InvalidModule,
    InvalidSpec,
    PipelineStartFailed,
    InternalError,
    KafkaError,
    StopTimeout,
}

impl ErrorCode {
    /// Every code, in the order of the table.
    pub const ALL: [ErrorCode; 21] = {
        use ErrorCode::*;
        [
            MalformedDigest,
            BadRequest,
            InvalidJson,
            InvalidMultipart,
            MissingToken,
            InvalidToken,
            Forbidden,
            ModuleNotFound,
            PipelineNotFound,
            NoSuchEndpoint,
            MethodNotAllowed,
            RequestTimeout,
            Conflict,
            ModuleTooLarge,
            BodyTooLarge,
            InvalidModule,
            InvalidSpec,
            PipelineStartFailed,
            InternalError,
            KafkaError,
            StopTimeout,
        ]
    };

    /// The code as it appears in an error body.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            MalformedDigest => "malformed_digest",
            BadRequest => "bad_request",
            InvalidJson => "invalid_json",
            InvalidMultipart => "invalid_multipart",
            MissingToken => "missing_token",
            InvalidToken => "invalid_token",
            Forbidden => "forbidden",
            ModuleNotFound => "module_not_found",
            PipelineNotFound => "pipeline_not_found",
            NoSuchEndpoint => "no_such_endpoint",
            MethodNotAllowed => "method_not_allowed",
            RequestTimeout => "request_timeout",
            Conflict => "conflict",
            ModuleTooLarge => "module_too_large",
            BodyTooLarge => "body_too_large",
            InvalidModule => "invalid_module",
            InvalidSpec => "invalid_spec",
            PipelineStartFailed => "pipeline_start_failed",
            InternalError => "internal_error",
            KafkaError => "kafka_error",
            StopTimeout => "stop_timeout",
        }
    }
}

/// The body of every error response. `code` is stable and meant for programs; `message` is for
/// people. 500 responses carry a generic message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Error, example = json!({"error": {"code": "pipeline_not_found", "message": "pipeline \"clicks\" does not exist"}}))]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The code and message of an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// The stable code.
    pub code: ErrorCode,
    /// What went wrong, naming the module, pipeline or field concerned.
    pub message: String,
}

#[cfg(test)]
mod tests {
    //! Every answer the CLI reads is serialised by the server and deserialised by the client
    //! as the same type: here each goes there and back, for a realistic value, and must come
    //! back the same JSON.

    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use sluice_cache::{CacheStatsSnapshot, LatencySnapshot};
    use sluice_kafka::source::PartitionOffsets;
    use sluice_pipeline::manager::{ModuleChange, PipelineReport, PipelineState};
    use sluice_pipeline::registry::pipelines::{Revision, RevisionCause};
    use sluice_pipeline::spec::{ModuleDigest, PipelineSpec};
    use sluice_pipeline::{
        FaultCounts, ModuleSwitch, PartitionState, PartitionStatus, PipelineCacheStatus, PipelineStatus,
        TransactionCounts,
    };

    use super::*;

    /// The JSON `value` is sent as, after the client read it back into its type.
    fn round_trip<T: Serialize + DeserializeOwned>(value: &T) -> (serde_json::Value, serde_json::Value) {
        let sent = serde_json::to_string(value).unwrap();
        let read: T = serde_json::from_str(&sent).unwrap_or_else(|e| panic!("{e}: {sent}"));
        (serde_json::from_str(&sent).unwrap(), serde_json::to_value(&read).unwrap())
    }

    fn assert_round_trips<T: Serialize + DeserializeOwned>(value: &T) {
        let (sent, read) = round_trip(value);
        assert_eq!(sent, read);
    }

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn typed_digest(c: char) -> ModuleDigest {
        digest(c).parse().unwrap()
    }

    fn module(c: char) -> ModuleInfo {
        ModuleInfo { digest: digest(c), size: 123_456, uploaded_at: 1_700_000_000, exports: "process".into() }
    }

    fn summary(state: PipelineState) -> PipelineSummary {
        PipelineSummary {
            name: "orders-enrich".into(),
            state,
            revision: 3,
            module: digest('b'),
            inputs: vec!["orders".into(), "returns".into()],
            records_in: 10_000,
            records_out: 9_990,
            failed: 10,
            lag: -1,
            partitions: 4,
        }
    }

    fn partition(partition: i32, state: PartitionState, owned: bool) -> PartitionStatus {
        PartitionStatus {
            topic: "orders".into(),
            partition,
            next_offset: (partition > 0).then_some(1_234),
            lag: (partition > 0).then_some(5),
            module: (partition > 0).then(|| digest('b')),
            revision: (partition > 0).then_some(3),
            owned,
            last_switch: (partition == 1).then_some(ModuleSwitch { offset: 1_200, micros: 850 }),
            state,
        }
    }

    fn report() -> PipelineReport {
        let spec: PipelineSpec = serde_json::from_value(serde_json::json!({
            "name": "orders-enrich",
            "inputs": ["orders", "returns"],
            "outputs": { "default": "enriched", "audit": "audit-log" },
            "module": digest('b'),
            "cache": "redis://cache.internal:6379/0",
            "config": { "currency": "EUR" },
            "processing": { "on_failure": "block", "start": { "timestamp": 1_700_000_000_000i64 } },
        }))
        .unwrap();
        let mut latency = LatencySnapshot { count: 40, total_nanos: 4_000_000, ..LatencySnapshot::default() };
        latency.buckets[3] = 40;
        PipelineReport {
            name: "orders-enrich".into(),
            state: PipelineState::Stalled,
            error: Some("output topic \"enriched\" does not exist".into()),
            revision: 3,
            revisions: vec![
                Revision {
                    revision: 1,
                    module: typed_digest('a'),
                    deployed_at: 1,
                    cause: RevisionCause::Deploy,
                    superseded: false,
                },
                Revision {
                    revision: 2,
                    module: typed_digest('c'),
                    deployed_at: 2,
                    cause: RevisionCause::Reload,
                    superseded: true,
                },
                Revision {
                    revision: 3,
                    module: typed_digest('b'),
                    deployed_at: 3,
                    cause: RevisionCause::Reload,
                    superseded: false,
                },
            ],
            spec,
            status: PipelineStatus {
                name: "orders-enrich".into(),
                module: digest('b'),
                records_in: 10_000,
                records_out: 9_990,
                batches: 40,
                failed: 10,
                dead_letters: 0,
                skipped: 0,
                delivery_failures: 0,
                consume_errors: 0,
                setup_failures: 0,
                worker_crashes: 0,
                transactions: TransactionCounts::default(),
                faults: FaultCounts {
                    calls_failed: [("trap".to_owned(), 1)].into(),
                    bisections: 9,
                    reruns: 510,
                    instance_rebuilds: 1,
                    instances_retired: 2,
                },
                last_error: Some("pipeline orders-enrich partition orders/2 offset 77: trap".into()),
                partitions: vec![
                    partition(0, PartitionState::Running, true),
                    partition(1, PartitionState::Running, true),
                    partition(2, PartitionState::Blocked { offset: 77 }, true),
                    partition(3, PartitionState::Stopped, false),
                ],
                owned_partitions: 3,
                stalled: Some("it owns no partitions while 12 records are waiting".into()),
                broker_outages: 1,
                broker_unreachable_ms: Some(2_500),
                commit_failures: 2,
                last_commit_error: Some("Consumer commit error: CoordinatorNotAvailable".into()),
                batch_latency: latency,
                cache: PipelineCacheStatus {
                    backend: "redis".into(),
                    namespace: "orders-enrich".into(),
                    stats: CacheStatsSnapshot {
                        hits: 30,
                        misses: 10,
                        writes: 10,
                        unavailable: 2,
                        timeouts: 1,
                        connection_errors: 1,
                        errors: 0,
                        latency,
                        outages: 1,
                        unavailable_for_ms: None,
                    },
                },
            },
            offsets: vec![
                PartitionOffsets { topic: "orders".into(), partition: 0, committed: None, high_watermark: 0, lag: 0 },
                PartitionOffsets {
                    topic: "orders".into(),
                    partition: 1,
                    committed: Some(1_234),
                    high_watermark: 1_239,
                    lag: 5,
                },
            ],
            offsets_error: None,
            nodes: Vec::new(),
            rollout: None,
        }
    }

    #[test]
    fn a_pipeline_report_reads_back_as_it_was_sent() {
        let report = report();
        assert_round_trips(&report);
        let (sent, _) = round_trip(&report);
        // The fields whose JSON has a shape of its own: a flattened, tagged partition state
        // and a revision's `superseded`, left out when false.
        assert_eq!(sent["status"]["partitions"][2]["state"], "blocked");
        assert_eq!(sent["status"]["partitions"][2]["offset"], 77);
        assert!(sent["revisions"][0].get("superseded").is_none());
        let read: PipelineReport = serde_json::from_value(sent).unwrap();
        assert_eq!(read.status.partitions, report.status.partitions);
        assert_eq!(read.spec, report.spec);
    }

    #[test]
    fn the_answers_about_pipelines_read_back_as_they_were_sent() {
        assert_round_trips(&PipelineList {
            pipelines: vec![summary(PipelineState::Running), summary(PipelineState::Paused)],
        });
        assert_round_trips(&summary(PipelineState::Failed));
        assert_round_trips(&ModuleChange {
            applied: Applied::Reloaded,
            superseded: Some(2),
            pipeline: summary(PipelineState::Running),
        });
        assert_round_trips(&ModuleChange {
            applied: Applied::Unchanged,
            superseded: None,
            pipeline: summary(PipelineState::Running),
        });
        assert_round_trips(&ApplyResult {
            result: Applied::Created,
            pipeline: summary(PipelineState::Running),
            module: Some(module('b')),
        });
        assert_round_trips(&ApplyResult {
            result: Applied::Updated,
            pipeline: summary(PipelineState::Paused),
            module: None,
        });
        assert_round_trips(&OffsetList {
            offsets: vec![
                CommittedOffset { topic: "orders".into(), partition: 0, offset: 0 },
                CommittedOffset { topic: "returns".into(), partition: 7, offset: 42 },
            ],
        });
    }

    #[test]
    fn the_answers_about_modules_and_errors_read_back_as_they_were_sent() {
        assert_round_trips(&ModuleList { modules: vec![module('a'), module('b')] });
        assert_round_trips(&ModuleDetail { info: module('a'), used_by: vec!["orders-enrich".into()] });
        assert_round_trips(&Status { status: ProbeStatus::NotReady });
        let error = ErrorBody {
            error: ErrorDetail {
                code: ErrorCode::Conflict,
                message: "pipeline \"p\" is running: pause it first".into(),
            },
        };
        assert_round_trips(&error);
        assert_eq!(
            serde_json::to_string(&error).unwrap(),
            r#"{"error":{"code":"conflict","message":"pipeline \"p\" is running: pause it first"}}"#
        );
    }

    #[test]
    fn requests_are_sent_as_the_server_reads_them() {
        assert_eq!(serde_json::to_string(&RollbackRequest::default()).unwrap(), "{}");
        assert_eq!(serde_json::to_string(&RollbackRequest { revision: Some(2) }).unwrap(), r#"{"revision":2}"#);
        assert_eq!(
            serde_json::to_string(&ResetRequest { reset: StartPosition::Earliest }).unwrap(),
            r#"{"reset":"earliest"}"#
        );
        assert_eq!(
            serde_json::to_string(&ResetRequest { reset: StartPosition::Timestamp(5) }).unwrap(),
            r#"{"reset":{"timestamp":5}}"#
        );
        let request = r#"{"module":"sha256:ab","extra":1}"#;
        assert!(serde_json::from_str::<ReloadRequest>(request).is_err(), "unknown fields are refused");
        assert_round_trips(&ReloadRequest { module: digest('a') });
    }
}
