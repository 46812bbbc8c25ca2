//! A reader of one topic, on a thread of its own: from the beginning of every partition,
//! without a consumer group, keeping every record with its create time. The driver watches
//! it while faults are injected (has an output been created since?) and the checker reads
//! what it kept once it has caught up with the topic's end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sluice_tests::kafka::{REQUEST_TIMEOUT, client_config, partition_count, unique_suffix};

/// A record as read.
#[derive(Debug, Clone)]
pub struct Read {
    pub partition: i32,
    pub offset: i64,
    /// Create time in milliseconds since the Unix epoch (0 if the record has none).
    pub created_ms: i64,
    pub key: String,
    pub value: String,
}

/// What the reading thread shares with the driver.
#[derive(Default)]
struct Shared {
    records: Mutex<Vec<Read>>,
    /// The next offset to read, by partition.
    next: Mutex<BTreeMap<i32, i64>>,
    /// The latest create time read so far.
    latest_created_ms: AtomicI64,
    stop: AtomicBool,
}

/// A topic being read.
pub struct Reader {
    bootstrap: String,
    topic: String,
    partitions: i32,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Reader {
    /// Starts reading `topic` from the beginning.
    pub fn start(bootstrap: &str, topic: &str) -> Reader {
        let partitions = partition_count(bootstrap, topic).unwrap_or_else(|e| panic!("metadata of {topic}: {e}"));
        let consumer: BaseConsumer = client_config(bootstrap)
            .set("group.id", format!("chaos-checker-{}", unique_suffix()))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .create()
            .expect("create the checker's consumer");
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions {
            assignment.add_partition_offset(topic, partition, Offset::Beginning).expect("assignment");
        }
        consumer.assign(&assignment).expect("assign partitions");
        let shared = Arc::new(Shared::default());
        let thread_shared = shared.clone();
        let thread = std::thread::spawn(move || {
            while !thread_shared.stop.load(Ordering::Relaxed) {
                // Errors (a broker restarting) are transient: the client reconnects.
                let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else { continue };
                let text = |bytes: Option<&[u8]>| String::from_utf8_lossy(bytes.unwrap_or_default()).into_owned();
                let read = Read {
                    partition: message.partition(),
                    offset: message.offset(),
                    created_ms: message.timestamp().to_millis().unwrap_or(0),
                    key: text(message.key()),
                    value: text(message.payload()),
                };
                thread_shared.latest_created_ms.fetch_max(read.created_ms, Ordering::Relaxed);
                thread_shared.next.lock().unwrap().insert(read.partition, read.offset + 1);
                thread_shared.records.lock().unwrap().push(read);
            }
        });
        Reader { bootstrap: bootstrap.into(), topic: topic.into(), partitions, shared, thread: Some(thread) }
    }

    /// The latest create time of a record read so far.
    pub fn latest_created_ms(&self) -> i64 {
        self.shared.latest_created_ms.load(Ordering::Relaxed)
    }

    /// Waits until every partition has been read up to its end as the broker reports it now,
    /// or `timeout` passes; `false` on timeout.
    pub fn catch_up(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let ends = loop {
            match end_offsets(&self.bootstrap, &self.topic, self.partitions) {
                Ok(ends) => break ends,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
                Err(_) => return false,
            }
        };
        loop {
            let next = self.shared.next.lock().unwrap().clone();
            if ends.iter().all(|(partition, end)| next.get(partition).copied().unwrap_or(0) >= *end) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops reading and returns every record read, in the order read.
    pub fn finish(mut self) -> Vec<Read> {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the reader thread panicked");
        }
        std::mem::take(&mut *self.shared.records.lock().unwrap())
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

/// The offset after the last record of each partition of `topic`.
pub fn end_offsets(bootstrap: &str, topic: &str, partitions: i32) -> Result<BTreeMap<i32, i64>, String> {
    let client: BaseConsumer = client_config(bootstrap).create().map_err(|e| e.to_string())?;
    (0..partitions)
        .map(|partition| {
            client
                .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
                .map(|(_, high)| (partition, high))
                .map_err(|e| format!("end offset of {topic}/{partition}: {e}"))
        })
        .collect()
}

/// Reads all of `topic` as it is now.
pub fn read_all(bootstrap: &str, topic: &str, timeout: Duration) -> Result<Vec<Read>, String> {
    let reader = Reader::start(bootstrap, topic);
    let complete = reader.catch_up(timeout);
    let records = reader.finish();
    if complete { Ok(records) } else { Err(format!("{topic}: read {} records, not to its end", records.len())) }
}
