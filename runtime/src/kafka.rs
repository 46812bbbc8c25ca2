//! How to reach a Kafka cluster: the settings shared by the source and the sink.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
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
    /// are refused.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// Properties Sluice sets itself because its delivery guarantee depends on them.
const RESERVED: [&str; 4] = ["enable.auto.commit", "enable.auto.offset.store", "enable.idempotence", "group.id"];

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
