//! How a consumer takes part in its consumer group, and where a new group starts: the
//! settings of a pipeline's spec that the source reads, with their ranges.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How a pipeline's consumer takes part in its consumer group `sluice.<name>`.
///
/// By default each runtime joins as a *static member* (Kafka's `group.instance.id`, KIP-345)
/// named after its node id, which is kept in the data directory. A runtime that restarts after
/// a crash takes its partitions back at once, as the same member, instead of waiting for the
/// broker to expire the dead member after `session_timeout_ms`. A runtime that dies for good
/// loses its partitions to the other members after `session_timeout_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GroupSettings {
    /// Join as a static member named after the node id. Default `true`. Two runtimes must
    /// never share a node id (do not copy a data directory between running nodes): the
    /// broker would fence one of them.
    pub static_membership: bool,
    /// How long the broker waits without a heartbeat before it gives a member's partitions to
    /// the others. Default 10,000 ms; 1,000 to 3,600,000 (brokers also enforce their own
    /// `group.min/max.session.timeout.ms`, 6 s to 30 min on Kafka by default).
    #[schema(minimum = 1000, maximum = 3600000)]
    pub session_timeout_ms: u64,
    /// How often the consumer sends heartbeats. Default 1,000 ms; 100 ms to a third of
    /// `session_timeout_ms`.
    #[schema(minimum = 100)]
    pub heartbeat_interval_ms: u64,
}

impl Default for GroupSettings {
    fn default() -> Self {
        GroupSettings { static_membership: true, session_timeout_ms: 10_000, heartbeat_interval_ms: 1_000 }
    }
}

/// The range of [`GroupSettings::session_timeout_ms`].
pub const SESSION_TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u64> = 1_000..=3_600_000;
/// The lowest [`GroupSettings::heartbeat_interval_ms`].
pub const MIN_HEARTBEAT_INTERVAL_MS: u64 = 100;

/// The latest [`StartPosition::Timestamp`]: 9999-12-31T23:59:59.999Z.
pub const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;

/// Where a new consumer group starts (or where an offset reset moves it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartPosition {
    /// The oldest record still in each partition.
    Earliest,
    /// Only records produced after the pipeline starts.
    Latest,
    /// The first record at or after this time (milliseconds since the Unix epoch): 0 to
    /// [`MAX_TIMESTAMP_MS`].
    Timestamp(i64),
    /// Explicit offsets per `topic` and partition (partitions and offsets 0 or more); other
    /// partitions start at the earliest.
    Offsets(BTreeMap<String, BTreeMap<i32, i64>>),
}

/// Written by hand: serde's externally tagged form mixes strings and one-key objects, and the
/// partitions of `offsets` are JSON object keys (strings of digits), which a derived schema
/// would call integers.
impl utoipa::PartialSchema for StartPosition {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Type};
        let whole = |min: i64, max: Option<i64>| {
            ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(min)).maximum(max)
        };
        let one_key = |key: &str, value: utoipa::openapi::schema::Schema| {
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property(key, value)
                .required(key)
                .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        };
        let timestamp = whole(0, Some(MAX_TIMESTAMP_MS))
            .description(Some("Milliseconds since the Unix epoch: 0 to 253,402,300,799,999 (the end of year 9999)."));
        let partitions = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property_names(Some(ObjectBuilder::new().schema_type(Type::String).pattern(Some("^[0-9]+$"))))
            .additional_properties(Some(whole(0, None)));
        let offsets = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some("Offsets by topic, then by partition number; partitions and offsets are 0 or more."))
            .additional_properties(Some(partitions));
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["earliest", "latest"])))
            .item(one_key("timestamp", timestamp.into()))
            .item(one_key("offsets", offsets.into()))
            .description(Some(
                "Where to start reading: `\"earliest\"` (the oldest record still in each partition), \
                 `\"latest\"` (only records produced from now on), `{\"timestamp\": ms}` (the first record at \
                 or after this time, in milliseconds since the Unix epoch) or \
                 `{\"offsets\": {topic: {partition: offset}}}` (explicit offsets; other partitions start at \
                 the earliest).",
            ))
            .examples([
                serde_json::json!("earliest"),
                serde_json::json!({"timestamp": 1_700_000_000_000_i64}),
                serde_json::json!({"offsets": {"clicks": {"0": 42, "1": 17}}}),
            ])
            .into()
    }
}

impl utoipa::ToSchema for StartPosition {}

impl StartPosition {
    /// Checks the timestamp or the offsets against their ranges.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            StartPosition::Earliest | StartPosition::Latest => Ok(()),
            StartPosition::Timestamp(ms) => within("timestamp", *ms, 0, MAX_TIMESTAMP_MS),
            StartPosition::Offsets(topics) => {
                for (topic, partitions) in topics {
                    for (partition, offset) in partitions {
                        within(&format!("topic {topic:?}: partition"), *partition, 0, i32::MAX)?;
                        within(&format!("topic {topic:?} partition {partition}: offset"), *offset, 0, i64::MAX)?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// `Ok` when `value` of the setting `name` is within `min..=max`, else what to write instead.
fn within<T: PartialOrd + std::fmt::Display>(name: &str, value: T, min: T, max: T) -> Result<(), String> {
    if min <= value && value <= max {
        Ok(())
    } else {
        Err(format!("{name} = {value} is out of range: use a whole number from {min} to {max}"))
    }
}
