//! The Kafka sink: an idempotent producer shared by a pipeline's partition workers, for
//! outputs and dead letters. Sending waits (and so holds the partition back) while the
//! producer's bounded queue is full, instead of buffering without limit.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};

use crate::{BrokerWatch, KafkaConfig};
use sluice_record::Header;

/// Most bytes the producer queues before `send` waits. Default 64 MiB.
pub const PRODUCER_QUEUE_KBYTES: u32 = 64 * 1024;
/// How long `send` waits before trying again when the producer queue is full.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(5);

/// A record to produce.
pub struct Outgoing<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The key, if any.
    pub key: Option<&'a [u8]>,
    /// The value, if any.
    pub value: Option<&'a [u8]>,
    /// The headers.
    pub headers: &'a [Header],
    /// Headers added after `headers` (dead-letter details).
    pub extra_headers: &'a [(&'static str, String)],
}

/// A pipeline's producer.
pub struct KafkaSink {
    producer: FutureProducer<SinkContext>,
}

/// The producer's errors and log lines go to the pipeline's [`BrokerWatch`].
pub struct SinkContext {
    watch: Arc<BrokerWatch>,
}

impl ClientContext for SinkContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.watch.error("producer", &error, reason);
    }

    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.watch.log("producer", level, facility, message);
    }
}

/// A send the broker has not acknowledged yet.
pub struct PendingDelivery(DeliveryFuture);

impl PendingDelivery {
    /// Waits for the broker's acknowledgement.
    pub async fn acknowledged(self) -> Result<(), KafkaError> {
        match self.0.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((error, _))) => Err(error),
            Err(_) => Err(KafkaError::Canceled),
        }
    }
}

impl KafkaSink {
    /// An idempotent producer for pipeline `pipeline`.
    pub fn new(pipeline: &str, kafka: &KafkaConfig, watch: Arc<BrokerWatch>) -> anyhow::Result<Self> {
        let producer = kafka
            .client_config()
            .set("client.id", format!("sluice-{pipeline}"))
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("queue.buffering.max.kbytes", PRODUCER_QUEUE_KBYTES.to_string())
            .create_with_context(SinkContext { watch })
            .with_context(|| format!("pipeline {pipeline}: cannot create the Kafka producer"))?;
        Ok(KafkaSink { producer })
    }

    /// Queues `record` for sending; waits while the producer queue is full.
    pub async fn send(&self, record: &Outgoing<'_>) -> Result<PendingDelivery, KafkaError> {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len() + record.extra_headers.len());
        for h in record.headers {
            headers = headers.insert(KafkaHeader { key: &h.key, value: Some(&h.value) });
        }
        for (key, value) in record.extra_headers {
            headers = headers.insert(KafkaHeader { key, value: Some(value.as_bytes()) });
        }
        let mut future_record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(record.topic).headers(headers);
        if let Some(key) = record.key {
            future_record = future_record.key(key);
        }
        if let Some(value) = record.value {
            future_record = future_record.payload(value);
        }
        loop {
            match self.producer.send_result(future_record) {
                Ok(delivery) => return Ok(PendingDelivery(delivery)),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    future_record = returned;
                    tokio::time::sleep(QUEUE_FULL_WAIT).await;
                }
                Err((error, _)) => return Err(error),
            }
        }
    }

    /// Waits up to `timeout` for everything queued to be sent; `false` when some was not.
    pub fn flush(&self, timeout: Duration) -> bool {
        self.producer.flush(timeout).is_ok()
    }
}
