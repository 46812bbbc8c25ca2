//! How to reach a Kafka cluster: the settings shared by the source and the sink.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

/// Connection settings for a Kafka cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// librdkafka properties passed through as they are, for real clusters: TLS
    /// (`security.protocol`, `ssl.ca.location`, ...), SASL (`sasl.mechanisms`,
    /// `sasl.username`, ...), timeouts. Properties that would break the delivery guarantee
    /// (`enable.auto.commit`, `enable.auto.offset.store`, `enable.idempotence`, `group.id`)
    /// are refused.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// Properties Sluice sets itself because its delivery guarantee depends on them.
const RESERVED: [&str; 4] = ["enable.auto.commit", "enable.auto.offset.store", "enable.idempotence", "group.id"];

impl KafkaConfig {
    /// Settings for `brokers` with no extra property.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaConfig { brokers: brokers.into(), properties: BTreeMap::new() }
    }

    /// Checks the pass-through properties.
    pub fn validate(&self) -> Result<(), String> {
        match self.properties.keys().find(|k| RESERVED.contains(&k.as_str())) {
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
    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
