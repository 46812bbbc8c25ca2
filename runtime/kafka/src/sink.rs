//! The Kafka sink: an idempotent producer shared by a pipeline's partition workers, for
//! outputs and dead letters. Sending waits (and so holds the partition back) while the
//! producer's bounded queue is full, instead of buffering without limit.
//!
//! In exactly-once mode each partition worker has a transactional producer of its own
//! ([`KafkaSink::transactional`]), whose id names the pipeline and the partition: a batch's
//! outputs, dead letters and input offset are committed in one transaction, and a new owner
//! of the partition fences the old one's producer when it starts.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::{BrokerWatch, KafkaConfig};
use sluice_record::Header;

/// Most bytes the producer queues before `send` waits. Default 64 MiB.
pub const PRODUCER_QUEUE_KBYTES: u32 = 64 * 1024;
/// The broker aborts a transaction left open this long (`transaction.timeout.ms`), so a
/// worker that died mid-batch holds `read_committed` readers back at most this long when no
/// new owner fences it first. Default 60 s.
pub const TRANSACTION_TIMEOUT_MS: u32 = 60_000;
/// Longest wait for one transaction step (init, offsets, commit, abort) before it fails and
/// is tried again.
pub const TRANSACTION_STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest message the producer sends when the pipeline's Kafka properties do not set
/// `message.max.bytes`: librdkafka's default. A larger output fails its record
/// (`output-too-large`) rather than the producer's queue.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;
/// Bytes of framing librdkafka counts for one message on top of its key, value and headers
/// when it checks `message.max.bytes` (36 in the v2 format), rounded up.
pub const MESSAGE_OVERHEAD_BYTES: usize = 40;
/// Bytes of framing per header (the varint lengths of its name and value), at most.
pub const HEADER_OVERHEAD_BYTES: usize = 10;
/// How a failed transaction step should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionFailure {
    /// Another producer with the same id took over, or the producer cannot go on: make a
    /// new one (which fences in its turn) or give the partition up.
    Fatal,
    /// Abort the transaction, then run it again.
    Abort,
    /// Try the same step again.
    Retry,
}

impl TransactionFailure {
    /// What to do after `error` from a transaction step.
    pub fn of(error: &KafkaError) -> TransactionFailure {
        match error {
            KafkaError::Transaction(e) if e.is_fatal() => TransactionFailure::Fatal,
            KafkaError::Transaction(e) if e.txn_requires_abort() => TransactionFailure::Abort,
            KafkaError::Transaction(e) if e.is_retriable() => TransactionFailure::Retry,
            _ => TransactionFailure::Abort,
        }
    }
}

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
    max_message_bytes: usize,
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

/// `message.max.bytes` of `config`, or [`DEFAULT_MAX_MESSAGE_BYTES`].
fn max_message_bytes(config: &rdkafka::ClientConfig, pipeline: &str) -> anyhow::Result<usize> {
    match config.get("message.max.bytes") {
        None => Ok(DEFAULT_MAX_MESSAGE_BYTES),
        Some(text) => text.trim().parse().map_err(|_| {
            anyhow::anyhow!(
                "pipeline {pipeline}: the Kafka property message.max.bytes={text:?} is not a number of bytes"
            )
        }),
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
        let config = kafka.client_config();
        let max_message_bytes = max_message_bytes(&config, pipeline)?;
        let producer = config
            .clone()
            .set("client.id", format!("sluice-{pipeline}"))
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("queue.buffering.max.kbytes", PRODUCER_QUEUE_KBYTES.to_string())
            .create_with_context(SinkContext { watch })
            .with_context(|| format!("pipeline {pipeline}: cannot create the Kafka producer"))?;
        Ok(KafkaSink { producer, max_message_bytes })
    }

    /// A transactional producer with id `transactional_id`, for one partition worker of
    /// pipeline `pipeline` in exactly-once mode. Call [`KafkaSink::init_transactions`] before
    /// the first transaction.
    pub fn transactional(
        pipeline: &str,
        kafka: &KafkaConfig,
        watch: Arc<BrokerWatch>,
        transactional_id: &str,
    ) -> anyhow::Result<Self> {
        let config = kafka.client_config();
        let max_message_bytes = max_message_bytes(&config, pipeline)?;
        let producer = config
            .clone()
            .set("client.id", format!("sluice-{pipeline}"))
            .set("transactional.id", transactional_id)
            .set("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS.to_string())
            .set("linger.ms", "5")
            .set("queue.buffering.max.kbytes", PRODUCER_QUEUE_KBYTES.to_string())
            .create_with_context(SinkContext { watch })
            .with_context(|| {
                format!("pipeline {pipeline}: cannot create the transactional producer {transactional_id}")
            })?;
        Ok(KafkaSink { producer, max_message_bytes })
    }

    /// The largest message this producer sends (`message.max.bytes`), as librdkafka counts
    /// it: see [`KafkaSink::message_bytes`].
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// The size librdkafka gives a message with this key, value and headers when it checks it
    /// against `message.max.bytes`, or a few bytes more, never less.
    pub fn message_bytes(key: Option<&[u8]>, value: Option<&[u8]>, headers: &[Header]) -> usize {
        let headers: usize = headers.iter().map(|h| h.key.len() + h.value.len() + HEADER_OVERHEAD_BYTES).sum();
        MESSAGE_OVERHEAD_BYTES + key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len) + headers
    }

    /// Registers the transactional id with the broker's coordinator, which aborts a
    /// transaction an earlier producer with the same id left open and fences that producer.
    /// Blocks: call it off the async executor.
    pub fn init_transactions(&self) -> Result<(), KafkaError> {
        self.producer.init_transactions(TRANSACTION_STEP_TIMEOUT)
    }

    /// Begins a transaction. Does not block.
    pub fn begin_transaction(&self) -> Result<(), KafkaError> {
        self.producer.begin_transaction()
    }

    /// Adds the consumed position `topic`/`partition` at `next_offset` to the transaction, on
    /// behalf of the consumer `group`, and commits it: the outputs sent since
    /// [`KafkaSink::begin_transaction`] and the position become visible together. Blocks.
    pub fn commit_transaction(
        &self,
        topic: &str,
        partition: i32,
        next_offset: i64,
        group: &ConsumerGroupMetadata,
    ) -> Result<(), KafkaError> {
        let mut offsets = TopicPartitionList::new();
        offsets.add_partition_offset(topic, partition, Offset::Offset(next_offset))?;
        self.producer.send_offsets_to_transaction(&offsets, group, TRANSACTION_STEP_TIMEOUT)?;
        self.producer.commit_transaction(TRANSACTION_STEP_TIMEOUT)
    }

    /// Aborts the open transaction: what it sent is never shown to `read_committed` readers.
    /// Blocks.
    pub fn abort_transaction(&self) -> Result<(), KafkaError> {
        self.producer.abort_transaction(TRANSACTION_STEP_TIMEOUT)
    }

    /// Queues `record` for sending; waits while the producer queue is full.
    pub async fn send(&self, record: &Outgoing<'_>) -> Result<PendingDelivery, KafkaError> {
        let mut future_record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(record.topic);
        let count = record.headers.len() + record.extra_headers.len();
        if count > 0 {
            // Only then: librdkafka allocates (and later frees) a header list even when empty.
            let mut headers = OwnedHeaders::new_with_capacity(count);
            for h in record.headers {
                headers = headers.insert(KafkaHeader { key: &h.key, value: Some(&h.value) });
            }
            for (key, value) in record.extra_headers {
                headers = headers.insert(KafkaHeader { key, value: Some(value.as_bytes()) });
            }
            future_record = future_record.headers(headers);
        }
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
