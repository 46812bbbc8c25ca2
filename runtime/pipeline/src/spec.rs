//! What a pipeline is, as an operator declares it: its topics, function, cache, settings for
//! the function, and how records are batched, retried and failed. Every default is here.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
pub use sluice_kafka::group::{
    GroupSettings, MAX_TIMESTAMP_MS, MIN_HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_RANGE_MS, StartPosition,
};
use sluice_kafka::source::ConsumerSpec;

/// The name of the default output in [`PipelineSpec::outputs`].
pub const DEFAULT_OUTPUT: &str = "default";

/// One pipeline: consume `inputs`, run the function on every record, produce to `outputs`.
/// Unknown fields are refused (`422 invalid_spec` over the admin API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "clicks",
    "inputs": ["clicks"],
    "outputs": {"default": "clicks.enriched"},
    "module": "sha256:9f2c0a5b3d1e4f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c",
    "processing": {"batch_size": 200, "on_failure": "dead-letter"}
}))]
pub struct PipelineSpec {
    /// Unique name: 1 to 64 ASCII letters, digits, `_`, `-` or `.`. It names the consumer group
    /// (`sluice.<name>`), the default cache namespace and the default dead-letter topic.
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    pub name: String,
    /// Topics to consume.
    #[schema(min_items = 1)]
    pub inputs: Vec<String>,
    /// Output topics by name. The output named `default` receives outputs without a target;
    /// a function names another with `target`. Outputs naming an undeclared target fail
    /// their input record.
    pub outputs: BTreeMap<String, String>,
    /// The function: where its component is (a file path for `sluice serve`; over the admin
    /// API the digest of a module in the registry, `sha256:<hex>` or `<hex>`).
    pub module: String,
    /// The cache the function's `cache` calls use: `memory://` (the default),
    /// `memory://?capacity_mb=N`, `redis://...`, `memcache://...`. A user name or password in
    /// the URL is kept in the stored spec only: answers, errors and logs show the URL with its
    /// user info replaced by `***`.
    #[serde(default = "default_cache")]
    pub cache: String,
    /// The cache namespace; the pipeline's name when absent. Pipelines that name the same
    /// namespace share their keys.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Settings handed to the function's `config` import.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Batching, retries and failure handling.
    #[serde(default)]
    pub processing: Processing,
    /// How the pipeline's consumer takes part in its consumer group.
    #[serde(default)]
    pub group: GroupSettings,
}

fn default_cache() -> String {
    "memory://".into()
}

/// How records are batched, retried and failed. Every field is optional; a value out of its
/// range is refused (`422 invalid_spec` over the admin API) naming the setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Processing {
    /// Most records per function call: 1 to [`MAX_BATCH_SIZE`] (100,000). Default 500.
    #[schema(minimum = 1, maximum = 100000)]
    pub batch_size: usize,
    /// Most record bytes (key + value) per function call: 1 to [`MAX_BATCH_MAX_BYTES`]
    /// (16 MiB). Default 4 MiB.
    #[schema(minimum = 1, maximum = 16777216)]
    pub batch_max_bytes: usize,
    /// How long a batch waits for more records once it has one: 0 to [`MAX_LINGER_MS`]
    /// (60,000 ms). Default 20 ms.
    #[schema(minimum = 0, maximum = 60000)]
    pub linger_ms: u64,
    /// Retries of a record that failed with a retryable error (a cache outage, a timeout),
    /// after the first attempt: 0 to [`MAX_RETRIES`] (100). Default 5.
    #[schema(minimum = 0, maximum = 100)]
    pub max_retries: u32,
    /// Delay before the first retry, doubled each time up to `retry_backoff_max_ms`: 1 to
    /// [`MAX_RETRY_BACKOFF_MS`] (60,000 ms). Default 100 ms.
    #[schema(minimum = 1, maximum = 60000)]
    pub retry_backoff_ms: u64,
    /// Longest delay between retries: `retry_backoff_ms` to [`MAX_RETRY_BACKOFF_MAX_MS`]
    /// (600,000 ms). Default 5,000 ms.
    #[schema(minimum = 1, maximum = 600000)]
    pub retry_backoff_max_ms: u64,
    /// What happens to a record that failed for good. Default `dead-letter`.
    pub on_failure: FailurePolicy,
    /// The dead-letter topic; `<name>.dlq` when absent.
    pub dead_letter_topic: Option<String>,
    /// Where a new pipeline (a consumer group without committed offsets) starts.
    /// Default `earliest`. See [`StartPosition::validate`] for the ranges.
    pub start: StartPosition,
}

/// The most [`Processing::batch_size`].
pub const MAX_BATCH_SIZE: usize = 100_000;
/// The most [`Processing::batch_max_bytes`]: the engine's output cap per batch.
pub const MAX_BATCH_MAX_BYTES: usize = 16 * 1024 * 1024;
/// The most [`Processing::linger_ms`]: a minute.
pub const MAX_LINGER_MS: u64 = 60_000;
/// The most [`Processing::max_retries`].
pub const MAX_RETRIES: u32 = 100;
/// The most [`Processing::retry_backoff_ms`]: a minute.
pub const MAX_RETRY_BACKOFF_MS: u64 = 60_000;
/// The most [`Processing::retry_backoff_max_ms`]: ten minutes.
pub const MAX_RETRY_BACKOFF_MAX_MS: u64 = 600_000;
/// `Ok` when `value` of the setting `name` is within `min..=max`, else what to write instead.
fn within<T: PartialOrd + std::fmt::Display>(name: &str, value: T, min: T, max: T) -> Result<(), String> {
    if min <= value && value <= max {
        Ok(())
    } else {
        Err(format!("{name} = {value} is out of range: use a whole number from {min} to {max}"))
    }
}

impl Processing {
    /// Checks every numeric setting against its range (see each field).
    pub fn validate(&self) -> Result<(), String> {
        within("processing.batch_size", self.batch_size, 1, MAX_BATCH_SIZE)?;
        within("processing.batch_max_bytes", self.batch_max_bytes, 1, MAX_BATCH_MAX_BYTES)?;
        within("processing.linger_ms", self.linger_ms, 0, MAX_LINGER_MS)?;
        within("processing.max_retries", self.max_retries, 0, MAX_RETRIES)?;
        within("processing.retry_backoff_ms", self.retry_backoff_ms, 1, MAX_RETRY_BACKOFF_MS)?;
        within(
            "processing.retry_backoff_max_ms",
            self.retry_backoff_max_ms,
            self.retry_backoff_ms,
            MAX_RETRY_BACKOFF_MAX_MS,
        )?;
        self.start.validate().map_err(|e| format!("processing.start: {e}"))
    }
}

impl Default for Processing {
    fn default() -> Self {
        Processing {
            batch_size: 500,
            batch_max_bytes: 4 * 1024 * 1024,
            linger_ms: 20,
            max_retries: 5,
            retry_backoff_ms: 100,
            retry_backoff_max_ms: 5_000,
            on_failure: FailurePolicy::DeadLetter,
            dead_letter_topic: None,
            start: StartPosition::Earliest,
        }
    }
}

impl Processing {
    /// The delay before retry number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u64.saturating_pow(attempt.saturating_sub(1));
        Duration::from_millis(self.retry_backoff_ms.saturating_mul(factor).min(self.retry_backoff_max_ms))
    }
}

/// What happens to a record that failed for good (a fatal error, a trap, or retries spent).
/// The names follow Kafka Connect's `errors.tolerance` and dead-letter conventions:
/// `dead-letter` writes it, with error headers, to the dead-letter topic; `skip` logs and counts
/// it; `block` stops its partition at the record until an operator acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// Write the original record, with error headers, to the dead-letter topic; go on.
    DeadLetter,
    /// Log and count the record; go on.
    Skip,
    /// Stop the partition at the record, uncommitted, until an operator acts.
    Block,
}

/// A spec that cannot run, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pipeline {pipeline:?}: {reason}")]
pub struct SpecError {
    /// The pipeline's name.
    pub pipeline: String,
    /// What is wrong.
    pub reason: String,
}

fn allowed_chars(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Whether `name` is a valid pipeline name: 1 to 64 ASCII letters, digits, `_`, `-` or `.`,
/// and not `.` or `..` (a name is also a file name in the pipeline store).
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && allowed_chars(name) && name != "." && name != ".."
}

impl PipelineSpec {
    /// Checks everything that can be checked without a broker.
    pub fn validate(&self) -> Result<(), SpecError> {
        let fail = |reason: String| Err(SpecError { pipeline: self.name.clone(), reason });
        let valid_topic = |s: &str| !s.is_empty() && s.len() <= 249 && allowed_chars(s);
        if !is_valid_name(&self.name) {
            return fail(
                "the name must be 1 to 64 ASCII letters, digits, '_', '-' or '.' (and not `.` or `..`)".into(),
            );
        }
        if self.inputs.is_empty() {
            return fail("at least one input topic is required".into());
        }
        if !self.outputs.contains_key(DEFAULT_OUTPUT) {
            return fail(format!("outputs must name a `{DEFAULT_OUTPUT}` topic"));
        }
        for topic in self.inputs.iter().chain(self.outputs.values()).chain([&self.dead_letter_topic()]) {
            if !valid_topic(topic) {
                return fail(format!("{topic:?} is not a valid topic name"));
            }
        }
        if let Some(input) = self.inputs.iter().find(|t| self.outputs.values().any(|o| o == *t)) {
            return fail(format!("topic {input:?} is both an input and an output, which would loop forever"));
        }
        self.processing.validate().map_err(|reason| SpecError { pipeline: self.name.clone(), reason })?;
        let g = &self.group;
        if !SESSION_TIMEOUT_RANGE_MS.contains(&g.session_timeout_ms) {
            return fail(format!(
                "group.session_timeout_ms must be {} to {} (got {})",
                SESSION_TIMEOUT_RANGE_MS.start(),
                SESSION_TIMEOUT_RANGE_MS.end(),
                g.session_timeout_ms
            ));
        }
        if g.heartbeat_interval_ms < MIN_HEARTBEAT_INTERVAL_MS || g.heartbeat_interval_ms > g.session_timeout_ms / 3 {
            return fail(format!(
                "group.heartbeat_interval_ms must be {MIN_HEARTBEAT_INTERVAL_MS} to a third of session_timeout_ms ({}) (got {})",
                g.session_timeout_ms / 3,
                g.heartbeat_interval_ms
            ));
        }
        Ok(())
    }

    /// The consumer group of this pipeline.
    pub fn group_id(&self) -> String {
        format!("sluice.{}", self.name)
    }

    /// The dead-letter topic.
    pub fn dead_letter_topic(&self) -> String {
        self.processing.dead_letter_topic.clone().unwrap_or_else(|| format!("{}.dlq", self.name))
    }

    /// Every topic the pipeline reads or writes: its inputs, outputs and, under the
    /// `dead-letter` policy, its dead-letter topic.
    pub fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.inputs.iter().chain(self.outputs.values()).cloned().collect();
        if self.processing.on_failure == FailurePolicy::DeadLetter {
            topics.push(self.dead_letter_topic());
        }
        topics
    }

    /// What the Kafka source needs of this pipeline.
    pub fn consumer_spec(&self) -> ConsumerSpec {
        ConsumerSpec {
            pipeline: self.name.clone(),
            group_id: self.group_id(),
            topics: self.inputs.clone(),
            start: self.processing.start.clone(),
            group: self.group.clone(),
        }
    }

    /// The cache namespace.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PipelineSpec {
        PipelineSpec {
            name: "clicks".into(),
            inputs: vec!["clicks".into()],
            outputs: [("default".to_string(), "clicks.out".to_string())].into(),
            module: "f.wasm".into(),
            cache: default_cache(),
            namespace: None,
            config: BTreeMap::new(),
            processing: Processing::default(),
            group: GroupSettings::default(),
        }
    }

    #[test]
    fn a_minimal_spec_is_valid_and_derives_its_names() {
        let spec = spec();
        assert_eq!(spec.validate(), Ok(()));
        assert_eq!(spec.group_id(), "sluice.clicks");
        assert_eq!(spec.dead_letter_topic(), "clicks.dlq");
        assert_eq!(spec.namespace(), "clicks");
    }

    #[test]
    fn a_spec_without_default_output_is_refused() {
        let mut spec = spec();
        spec.outputs = [("alerts".to_string(), "alerts".to_string())].into();
        assert!(spec.validate().unwrap_err().reason.contains("`default`"));
    }

    #[test]
    fn a_spec_that_writes_to_its_own_input_is_refused() {
        let mut spec = spec();
        spec.outputs.insert("default".into(), "clicks".into());
        assert!(spec.validate().unwrap_err().reason.contains("loop forever"));
    }

    #[test]
    fn group_timings_out_of_range_are_refused_with_the_range() {
        let mut spec = spec();
        spec.group.session_timeout_ms = 999;
        assert!(spec.validate().unwrap_err().reason.contains("group.session_timeout_ms must be 1000 to 3600000"));
        spec.group.session_timeout_ms = 3_600_001;
        assert!(spec.validate().is_err());
        spec.group.session_timeout_ms = 3_000;
        spec.group.heartbeat_interval_ms = 1_001;
        assert!(spec.validate().unwrap_err().reason.contains("heartbeat_interval_ms must be 100 to a third"));
        spec.group.heartbeat_interval_ms = 99;
        assert!(spec.validate().is_err());
        spec.group.heartbeat_interval_ms = 1_000;
        assert_eq!(spec.validate(), Ok(()));
    }

    #[test]
    fn every_numeric_setting_is_refused_one_past_each_bound_and_accepted_at_it() {
        type Set = fn(&mut Processing, u64);
        let settings: [(&str, u64, u64, Set); 6] = [
            ("batch_size", 1, MAX_BATCH_SIZE as u64, |p, v| p.batch_size = v as usize),
            ("batch_max_bytes", 1, MAX_BATCH_MAX_BYTES as u64, |p, v| p.batch_max_bytes = v as usize),
            ("linger_ms", 0, MAX_LINGER_MS, |p, v| p.linger_ms = v),
            ("max_retries", 0, u64::from(MAX_RETRIES), |p, v| p.max_retries = v as u32),
            ("retry_backoff_ms", 1, MAX_RETRY_BACKOFF_MS, |p, v| {
                p.retry_backoff_ms = v;
                p.retry_backoff_max_ms = MAX_RETRY_BACKOFF_MAX_MS;
            }),
            ("retry_backoff_max_ms", Processing::default().retry_backoff_ms, MAX_RETRY_BACKOFF_MAX_MS, |p, v| {
                p.retry_backoff_max_ms = v
            }),
        ];
        for (name, min, max, set) in settings {
            let with = |value: u64| {
                let mut spec = spec();
                set(&mut spec.processing, value);
                spec.validate()
            };
            assert_eq!(with(min), Ok(()), "{name} = {min}");
            assert_eq!(with(max), Ok(()), "{name} = {max}");
            let over = with(max + 1).unwrap_err().reason;
            assert!(over.contains(name) && over.contains("out of range"), "{name} = {}: {over}", max + 1);
            if min > 0 {
                let under = with(min - 1).unwrap_err().reason;
                assert!(under.contains(name) && under.contains("out of range"), "{name} = {}: {under}", min - 1);
            }
        }
        // The largest values JSON can carry are refused too.
        let mut spec = spec();
        spec.processing.linger_ms = u64::MAX;
        assert!(spec.validate().unwrap_err().reason.contains("linger_ms"));
    }

    #[test]
    fn start_positions_are_checked_against_their_ranges() {
        let ok = [
            StartPosition::Timestamp(0),
            StartPosition::Timestamp(MAX_TIMESTAMP_MS),
            StartPosition::Offsets([("t".to_string(), [(0, 0)].into())].into()),
        ];
        for position in ok {
            assert_eq!(position.validate(), Ok(()), "{position:?}");
        }
        for (position, says) in [
            (StartPosition::Timestamp(-1), "timestamp = -1"),
            (StartPosition::Timestamp(MAX_TIMESTAMP_MS + 1), "timestamp"),
            (StartPosition::Offsets([("t".to_string(), [(-1, 0)].into())].into()), "partition = -1"),
            (StartPosition::Offsets([("t".to_string(), [(0, -2)].into())].into()), "offset = -2"),
        ] {
            let error = position.validate().unwrap_err();
            assert!(error.contains(says) && error.contains("out of range"), "{position:?}: {error}");
        }
        let mut spec = spec();
        spec.processing.start = StartPosition::Timestamp(-5);
        assert!(spec.validate().unwrap_err().reason.contains("processing.start: timestamp = -5"));
    }

    #[test]
    fn names_that_are_not_file_names_of_their_own_are_refused() {
        for name in ["", ".", "..", "../evil", "a/b", "a\\b", &"x".repeat(65)] {
            assert!(!is_valid_name(name), "{name:?}");
        }
        for name in ["clicks", "a.b-c_d", "...", &"x".repeat(64)] {
            assert!(is_valid_name(name), "{name:?}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = Processing { retry_backoff_ms: 100, retry_backoff_max_ms: 350, ..Processing::default() };
        let delays: Vec<u64> = (1..=4).map(|a| p.backoff(a).as_millis() as u64).collect();
        assert_eq!(delays, vec![100, 200, 350, 350]);
    }

    #[test]
    fn start_positions_read_from_toml() {
        #[derive(Deserialize)]
        struct Wrapper {
            start: StartPosition,
        }
        let w: Wrapper = toml::from_str("start = \"latest\"").unwrap();
        assert_eq!(w.start, StartPosition::Latest);
        let w: Wrapper = toml::from_str("start = { timestamp = 1700000000000 }").unwrap();
        assert_eq!(w.start, StartPosition::Timestamp(1_700_000_000_000));
    }
}
