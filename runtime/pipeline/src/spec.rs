//! What a pipeline is, as an operator declares it: its topics, function, cache, settings for
//! the function, and how records are batched, retried and failed. Every default is here.
//!
//! A spec is typed where its text has a form: the module is a [`ModuleDigest`] and the cache a
//! [`CacheSetting`], both read (and refused, naming the key) when the spec is read, so a spec
//! that exists has a well-formed digest and cache URL.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sluice_cache::{CacheError, CacheUrl, redact_url};
pub use sluice_engine::ModuleDigest;
pub use sluice_kafka::group::{
    GroupSettings, MAX_TIMESTAMP_MS, MIN_HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_RANGE_MS, StartPosition,
};
use sluice_kafka::source::ConsumerSpec;

/// The name of the default output in [`PipelineSpec::outputs`].
pub const DEFAULT_OUTPUT: &str = "default";

/// One pipeline: consume `inputs`, run the function on every record, produce to `outputs`.
/// Unknown fields are refused (`422 invalid_spec` over the admin API).
///
/// `M` is what names the function: a [`ModuleDigest`] in the registry, except in the config
/// file of `sluice serve`, which declares pipelines with a module file path
/// (`PipelineSpec<PathBuf>`) that the runtime stores and turns into its digest
/// ([`PipelineSpec::with_module`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, bound(deserialize = "M: Deserialize<'de>"))]
#[schema(bound = "", example = json!({
    "name": "clicks",
    "inputs": ["clicks"],
    "outputs": {"default": "clicks.enriched"},
    "module": "sha256:9f2c0a5b3d1e4f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c",
    "processing": {"batch_size": 200, "on_failure": "dead-letter"}
}))]
pub struct PipelineSpec<M = ModuleDigest> {
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
    /// The function: the digest of its module in the registry, `sha256:<64 hex digits>`
    /// (anything else, the 64 hex digits alone included, is refused: 422 `invalid_spec` naming
    /// `module`; a file path in `sluice serve`'s config file). In a deploy it may be left out:
    /// the deployed module replaces it.
    #[serde(deserialize_with = "module_field")]
    #[schema(value_type = String, pattern = "^sha256:[0-9a-fA-F]{64}$")]
    pub module: M,
    /// The cache the function's `cache` calls use: `memory://` (the default),
    /// `memory://?capacity_mb=N`, `redis://...`, `memcache://...`. Checked when the spec is
    /// read: a URL that does not parse is refused (422 `invalid_spec` naming `cache`) and
    /// nothing is stored. A user name or password in the URL is kept in the stored spec only:
    /// answers, errors and logs show the URL with its user info replaced by `***`. A spec
    /// whose URL has `***` for its user info (a GET answer sent back) is refused: write the
    /// user name and password again.
    #[serde(default, deserialize_with = "cache_field")]
    #[schema(value_type = String, default = "memory://")]
    pub cache: CacheSetting,
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

/// Reads the `module` key, naming it when it is refused.
fn module_field<'de, D: Deserializer<'de>, M: Deserialize<'de>>(deserializer: D) -> Result<M, D::Error> {
    M::deserialize(deserializer).map_err(|e| serde::de::Error::custom(format_args!("module: {e}")))
}

/// Reads the `cache` key, naming it when it is refused.
fn cache_field<'de, D: Deserializer<'de>>(deserializer: D) -> Result<CacheSetting, D::Error> {
    CacheSetting::deserialize(deserializer).map_err(|e| serde::de::Error::custom(format_args!("cache: {e}")))
}

/// A pipeline's cache URL: the text as given, checked ([`CacheUrl::parse`]) when it is read,
/// so a spec never holds a URL that cannot be parsed.
///
/// The text is kept whole, user info (a Redis user name and password) included, because the
/// pipeline store must be able to connect again after a restart: it is what the spec
/// serialises to, and only the store and the declaration digest serialise a spec as it is.
/// Everything else shows it without user info: [`fmt::Display`] and [`fmt::Debug`] give
/// [`redact_url`]'s form (`redis://***@host:6379`), and an answer about a pipeline carries
/// [`CacheSetting::redacted`].
///
/// A URL whose user info is `***`, the mark that hides it in those answers, is refused where
/// an operator gives a spec ([`PipelineSpec::check_given`]): a PUT of a GET answer would
/// otherwise store `***` as the user name. (A user name of three stars is written `%2A%2A%2A`.)
#[derive(Clone)]
pub struct CacheSetting {
    /// The URL as given, secrets included.
    text: String,
    /// What it says.
    url: CacheUrl,
}

impl CacheSetting {
    /// The default, `memory://`: the runtime's shared in-memory cache.
    pub const DEFAULT: &str = "memory://";

    /// Checks `text` ([`CacheUrl::parse`]); the error never shows user info.
    pub fn parse(text: &str) -> Result<CacheSetting, CacheError> {
        Ok(CacheSetting { url: CacheUrl::parse(text)?, text: text.to_owned() })
    }

    /// The parsed URL, credentials included, to connect with.
    pub fn url(&self) -> &CacheUrl {
        &self.url
    }

    /// Whether this is the plain `memory://`, which every such pipeline of a runtime shares
    /// (a `memory://` with settings gets a cache of its own).
    pub fn is_shared_memory(&self) -> bool {
        matches!(self.text.as_str(), "memory://" | "memory:///")
    }

    /// This URL without user info, as answers show it: the text is [`redact_url`]'s and the
    /// parsed URL holds no credentials.
    pub fn redacted(&self) -> CacheSetting {
        let url = match &self.url {
            CacheUrl::Redis(config) => {
                CacheUrl::Redis(sluice_cache::RedisConfig { username: None, password: None, ..config.clone() })
            }
            other => other.clone(),
        };
        CacheSetting { text: redact_url(&self.text), url }
    }

    /// Whether the user info is `***`, the mark of [`CacheSetting::redacted`].
    pub fn is_redacted(&self) -> bool {
        self.text.contains('@') && redact_url(&self.text) == self.text
    }
}

impl Default for CacheSetting {
    fn default() -> Self {
        CacheSetting::parse(CacheSetting::DEFAULT).expect("the default cache URL parses")
    }
}

impl FromStr for CacheSetting {
    type Err = CacheError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        CacheSetting::parse(text)
    }
}

impl PartialEq for CacheSetting {
    /// The same text: the same cache, the same settings and the same credentials.
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for CacheSetting {}

impl fmt::Display for CacheSetting {
    /// The URL without user info ([`redact_url`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.text))
    }
}

impl fmt::Debug for CacheSetting {
    /// The URL without user info ([`redact_url`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheSetting({:?})", redact_url(&self.text))
    }
}

impl Serialize for CacheSetting {
    /// The text as given, user info included: for the pipeline store. Answers serialise
    /// [`CacheSetting::redacted`].
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for CacheSetting {
    /// From a string that [`CacheUrl::parse`] accepts.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = CacheSetting;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a cache URL: memory://, redis://HOST:PORT or memcache://HOST:PORT")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<CacheSetting, E> {
                CacheSetting::parse(text).map_err(|e| match e {
                    CacheError::InvalidArgument(message) => E::custom(message),
                    other => E::custom(other),
                })
            }
        }
        deserializer.deserialize_str(Text)
    }
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
    /// What the pipeline promises about its outputs and cache writes. Default
    /// `at-least-once`, which is not written out, so a spec stored before this setting existed
    /// is stored, and digested, the same. See docs/delivery.md.
    #[serde(skip_serializing_if = "Guarantee::is_default")]
    pub guarantee: Guarantee,
}

/// A pipeline's delivery guarantee (docs/delivery.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Guarantee {
    /// A batch's outputs are produced, then its offsets committed: after a crash or a
    /// rebalance, the uncommitted batch runs again, and its outputs and cache writes repeat.
    #[default]
    AtLeastOnce,
    /// A batch's outputs, dead letters and input offset are committed in one Kafka
    /// transaction, and its cache writes applied once with the partition's position (Redis,
    /// or the in-memory cache within the process's lifetime; Memcached is refused). Readers
    /// of the outputs must read with `isolation.level=read_committed`.
    ExactlyOnce,
}

impl Guarantee {
    /// Whether this is the default, `at-least-once`.
    pub fn is_default(&self) -> bool {
        *self == Guarantee::AtLeastOnce
    }
}

/// The longest pipeline name, in bytes. The name is also a consumer group id and a file name.
pub const MAX_NAME_LEN: usize = 64;
/// The longest topic name Kafka accepts, in bytes.
pub const MAX_TOPIC_NAME_LEN: usize = 249;
/// The most [`Processing::batch_size`].
pub const MAX_BATCH_SIZE: usize = 100_000;
/// The most [`Processing::batch_max_bytes`]: 16 MiB, the engine's default cap on a batch's
/// output bytes.
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
            guarantee: Guarantee::AtLeastOnce,
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
    !name.is_empty() && name.len() <= MAX_NAME_LEN && allowed_chars(name) && name != "." && name != ".."
}

impl<M> PipelineSpec<M> {
    /// Checks everything that can be checked without a broker.
    pub fn validate(&self) -> Result<(), SpecError> {
        let fail = |reason: String| Err(SpecError { pipeline: self.name.clone(), reason });
        let valid_topic = |s: &str| !s.is_empty() && s.len() <= MAX_TOPIC_NAME_LEN && allowed_chars(s);
        if !is_valid_name(&self.name) {
            return fail(format!(
                "the name must be 1 to {MAX_NAME_LEN} ASCII letters, digits, '_', '-' or '.' (and not `.` or `..`)"
            ));
        }
        if self.inputs.is_empty() {
            return fail("at least one input topic is required".into());
        }
        if !self.outputs.contains_key(DEFAULT_OUTPUT) {
            return fail(format!("outputs must name a `{DEFAULT_OUTPUT}` topic"));
        }
        for topic in self.inputs.iter().chain(self.outputs.values()).chain([&self.dead_letter_topic()]) {
            if !valid_topic(topic) {
                return fail(format!(
                    "{topic:?} is not a valid topic name: 1 to {MAX_TOPIC_NAME_LEN} ASCII letters, digits, '_', '-' or '.'"
                ));
            }
        }
        if let Some(input) = self.inputs.iter().find(|t| self.outputs.values().any(|o| o == *t)) {
            return fail(format!("topic {input:?} is both an input and an output, which would loop forever"));
        }
        self.processing.validate().map_err(|reason| SpecError { pipeline: self.name.clone(), reason })?;
        if self.processing.guarantee == Guarantee::ExactlyOnce && matches!(self.cache.url(), CacheUrl::Memcached(_)) {
            return fail(
                "processing.guarantee = exactly-once needs a cache that writes a batch's effects and its position in \
                 one atomic step: use redis:// or memory://; Memcached has no multi-key atomicity, so its writes \
                 can only be at-least-once (docs/delivery.md)"
                    .into(),
            );
        }
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

    /// Checks a spec as an operator gives it (over the API or in a config file), which is
    /// [`PipelineSpec::validate`] and more: its cache URL must not be the form answers show
    /// it in, with `***` for user info (see [`CacheSetting`]). Stored specs are only
    /// validated, so a record stored before this check still loads.
    pub fn check_given(&self) -> Result<(), SpecError> {
        self.validate()?;
        if self.cache.is_redacted() {
            return Err(SpecError {
                pipeline: self.name.clone(),
                reason: format!(
                    "cache: {} has `***` for its user info, the mark that hides a password in answers; \
                     write the user name and password again (a GET answer sent back as it is cannot carry them)",
                    self.cache
                ),
            });
        }
        Ok(())
    }

    /// The same spec, its function named by `module`: a declared pipeline once its module
    /// file is stored.
    pub fn with_module<N>(self, module: N) -> PipelineSpec<N> {
        PipelineSpec {
            name: self.name,
            inputs: self.inputs,
            outputs: self.outputs,
            module,
            cache: self.cache,
            namespace: self.namespace,
            config: self.config,
            processing: self.processing,
            group: self.group,
        }
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
            module: ModuleDigest::of(b"f"),
            cache: CacheSetting::default(),
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
    fn exactly_once_is_accepted_on_redis_and_memory_and_refused_on_memcached_naming_why() {
        let mut spec = spec();
        assert_eq!(spec.processing.guarantee, Guarantee::AtLeastOnce, "the default");
        spec.processing.guarantee = Guarantee::ExactlyOnce;
        for url in ["memory://", "redis://127.0.0.1:6379"] {
            spec.cache = CacheSetting::parse(url).unwrap();
            assert_eq!(spec.validate(), Ok(()), "{url}");
        }
        spec.cache = CacheSetting::parse("memcache://127.0.0.1:11211").unwrap();
        let refused = spec.validate().unwrap_err();
        assert_eq!(refused.pipeline, "clicks");
        assert!(refused.reason.contains("exactly-once") && refused.reason.contains("Memcached"), "{refused}");
        spec.processing.guarantee = Guarantee::AtLeastOnce;
        assert_eq!(spec.validate(), Ok(()), "at-least-once runs on Memcached");
    }

    #[test]
    fn the_guarantee_is_read_in_kebab_case() {
        let processing: Processing = serde_json::from_str(r#"{"guarantee": "exactly-once"}"#).unwrap();
        assert_eq!(processing.guarantee, Guarantee::ExactlyOnce);
        let unknown = serde_json::from_str::<Processing>(r#"{"guarantee": "exactly-twice"}"#).unwrap_err();
        assert!(unknown.to_string().contains("exactly-twice"), "{unknown}");
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
        for name in ["", ".", "..", "../evil", "a/b", "a\\b", &"x".repeat(MAX_NAME_LEN + 1)] {
            assert!(!is_valid_name(name), "{name:?}");
        }
        for name in ["clicks", "a.b-c_d", "...", &"x".repeat(MAX_NAME_LEN)] {
            assert!(is_valid_name(name), "{name:?}");
        }
    }

    #[test]
    fn a_topic_name_longer_than_kafka_takes_is_refused_naming_the_limit() {
        let mut spec = spec();
        spec.inputs = vec!["t".repeat(MAX_TOPIC_NAME_LEN)];
        assert_eq!(spec.validate(), Ok(()));
        spec.inputs = vec!["t".repeat(MAX_TOPIC_NAME_LEN + 1)];
        let reason = spec.validate().unwrap_err().reason;
        assert!(reason.contains("is not a valid topic name: 1 to 249"), "{reason}");
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

    /// The spec of [`spec`] as JSON, with `key` set to `value`.
    fn json_with(key: &str, value: serde_json::Value) -> serde_json::Value {
        let mut json = serde_json::to_value(spec()).unwrap();
        json[key] = value;
        json
    }

    #[test]
    fn a_spec_reads_and_writes_its_module_and_cache_as_text() {
        let json = serde_json::to_value(spec()).unwrap();
        assert_eq!(json["module"], ModuleDigest::of(b"f").to_string());
        assert_eq!(json["cache"], "memory://");
        let again: PipelineSpec = serde_json::from_value(json).unwrap();
        assert_eq!(again, spec());
        let mut without_cache = serde_json::to_value(spec()).unwrap();
        without_cache.as_object_mut().unwrap().remove("cache");
        let read: PipelineSpec = serde_json::from_value(without_cache).unwrap();
        assert!(read.cache.is_shared_memory(), "memory:// by default");
    }

    #[test]
    fn a_module_that_is_not_a_digest_is_refused_naming_the_key() {
        let hex = ModuleDigest::of(b"f").hex().to_owned();
        for module in ["f.wasm", "sha256:abc", hex.as_str(), "", &format!("sha256:{hex}00")] {
            let error = serde_json::from_value::<PipelineSpec>(json_with("module", module.into())).unwrap_err();
            let message = error.to_string();
            assert!(
                message.starts_with("module: ") && message.contains("expected sha256:<64 hex digits>"),
                "{module:?}: {message}"
            );
        }
        let error = serde_json::from_value::<PipelineSpec>(json_with("module", 7.into())).unwrap_err();
        assert!(error.to_string().starts_with("module: invalid type"), "{error}");
    }

    #[test]
    fn a_bad_cache_url_is_refused_naming_the_key_without_its_password() {
        for (url, says) in [
            ("redis://app:hunter2@h:0", "port \"0\" of h"),
            ("localhost:6379", "no scheme"),
            ("redis://app:hunter2@h?pool_size=1", "unknown setting \"pool_size\""),
        ] {
            let message =
                serde_json::from_value::<PipelineSpec>(json_with("cache", url.into())).unwrap_err().to_string();
            assert!(message.starts_with("cache: cache URL ") && message.contains(says), "{url}: {message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
        let toml = "name = \"a\"\ninputs = [\"a\"]\noutputs = { default = \"b\" }\nmodule = \"x.wasm\"\ncache = \"redis://u:hunter2@h:99999\"\n";
        // TOML's error shows the line it is on (with the password): `sluice serve` shows only
        // the message, which hides it.
        let error = toml::from_str::<PipelineSpec<std::path::PathBuf>>(toml).unwrap_err();
        let message = error.message();
        assert!(message.starts_with("cache: cache URL") && !message.contains("hunter2"), "{message}");
    }

    #[test]
    fn the_cache_password_is_shown_by_neither_debug_nor_display() {
        let mut spec = spec();
        spec.cache = "redis://app:hunter2@h:6380/1".parse().unwrap();
        for shown in [format!("{spec:?}"), format!("{spec:#?}"), spec.cache.to_string(), format!("{:?}", spec.cache)] {
            assert!(!shown.contains("hunter2") && !shown.contains("app"), "{shown}");
            assert!(shown.contains("redis://***@h:6380/1"), "{shown}");
        }
        // The store keeps it: the spec serialises whole.
        assert_eq!(serde_json::to_value(&spec).unwrap()["cache"], "redis://app:hunter2@h:6380/1");
        let redacted = spec.cache.redacted();
        assert_eq!(serde_json::to_value(&redacted).unwrap(), "redis://***@h:6380/1");
        let sluice_cache::CacheUrl::Redis(config) = redacted.url() else { panic!() };
        assert_eq!((&config.username, &config.password), (&None, &None));
    }

    #[test]
    fn a_cache_url_sent_back_with_its_user_info_hidden_is_refused_where_given() {
        let mut spec = spec();
        spec.cache = "redis://app:hunter2@h".parse().unwrap();
        assert_eq!(spec.check_given(), Ok(()));
        spec.cache = spec.cache.redacted();
        assert_eq!(spec.validate(), Ok(()), "a stored spec still loads");
        let error = spec.check_given().unwrap_err().reason;
        assert!(error.starts_with("cache: redis://***@h has `***` for its user info"), "{error}");
        spec.cache = "redis://%2A%2A%2A@h".parse().unwrap();
        assert_eq!(spec.check_given(), Ok(()), "three stars, percent-encoded, are a user name");
        for url in ["memory://", "memcache://a:1", "redis://h"] {
            spec.cache = url.parse().unwrap();
            assert_eq!(spec.check_given(), Ok(()), "{url}");
        }
    }

    #[test]
    fn a_declared_spec_names_a_module_file_and_takes_a_digest_once_stored() {
        let toml = "name = \"a\"\ninputs = [\"a\"]\noutputs = { default = \"b\" }\nmodule = \"f.wasm\"\n";
        let declared: PipelineSpec<std::path::PathBuf> = toml::from_str(toml).unwrap();
        assert_eq!(declared.module, std::path::Path::new("f.wasm"));
        let digest = ModuleDigest::of(b"f");
        let spec = declared.clone().with_module(digest.clone());
        assert_eq!((spec.name.as_str(), &spec.module, &spec.inputs), ("a", &digest, &declared.inputs));
    }
}
