//! Single-partition topics used as logs: the cluster's control plane keeps its registry, its
//! modules and its nodes' heartbeats in such topics, every node appending to them and reading
//! them from the start. This file owns the Kafka side only: making sure a log topic exists,
//! appending a record and learning its offset, and reading records in order. What the records
//! mean is the pipeline crate's business.

use std::time::Duration;

use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::KafkaConfig;

/// The context of the log topics' clients: librdkafka's errors and log lines go to debug, and
/// the follower or caller that sees a failure logs it once, naming the topic (a broker outage
/// would otherwise be logged many times a second by each client).
#[derive(Clone, Copy, Default)]
pub struct LogContext;

impl rdkafka::ClientContext for LogContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        tracing::debug!(?level, facility, "librdkafka (a log topic's client): {message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!("librdkafka (a log topic's client): {error}: {reason}");
    }
}

impl rdkafka::consumer::ConsumerContext for LogContext {}

/// The one partition of a log topic.
pub const LOG_PARTITION: i32 = 0;
/// How long a metadata, watermark or topic-creation request may take.
pub const LOG_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an append may take before it fails (`message.timeout.ms`).
pub const LOG_APPEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest record a log appender sends (`message.max.bytes`); module chunks are kept below it.
pub const LOG_MAX_RECORD_BYTES: usize = 1024 * 1024;

/// How a log topic is cleaned up by the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleanup {
    /// `cleanup.policy=compact`: the last record of every key is kept for ever.
    Compact,
}

/// Creates `topic` with one partition and `cleanup` when the cluster does not have it, with the
/// broker's default replication factor. A topic created meanwhile by another node is fine.
pub async fn ensure_log_topic(kafka: &KafkaConfig, topic: &str, cleanup: Cleanup) -> anyhow::Result<()> {
    match topic_partitions(kafka, topic)? {
        Some(1) => return Ok(()),
        Some(partitions) => anyhow::bail!(
            "the log topic {topic} has {partitions} partitions: a log topic must have exactly one, so that its records \
             have one order (delete it, or name another topic)"
        ),
        None => {}
    }
    let admin: AdminClient<DefaultClientContext> =
        kafka.client_config().create().context("cannot create a Kafka admin client")?;
    let policy = match cleanup {
        Cleanup::Compact => "compact",
    };
    // A replication factor of -1 asks for the broker's default (KIP-464); a broker that does
    // not know it is asked again for one replica.
    let mut last_error = None;
    for replication in [-1, 1] {
        let new_topic = NewTopic::new(topic, 1, TopicReplication::Fixed(replication)).set("cleanup.policy", policy);
        let options = AdminOptions::new().operation_timeout(Some(LOG_REQUEST_TIMEOUT));
        let results = admin
            .create_topics([&new_topic], &options)
            .await
            .with_context(|| format!("cannot create the log topic {topic}"))?;
        match results.into_iter().next() {
            Some(Ok(_)) | Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) | None => {
                last_error = None;
                break;
            }
            Some(Err((_, code))) => {
                if replication == -1 {
                    tracing::warn!(%topic, "the broker refused its default replication factor ({code}); creating the log topic with one replica");
                }
                last_error = Some(code)
            }
        }
    }
    if let Some(code) = last_error {
        anyhow::bail!("cannot create the log topic {topic}: {code}");
    }
    // Wait until the metadata shows it, so the first reader finds it.
    let deadline = std::time::Instant::now() + LOG_REQUEST_TIMEOUT;
    while topic_partitions(kafka, topic)?.is_none() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the log topic {topic} was created but is not in the cluster's metadata after {LOG_REQUEST_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::info!(%topic, policy, "created the log topic");
    Ok(())
}

/// The partition count of `topic`, `None` when the cluster does not have it.
fn topic_partitions(kafka: &KafkaConfig, topic: &str) -> anyhow::Result<Option<usize>> {
    let client: BaseConsumer = kafka.client_config().set("allow.auto.create.topics", "false").create()?;
    let metadata = client
        .fetch_metadata(Some(topic), LOG_REQUEST_TIMEOUT)
        .with_context(|| format!("cannot read the metadata of the log topic {topic}"))?;
    Ok(metadata.topics().iter().find(|t| t.name() == topic && t.error().is_none()).map(|t| t.partitions().len()))
}

/// Appends records to log topics: an idempotent producer that waits for every replica.
#[derive(Clone)]
pub struct LogAppender {
    producer: FutureProducer<LogContext>,
}

impl LogAppender {
    /// An appender named `client_id` (which shows in the broker's logs).
    pub fn new(kafka: &KafkaConfig, client_id: &str) -> anyhow::Result<LogAppender> {
        let producer = kafka
            .client_config()
            .set("client.id", client_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            .set("message.max.bytes", (LOG_MAX_RECORD_BYTES + 64 * 1024).to_string())
            .set("message.timeout.ms", LOG_APPEND_TIMEOUT.as_millis().to_string())
            .create_with_context(LogContext)
            .context("cannot create the control log's producer")?;
        Ok(LogAppender { producer })
    }

    /// Appends `key` and `value` (`None`: a tombstone) to `topic` and answers the record's
    /// offset once the broker has it.
    pub async fn append(&self, topic: &str, key: &[u8], value: Option<&[u8]>) -> Result<i64, KafkaError> {
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).partition(LOG_PARTITION).key(key);
        if let Some(value) = value {
            record = record.payload(value);
        }
        match self.producer.send(record, LOG_APPEND_TIMEOUT).await {
            Ok(delivery) => Ok(delivery.offset),
            Err((error, _)) => Err(error),
        }
    }

    /// Waits up to `timeout` for every append in flight.
    pub fn flush(&self, timeout: Duration) {
        let _ = self.producer.flush(timeout);
    }
}

/// A record read from a log topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Its offset in the log.
    pub offset: i64,
    /// Its key (empty when it has none).
    pub key: Vec<u8>,
    /// Its value; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
}

/// Reads a log topic in order, from an offset. Blocking: run it on a thread of its own or in
/// `spawn_blocking`.
pub struct LogReader {
    consumer: BaseConsumer<LogContext>,
    topic: String,
}

impl LogReader {
    /// A reader of `topic` from `offset` (0: the start).
    pub fn open(kafka: &KafkaConfig, topic: &str, offset: i64) -> anyhow::Result<LogReader> {
        let consumer: BaseConsumer<LogContext> = kafka
            .client_config()
            // Never used to commit: the reader only assigns itself the partition.
            .set("group.id", format!("sluice-log-reader-{topic}"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("fetch.wait.max.ms", "50")
            .set("fetch.message.max.bytes", (LOG_MAX_RECORD_BYTES + 64 * 1024).to_string())
            .create_with_context(LogContext)
            .with_context(|| format!("cannot create a reader of the log topic {topic}"))?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, LOG_PARTITION, Offset::Offset(offset))
            .map_err(|e| anyhow::anyhow!("cannot read the log topic {topic} from offset {offset}: {e}"))?;
        consumer.assign(&assignment).with_context(|| format!("cannot read the log topic {topic}"))?;
        Ok(LogReader { consumer, topic: topic.to_string() })
    }

    /// The next record, waiting at most `timeout`: `None` when none came.
    pub fn poll(&self, timeout: Duration) -> Result<Option<LogRecord>, KafkaError> {
        match self.consumer.poll(timeout) {
            None => Ok(None),
            Some(Ok(message)) => Ok(Some(LogRecord {
                offset: message.offset(),
                key: message.key().map(<[u8]>::to_vec).unwrap_or_default(),
                value: message.payload().map(<[u8]>::to_vec),
            })),
            Some(Err(KafkaError::PartitionEOF(_))) => Ok(None),
            Some(Err(error)) => Err(error),
        }
    }

    /// The offset the next appended record will get (the high watermark), from the broker.
    pub fn end(&self) -> Result<i64, KafkaError> {
        self.consumer.fetch_watermarks(&self.topic, LOG_PARTITION, LOG_REQUEST_TIMEOUT).map(|(_, high)| high)
    }

    /// The topic read.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

/// Asks the broker where a log topic ends, without reading it.
pub struct LogEnd {
    consumer: BaseConsumer<LogContext>,
    topic: String,
}

impl LogEnd {
    /// A client asking where `topic` ends.
    pub fn new(kafka: &KafkaConfig, topic: &str) -> anyhow::Result<LogEnd> {
        let consumer: BaseConsumer<LogContext> = kafka
            .client_config()
            .set("group.id", format!("sluice-log-end-{topic}"))
            .set("enable.auto.commit", "false")
            .create_with_context(LogContext)
            .with_context(|| format!("cannot create a client of the log topic {topic}"))?;
        Ok(LogEnd { consumer, topic: topic.to_string() })
    }

    /// The offset the next appended record will get (the high watermark), waiting at most
    /// `timeout`. Blocking.
    pub fn end(&self, timeout: Duration) -> Result<i64, KafkaError> {
        self.consumer.fetch_watermarks(&self.topic, LOG_PARTITION, timeout).map(|(_, high)| high)
    }
}
