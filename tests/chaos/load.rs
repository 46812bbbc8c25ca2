//! The load of a scenario: records `{"id":I,"seq":S}` written to the input topic at a steady
//! rate by an idempotent producer that rides out a broker restart.
//!
//! Record `n` of a scenario (counting from 0) has id `first_id + n`, key `k<n % keys>` and
//! sequence number `n / keys`; a key's records all go to partition `key index % partitions`,
//! so each key's sequence numbers follow its input offsets. Records carry no headers: tansu
//! 0.6 with SQLite storage falls behind at much lower rates when records have headers.
//!
//! Faults need records arriving to show recovery: once `slow_after` records are written, the
//! load drops to [`TRICKLE_RATE`] until the driver releases it (after its last fault), then
//! writes the rest at full rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sluice_tests::kafka::client_config;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long the producer keeps retrying a record (through a broker restart) before it gives up.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the producer tops up to the rate.
const TICK: Duration = Duration::from_millis(20);
/// Records per second while the load waits for the driver's last fault.
pub const TRICKLE_RATE: f64 = 20.0;

/// What to write.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// The id of the first record.
    pub first_id: u64,
    /// How many records.
    pub count: u64,
    /// How many keys the records are spread over.
    pub keys: u64,
    /// The input topic's partitions.
    pub partitions: i32,
    /// Records per second.
    pub rate: u64,
    /// After this many records, write at [`TRICKLE_RATE`] until [`Running::release`].
    pub slow_after: u64,
}

/// A running load: how far it got, and its end.
pub struct Running {
    released: Arc<AtomicBool>,
    /// Ends with the number of records acknowledged, or the first delivery error.
    pub done: JoinHandle<Result<u64, String>>,
}

impl Running {
    /// Lets the load write its remaining records at full rate.
    pub fn release(&self) {
        self.released.store(true, Ordering::Relaxed);
    }
}

/// Starts writing `load` to `topic`.
pub fn start(bootstrap: &str, topic: &str, load: Load) -> Running {
    let producer: FutureProducer = client_config(bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("message.timeout.ms", DELIVERY_TIMEOUT.as_millis().to_string())
        .create()
        .expect("create the load producer");
    let (deliveries, mut acknowledgements) = mpsc::unbounded_channel();
    let acknowledged = tokio::spawn(async move {
        let mut count = 0;
        while let Some((id, delivery)) = acknowledgements.recv().await {
            match delivery.await {
                Ok(Ok(_)) => count += 1,
                Ok(Err((error, _))) => return Err(format!("record {id} was not written: {error}")),
                Err(_) => return Err(format!("record {id}: the producer went away")),
            }
        }
        Ok(count)
    });
    let topic = topic.to_string();
    let released = Arc::new(AtomicBool::new(false));
    let release = released.clone();
    let done = tokio::spawn(async move {
        let mut last_tick = tokio::time::Instant::now();
        let mut allowance = 0.0;
        let mut next = 0;
        while next < load.count {
            let slow = next >= load.slow_after && !release.load(Ordering::Relaxed);
            let rate = if slow { TRICKLE_RATE } else { load.rate as f64 };
            allowance += last_tick.elapsed().as_secs_f64() * rate;
            last_tick = tokio::time::Instant::now();
            while next < load.count && allowance >= 1.0 {
                allowance -= 1.0;
                let (key, seq, partition) = placement(load, next);
                let id = load.first_id + next;
                let value = format!(r#"{{"id":{id},"seq":{seq}}}"#);
                let mut record = FutureRecord::<str, str>::to(&topic).partition(partition).key(&key).payload(&value);
                let delivery = loop {
                    match producer.send_result(record) {
                        Ok(delivery) => break delivery,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                            record = returned;
                            tokio::time::sleep(TICK).await;
                        }
                        Err((error, _)) => return Err(format!("record {id} could not be queued: {error}")),
                    }
                };
                let _ = deliveries.send((id, delivery));
                next += 1;
            }
            tokio::time::sleep(TICK).await;
        }
        drop(deliveries);
        acknowledged.await.map_err(|e| format!("delivery task: {e}"))?
    });
    Running { released, done }
}

/// The key, sequence number and partition of record `n` of `load`.
fn placement(load: Load, n: u64) -> (String, u64, i32) {
    let key = n % load.keys;
    (format!("k{key:02}"), n / load.keys, (key % load.partitions as u64) as i32)
}
