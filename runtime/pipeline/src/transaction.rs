//! Exactly-once mode of one partition worker (`processing.guarantee = exactly-once`): the
//! partition's transactional producer and its applied position in the cache.
//!
//! A batch goes through three steps, each of which a crash may interrupt:
//!
//! 1. the function runs on it, its calls' cache writes held in one overlay
//!    ([`sluice_engine::FunctionInstance::hold_effects`]);
//! 2. the overlay is applied together with the batch's last offset, the partition's *applied
//!    position*, in one atomic step ([`sluice_cache::CacheBackend::apply_fenced`]); when the
//!    position is already at or past the batch's first offset, an earlier attempt applied these
//!    writes and nothing is written;
//! 3. the outputs and dead letters are produced in a Kafka transaction that also commits the
//!    input offset after the batch.
//!
//! A batch that did not reach the end of step 3 is uncommitted and runs again on the
//! partition's next owner: its cache writes are not applied twice (step 2), its earlier
//! outputs were never committed, so `read_committed` readers see each once. Batches never
//! straddle the applied position ([`Transactional::cut`]), so a replay skips exactly the writes
//! that were applied.
//!
//! The producer's transactional id names the pipeline and the partition, so a new owner of the
//! partition fences the previous owner's producer when it starts ([`Transactional::start`]):
//! a worker that was cut off and comes back cannot commit a batch the new owner runs.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Shared;
use super::function_log::{LogLevel, LogPlace, LogSource};
use sluice_cache::{CacheError, CallCache, Fence, Fenced, ValuesBefore};
use sluice_engine::FunctionInstance;
use sluice_kafka::KafkaError;
use sluice_kafka::sink::{KafkaSink, TransactionFailure};
use sluice_record::InputRecord;

/// Longest wait between two attempts to set up the producer or reach the cache.
const SETUP_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// One partition's exactly-once state. See the module docs.
pub(crate) struct Transactional {
    producer: Arc<KafkaSink>,
    transactional_id: String,
    /// The cache key of the partition's applied position.
    fence_key: String,
    /// The last offset whose cache writes are applied, as far as this worker knows.
    applied_through: Option<i64>,
    /// The first offset of the last applied batch, and what its keys held before it, until
    /// the replay of that batch (if the partition starts with one) has taken it.
    before: Option<(i64, ValuesBefore)>,
    /// Whether the replay under way reads the values from before it.
    exact_replay: bool,
}

/// Why a transaction could not be committed.
pub(crate) enum CommitError {
    /// Abort, then deliver the batch again.
    Retry(KafkaError),
    /// Another producer with this transactional id took over: the partition has a new owner.
    Fenced(KafkaError),
}

impl Transactional {
    /// The transactional id of a pipeline's partition.
    pub(crate) fn id(pipeline: &str, topic: &str, partition: i32) -> String {
        format!("sluice.{pipeline}.{topic}.{partition}")
    }

    /// Creates the partition's producer, registers its id (which aborts what a previous owner
    /// left open and fences it) and reads the partition's applied position, trying again until
    /// it works. `None` when the worker is stopped first.
    pub(crate) async fn start(
        shared: &Arc<Shared>,
        topic: &str,
        partition: i32,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Transactional> {
        let pipeline = &shared.spec.name;
        let transactional_id = Transactional::id(pipeline, topic, partition);
        let fence_key = shared.cache.fence_key(pipeline, topic, partition);
        let mut attempt = 0;
        let producer = loop {
            if *stop.borrow() {
                // Revoked before it started: setting up a producer now could fence the new owner's.
                return None;
            }
            let setup = {
                let (shared, transactional_id) = (shared.clone(), transactional_id.clone());
                tokio::task::spawn_blocking(move || {
                    let producer = KafkaSink::transactional(
                        &shared.spec.name,
                        &shared.kafka,
                        shared.watch.clone(),
                        &transactional_id,
                    )
                    .map_err(|e| format!("{e:#}"))?;
                    producer.init_transactions().map_err(|e| e.to_string())?;
                    Ok::<_, String>(producer)
                })
            };
            let error = match setup.await {
                Ok(Ok(producer)) => break Arc::new(producer),
                Ok(Err(e)) => format!("cannot set up the transactional producer {transactional_id}: {e}"),
                Err(e) => format!("the setup of the transactional producer {transactional_id} failed: {e}"),
            };
            attempt += 1;
            setup_failed(shared, topic, partition, &error, attempt);
            if !pause(shared, attempt, stop).await {
                return None;
            }
        };
        let mut attempt = 0;
        let position = loop {
            let error = match shared.cache.applied_through(&fence_key).await {
                Ok(position) => break position,
                Err(e) => format!("cannot read the partition's applied position from the cache: {e}"),
            };
            attempt += 1;
            setup_failed(shared, topic, partition, &error, attempt);
            if !pause(shared, attempt, stop).await {
                return None;
            }
        };
        let applied_through = position.as_ref().map(|p| p.applied_through);
        tracing::info!(
            pipeline = %pipeline, %topic, partition, transactional_id = %transactional_id, ?applied_through,
            "exactly-once: partition ready"
        );
        let before = position.map(|p| (p.applied_from, p.before));
        Some(Transactional { producer, transactional_id, fence_key, applied_through, before, exact_replay: false })
    }

    /// Before running `batch`: when its writes were applied already (a replay after a crash)
    /// and it starts where the last applied batch started (the input offset the transactions
    /// committed is right after the batch before it), the replay reads the values that batch's
    /// keys had before it, so the function returns what it returned the first time. A replay
    /// that starts earlier (the broker lost committed offsets) reads the values stored now;
    /// that is logged once.
    pub(crate) fn prepare(
        &mut self,
        shared: &Shared,
        topic: &str,
        partition: i32,
        instance: &mut FunctionInstance,
        batch: &[InputRecord],
    ) {
        let Some((from, before)) = self.before.take() else { return };
        let Some(applied) = self.applied_through.filter(|&applied| batch[0].offset <= applied) else { return };
        if batch[0].offset == from {
            instance.hold_effects_reading_before(before);
            self.exact_replay = true;
        } else {
            tracing::warn!(
                pipeline = %shared.spec.name, %topic, partition,
                "exactly-once: the partition resumes at offset {} but its last applied batch started at {from}: the \
                 broker's committed offset is behind the cache's applied position ({applied}). Those records' cache \
                 writes are not applied again, and the function reads the values stored now",
                batch[0].offset
            );
        }
    }

    /// After a batch's apply was skipped (`replayed`): when the replay goes on past `last`,
    /// the next batch starts from this one's overlay, as it did the first time.
    pub(crate) fn after_skip(&mut self, instance: &mut FunctionInstance, overlay: CallCache, last: i64) {
        if self.exact_replay && self.applied_through.is_some_and(|applied| last < applied) {
            instance.continue_from(overlay);
        } else {
            self.exact_replay = false;
        }
    }

    /// The producer the batch's outputs go through, inside the open transaction.
    pub(crate) fn producer(&self) -> &KafkaSink {
        &self.producer
    }

    /// Cuts `batch` where it passes the applied position and returns the records after it, so
    /// that a replayed batch is either wholly applied already or not at all.
    pub(crate) fn cut(&self, batch: &mut Vec<InputRecord>) -> Vec<InputRecord> {
        let Some(applied) = self.applied_through else { return Vec::new() };
        match batch.iter().position(|record| record.offset > applied) {
            Some(at) if at > 0 => batch.split_off(at),
            _ => Vec::new(),
        }
    }

    /// Applies the batch's held cache writes for the records at offsets `first..=last` with
    /// the partition's position, once (see the module docs), trying again while the cache is
    /// unavailable. `None` when the worker is stopped first.
    pub(crate) async fn apply(
        &mut self,
        shared: &Shared,
        topic: &str,
        partition: i32,
        effects: &CallCache,
        (first, last): (i64, i64),
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Fenced> {
        let pipeline = &shared.spec.name;
        let fence = Fence { key: self.fence_key.clone(), first, last };
        let mut attempt = 0;
        loop {
            match effects.apply_fenced(&fence).await {
                Ok(Fenced::Applied) => {
                    if !effects.is_empty() {
                        self.applied_through = Some(last);
                    }
                    return Some(Fenced::Applied);
                }
                Ok(Fenced::Skipped { applied_through }) => {
                    self.applied_through = Some(applied_through.max(self.applied_through.unwrap_or(applied_through)));
                    shared.stats.record_effects_already_applied();
                    tracing::info!(
                        pipeline = %pipeline, %topic, partition,
                        "exactly-once: offsets {first}..={last} run again; their cache writes were applied before \
                         (applied position {applied_through}), so they are not applied twice"
                    );
                    return Some(Fenced::Skipped { applied_through });
                }
                Err(e @ CacheError::NotANumber(_)) => {
                    // Applied, position included, except the refused increment: trying again would
                    // skip it too. The function's bug, reported like a failed record.
                    self.applied_through = Some(last);
                    let message = format!("exactly-once: the cache writes of offsets {first}..={last}: {e}");
                    tracing::warn!(pipeline = %pipeline, %topic, partition, "{message}");
                    let place = LogPlace {
                        topic: Some(topic.to_owned()),
                        partition: Some(partition),
                        offset: Some(first),
                        revision: None,
                    };
                    shared.stats.function_log().push(LogLevel::Warn, LogSource::Runtime, place, &message);
                    return Some(Fenced::Applied);
                }
                Err(e) => tracing::warn!(
                    pipeline = %pipeline, %topic, partition,
                    "exactly-once: applying the cache writes of offsets {first}..={last} failed ({e}); trying again"
                ),
            }
            attempt += 1;
            if !pause(shared, attempt, stop).await {
                return None;
            }
        }
    }

    /// Begins the batch's transaction.
    pub(crate) fn begin(&self) -> Result<(), CommitError> {
        self.producer.begin_transaction().map_err(|e| self.classify(e))
    }

    /// Commits the open transaction with the input position `next_offset` of the consumer
    /// group. Waits off the async executor.
    pub(crate) async fn commit(
        &self,
        shared: &Shared,
        topic: &str,
        partition: i32,
        next_offset: i64,
    ) -> Result<(), CommitError> {
        let Some(group) = shared.source.group_metadata() else {
            return Err(CommitError::Retry(KafkaError::Canceled));
        };
        let (producer, topic) = (self.producer.clone(), topic.to_owned());
        let committed =
            tokio::task::spawn_blocking(move || producer.commit_transaction(&topic, partition, next_offset, &group))
                .await
                .unwrap_or(Err(KafkaError::Canceled));
        committed.map_err(|e| self.classify(e))
    }

    /// Aborts the open transaction, if any; what it sent is never shown to `read_committed`
    /// readers. Waits off the async executor.
    pub(crate) async fn abort(&self) {
        let producer = self.producer.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || producer.abort_transaction()).await {
            tracing::debug!(transactional_id = %self.transactional_id, "abort: {e}");
        }
    }

    /// Whether `error` from producing inside the transaction means the producer was fenced.
    pub(crate) fn classify(&self, error: KafkaError) -> CommitError {
        match TransactionFailure::of(&error) {
            TransactionFailure::Fatal => CommitError::Fenced(error),
            TransactionFailure::Abort | TransactionFailure::Retry => CommitError::Retry(error),
        }
    }

    /// The producer's transactional id.
    pub(crate) fn transactional_id(&self) -> &str {
        &self.transactional_id
    }
}

impl Drop for Transactional {
    /// Closing a producer flushes and may wait on the broker: it happens on a blocking thread,
    /// so a revoked partition never holds up the executor.
    fn drop(&mut self) {
        let producer = self.producer.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn_blocking(move || drop(producer));
        }
    }
}

/// Counts failed setup attempt number `attempt` of a partition and logs it at WARN: the first,
/// then every tenth (a broker without transactions fails every one), at DEBUG in between.
fn setup_failed(shared: &Shared, topic: &str, partition: i32, error: &str, attempt: u32) {
    let pipeline = &shared.spec.name;
    let error = format!("pipeline {pipeline}, {topic}/{partition}: exactly-once: {error}; trying again");
    match attempt % 10 == 1 {
        true => tracing::warn!(pipeline = %pipeline, %topic, partition, "{error} (attempt {attempt})"),
        false => tracing::debug!(pipeline = %pipeline, %topic, partition, "{error} (attempt {attempt})"),
    }
    shared.stats.record_setup_failure(error);
}

/// Waits before attempt `attempt + 1`: the pipeline's retry backoff, at most
/// [`SETUP_BACKOFF_MAX`]. `false` when the worker is stopped first.
async fn pause(shared: &Shared, attempt: u32, stop: &mut watch::Receiver<bool>) -> bool {
    let delay = shared.spec.processing.backoff(attempt).min(SETUP_BACKOFF_MAX);
    tokio::select! {
        _ = tokio::time::sleep(delay) => !*stop.borrow(),
        _ = stop.changed() => false,
    }
}
