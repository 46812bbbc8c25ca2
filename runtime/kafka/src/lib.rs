//! Sluice's Kafka client: every line of rdkafka code in the runtime is in this crate.
//!
//! - this file: how to reach a cluster ([`KafkaConfig`], shared by the source and the sink),
//!   and [`BrokerWatch`], which turns librdkafka's many per-broker errors and log lines into
//!   one line when the cluster becomes unreachable and one when it is back;
//! - [`group`]: how a consumer takes part in its group and where a new group starts;
//! - [`source`]: the consumer of a group's partitions, given a [`source::ConsumerSpec`] (never
//!   a pipeline's spec), with one queue per assigned partition and the group's offsets;
//! - [`sink`]: the producer of outputs and dead letters, with its backpressure.

pub mod group;
pub mod log;
pub mod sink;
pub mod source;

pub use rdkafka::error::KafkaError;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};

/// Connection settings for a Kafka cluster. Its `Debug` form hides the values of secret
/// properties ([`is_secret_property`]).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// librdkafka properties passed through as they are, for real clusters: TLS
    /// (`security.protocol`, `ssl.ca.location`, ...), SASL (`sasl.mechanisms`,
    /// `sasl.username`, ...), timeouts. Properties that would break the delivery guarantee
    /// (`enable.auto.commit`, `enable.auto.offset.store`, `enable.idempotence`, `group.id`)
    /// are refused, and so are those a pipeline's `group` settings set
    /// (`group.instance.id`, `session.timeout.ms`, `heartbeat.interval.ms`).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// Properties Sluice sets itself: its delivery guarantee depends on them, or a pipeline's
/// `group` settings set them per pipeline.
const RESERVED: [&str; 7] = [
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.idempotence",
    "group.id",
    "group.instance.id",
    "session.timeout.ms",
    "heartbeat.interval.ms",
];

/// Whether the librdkafka property `key` holds a secret (`sasl.password`,
/// `ssl.key.password`, `ssl.keystore.password`, `sasl.oauthbearer.client.secret`,
/// `sasl.jaas.config`, `ssl.key.pem`, ...), whose value must never leave the process.
pub fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "jaas", "oauthbearer.config"].iter().any(|word| key.contains(word)) || key == "ssl.key.pem"
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(key, value)| (key.as_str(), if is_secret_property(key) { "***" } else { value.as_str() }))
            .collect();
        f.debug_struct("KafkaConfig").field("brokers", &self.brokers).field("properties", &properties).finish()
    }
}

impl KafkaConfig {
    /// Settings for `brokers` with no extra property.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaConfig { brokers: brokers.into(), properties: BTreeMap::new() }
    }

    /// Checks the pass-through properties.
    pub fn validate(&self) -> Result<(), String> {
        match self.properties.keys().find(|k| RESERVED.contains(&k.as_str())) {
            Some(key) if key.starts_with("group.instance") || key.ends_with(".ms") => Err(format!(
                "kafka property {key:?} is set by Sluice from each pipeline's `group` settings \
                 (static_membership, session_timeout_ms, heartbeat_interval_ms); set it there"
            )),
            Some(key) => Err(format!("kafka property {key:?} is set by Sluice and cannot be overridden")),
            None => Ok(()),
        }
    }

    #[cfg(test)]
    fn with_property(mut self, key: &str, value: &str) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// A librdkafka configuration with the brokers and the pass-through properties.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }
}

/// How long after its last connection error a cluster must look reachable (a broker `UP` in
/// the client's statistics) before an outage is declared over.
const RECOVERY_QUIET: Duration = Duration::from_secs(2);

/// One pipeline's view of its connection to the cluster, shared by its consumer and producer.
///
/// librdkafka reports a lost broker many times over (each connection, each request, as an
/// error and as log lines). The watch logs the first such error as the start of an outage,
/// with the pipeline's name, keeps the repeats at debug level, counts the outage, and logs
/// one line when the client's statistics show a broker up again.
pub struct BrokerWatch {
    pipeline: String,
    brokers: String,
    /// When the current outage began, and when its last error was seen.
    outage: Mutex<Option<(Instant, Instant)>>,
    outages: AtomicU64,
}

impl BrokerWatch {
    /// The watch of `pipeline`'s clients of the cluster `kafka`.
    pub fn new(pipeline: &str, kafka: &KafkaConfig) -> BrokerWatch {
        BrokerWatch {
            pipeline: pipeline.to_owned(),
            brokers: kafka.brokers.clone(),
            outage: Mutex::new(None),
            outages: AtomicU64::new(0),
        }
    }

    /// Outages since the pipeline started.
    pub fn outages(&self) -> u64 {
        self.outages.load(Ordering::Relaxed)
    }

    /// How long the cluster has been unreachable, during an outage.
    pub fn unreachable_for(&self) -> Option<Duration> {
        self.lock().map(|(since, _)| since.elapsed())
    }

    fn lock(&self) -> Option<(Instant, Instant)> {
        *self.outage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An error reported by a client (`consumer` or `producer`). An error that leaves the
    /// client without a usable connection (the cluster cannot be reached, or refuses the
    /// client's credentials) starts an outage, counted and logged once; other errors are
    /// logged as they come.
    pub fn error(&self, client: &str, error: &KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        let refused =
            matches!(code, Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed));
        let connection = refused
            || matches!(
                code,
                Some(
                    RDKafkaErrorCode::BrokerTransportFailure
                        | RDKafkaErrorCode::AllBrokersDown
                        | RDKafkaErrorCode::Resolve
                        | RDKafkaErrorCode::OperationTimedOut
                )
            );
        if !connection {
            tracing::warn!(pipeline = %self.pipeline, "kafka {client}: {error}: {reason}");
            return;
        }
        let now = Instant::now();
        let mut outage = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        match outage.as_mut() {
            Some((_, last)) => {
                *last = now;
                tracing::debug!(pipeline = %self.pipeline, "kafka {client}: {error}: {reason}");
            }
            None => {
                *outage = Some((now, now));
                self.outages.fetch_add(1, Ordering::Relaxed);
                match refused {
                    true => tracing::warn!(
                        pipeline = %self.pipeline,
                        "the Kafka cluster at {} refuses this runtime's credentials ({error}: {reason}); records wait, \
                         nothing is committed until it accepts them (check the [kafka] sasl.* and ssl.* properties)",
                        self.brokers
                    ),
                    false => tracing::warn!(
                        pipeline = %self.pipeline,
                        "the Kafka cluster at {} is unreachable ({error}: {reason}); records wait, nothing is committed until it is back",
                        self.brokers
                    ),
                }
            }
        }
    }

    /// The client's statistics saw a broker in `state` (librdkafka's `UP`, `DOWN`, ...).
    pub fn broker_state(&self, state: &str) {
        if state != "UP" {
            return;
        }
        let mut outage = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((since, last)) = *outage
            && last.elapsed() >= RECOVERY_QUIET
        {
            *outage = None;
            tracing::info!(pipeline = %self.pipeline, "the Kafka cluster is reachable again after {:.1?}", since.elapsed());
        }
    }

    /// A librdkafka log line. Connection failures are reported once by [`BrokerWatch::error`],
    /// so their log lines are kept at debug level, as are warnings that a property shared by
    /// the consumer and producer settings does not apply to one of them.
    pub fn log(&self, client: &str, level: RDKafkaLogLevel, facility: &str, message: &str) {
        // librdkafka says "... is a consumer property and will be ignored by this producer
        // instance" (and the reverse) for the shared `[kafka] properties`: expected, not news.
        let other_client = facility == "CONFWARN" && message.contains("will be ignored by this");
        let repeat = matches!(facility, "FAIL" | "ERROR" | "REQTMOUT") || other_client || self.lock().is_some();
        match level {
            _ if repeat => tracing::debug!(pipeline = %self.pipeline, "librdkafka {client} {facility}: {message}"),
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(pipeline = %self.pipeline, "librdkafka {client} {facility}: {message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(pipeline = %self.pipeline, "librdkafka {client} {facility}: {message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(pipeline = %self.pipeline, "librdkafka {client} {facility}: {message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(pipeline = %self.pipeline, "librdkafka {client} {facility}: {message}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_counted_once_however_many_errors_it_raises() {
        let watch = BrokerWatch::new("clicks", &KafkaConfig::new("b:9092"));
        let down = KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure);
        for _ in 0..40 {
            watch.error("consumer", &down, "connection refused");
        }
        assert_eq!(watch.outages(), 1);
        assert!(watch.unreachable_for().is_some());
        // A broker up right after an error does not end it: errors may still be coming.
        watch.broker_state("UP");
        assert!(watch.unreachable_for().is_some());
        *watch.outage.lock().unwrap() = Some((Instant::now() - RECOVERY_QUIET * 2, Instant::now() - RECOVERY_QUIET));
        watch.broker_state("DOWN");
        assert!(watch.unreachable_for().is_some());
        watch.broker_state("UP");
        assert_eq!(watch.unreachable_for(), None);
        watch.error("producer", &KafkaError::Global(RDKafkaErrorCode::AllBrokersDown), "all down");
        assert_eq!(watch.outages(), 2);
    }

    /// Refused credentials leave the pipeline as stuck as a cluster that is down: one outage,
    /// shown in the status, however often librdkafka reports it while it retries.
    #[test]
    fn refused_credentials_are_an_outage_counted_once() {
        let watch = BrokerWatch::new("clicks", &KafkaConfig::new("b:9093"));
        let refused = [
            KafkaError::Global(RDKafkaErrorCode::Authentication),
            KafkaError::Global(RDKafkaErrorCode::SaslAuthenticationFailed),
        ];
        for error in refused.iter().cycle().take(20) {
            watch.error("consumer", error, "SASL authentication error: invalid credentials");
        }
        assert_eq!(watch.outages(), 1);
        assert!(watch.unreachable_for().is_some());
        // An error that is not about the connection starts none.
        let other = BrokerWatch::new("clicks", &KafkaConfig::new("b:9093"));
        other.error("producer", &KafkaError::Global(RDKafkaErrorCode::TopicAuthorizationFailed), "not allowed");
        assert_eq!((other.outages(), other.unreachable_for()), (0, None));
    }

    #[test]
    fn properties_pass_through_except_those_the_guarantee_depends_on() {
        let tls = KafkaConfig::new("b:9093").with_property("security.protocol", "ssl");
        assert_eq!(tls.validate(), Ok(()));
        assert_eq!(tls.client_config().get("security.protocol"), Some("ssl"));
        for reserved in RESERVED {
            let error = KafkaConfig::new("b:9092").with_property(reserved, "x").validate().unwrap_err();
            assert!(error.contains(reserved), "{error}");
        }
    }

    #[test]
    fn secret_properties_never_appear_in_the_debug_form() {
        let config = KafkaConfig::new("b:9093")
            .with_property("sasl.username", "app")
            .with_property("sasl.password", "hunter2")
            .with_property("ssl.key.password", "hunter3")
            .with_property("sasl.oauthbearer.client.secret", "hunter4");
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter"), "{shown}");
        assert!(
            shown.contains("\"sasl.username\": \"app\"") && shown.contains("\"sasl.password\": \"***\""),
            "{shown}"
        );
        assert!(!is_secret_property("security.protocol") && !is_secret_property("ssl.ca.location"));
    }
}
