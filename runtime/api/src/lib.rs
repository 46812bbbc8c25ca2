//! The admin API's contract as Rust types, and a typed client of it: what the `sluice` CLI and
//! the tests speak to a runtime with. The server side is `sluice-admin`, which serialises the
//! same types the client deserialises.
//!
//! The bodies only the API has are in [`types`]; the answers that are the pipeline manager's
//! own types are re-exported here, so a client needs only this crate.

pub mod client;
pub mod types;

pub use client::{AdminClient, ApiFailure, ClientError, DEFAULT_URL, Progress};
pub use types::{
    ApplyResult, ClusterView, CommittedOffset, ErrorBody, ErrorCode, ErrorDetail, LogList, LogsQuery, ModuleDetail,
    ModuleList, OffsetList, PipelineList, ProbeStatus, ReloadRequest, ResetRequest, RollbackRequest, Status,
};

pub use sluice_pipeline::cluster::status::{
    Heartbeat, NodePipeline, NodeShare, NodeState, NodeStatus, OwnedPartition, Rollout,
};
pub use sluice_pipeline::function_log::{LogEntry, LogLevel, LogSource};
pub use sluice_pipeline::manager::{Applied, ModuleChange, PipelineReport, PipelineState, PipelineSummary};
pub use sluice_pipeline::registry::ModuleInfo;
pub use sluice_pipeline::registry::pipelines::Revision;
pub use sluice_pipeline::spec::{PipelineSpec, StartPosition};
pub use sluice_pipeline::{ModuleSwitch, PartitionState, PartitionStatus, PipelineCacheStatus, PipelineStatus};

pub use sluice_cache::{CacheStatsSnapshot, LatencySnapshot};
pub use sluice_kafka::source::PartitionOffsets;
