//! One partition worker: reads its partition's records in offset order, runs the function
//! on each batch, produces outputs and dead letters, and stores the next offset for commit
//! only once the broker has acknowledged everything the batch caused. One batch at a time is
//! in flight: while the broker acknowledges a batch's outputs, the worker fetches and runs the
//! next one, and produces its outputs only once the batch before is acknowledged (so outputs
//! keep their order, even when a batch is produced again after an error). In exactly-once mode
//! it instead applies the batch's cache writes once and commits its outputs and offset in one
//! transaction ([`super::transaction`]).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use tokio::sync::{mpsc, watch};

use super::failure::FailureKind;
use super::failure::{self, Failure, Outcome};
use super::function_log::{LogLevel, LogPlace, LogSource};
use super::spec::{DEFAULT_OUTPUT, FailurePolicy, Guarantee, Processing};
use super::transaction::{CommitError, Transactional};
use super::{
    CONSUME_ERROR_LOG_INTERVAL, CRASH_RESTART_DELAY, CRASH_RESTART_MAX_DELAY, CRASHES_BEFORE_HOLD, PartitionState,
    STOP_ACK_GRACE, Shared, Version,
};
use sluice_cache::Fenced;
use sluice_engine::FunctionInstance;
use sluice_kafka::KafkaError;
use sluice_kafka::sink::{KafkaSink, Outgoing, PendingDelivery};
use sluice_kafka::source::{PartitionQueue, record_bytes};
use sluice_record::InputRecord;

/// A worker for one assigned partition.
pub(crate) struct PartitionWorker {
    pub(crate) shared: Arc<Shared>,
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) queue: PartitionQueue,
    pub(crate) instance: FunctionInstance,
    /// The revision of the module `instance` runs.
    pub(crate) revision: u64,
    /// The pipeline's current module; a change is picked up before the next batch.
    pub(crate) module: watch::Receiver<Version>,
    pub(crate) stop: watch::Receiver<bool>,
    /// Exactly-once mode's producer and applied position; set up when the worker starts.
    pub(crate) transactional: Option<Transactional>,
    /// The first offset of the partition this worker has not done, once it has taken a
    /// record (-1 before): where its successor starts if it crashes.
    pub(crate) position: Arc<AtomicI64>,
    /// Where the worker holds the partition before it takes a record, until an operator
    /// resumes it: its predecessors crashed there [`CRASHES_BEFORE_HOLD`] times in a row.
    pub(crate) hold_at: Option<i64>,
}

/// A partition worker that crashed, for the pipeline's main task to start again.
pub(crate) struct Crash {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    /// Where the next worker starts, and its wait should it crash too.
    pub(crate) restart: Restart,
}

/// How a partition's worker starts: first, or again after a crash.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Restart {
    /// The first offset not done; -1 when no record was taken from the partition's queue
    /// (which then still holds them all).
    pub(crate) resume: i64,
    /// The wait before the worker is started again should it crash.
    pub(crate) delay: Duration,
    /// How many workers in a row crashed at `resume`.
    pub(crate) crashes_here: u32,
}

impl Restart {
    /// A worker of a newly assigned partition.
    pub(crate) const FIRST: Restart = Restart { resume: -1, delay: CRASH_RESTART_DELAY, crashes_here: 0 };
}

/// Runs the worker of an assigned partition until it is told to stop. A worker that crashes
/// (a panic, which is a bug in the runtime) is counted, logged at ERROR and put in the
/// function log; after `delay` the crash goes to the pipeline's main task on `crashes`, which
/// rewinds the partition to its first record not done and starts a new worker there, unless
/// the partition was revoked meanwhile. The records of the crashed batch run again, as after
/// any crash: nothing is lost.
pub(crate) async fn supervise(
    shared: Arc<Shared>,
    topic: String,
    partition: i32,
    queue: PartitionQueue,
    mut stop: watch::Receiver<bool>,
    restart: Restart,
    crashes: mpsc::UnboundedSender<Crash>,
) {
    let Restart { resume, delay, crashes_here } = restart;
    let position = Arc::new(AtomicI64::new(resume));
    let started = Instant::now();
    let hold_at = (resume >= 0 && crashes_here >= CRASHES_BEFORE_HOLD).then_some(resume);
    let worker = {
        let (shared, topic, stop, position) = (shared.clone(), topic.clone(), stop.clone(), position.clone());
        // Built inside the caught future, so a panic while building it is caught too.
        async move { shared.worker(topic, partition, queue, stop, position, hold_at).run().await }
    };
    // The worker, and with it the partition queue, is dropped before the queue is taken again.
    let Err(panic) = AssertUnwindSafe(worker).catch_unwind().await else { return };
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    let crashed_at = position.load(Ordering::SeqCst);
    let crashes_here = if crashed_at == resume && hold_at.is_none() { crashes_here + 1 } else { 1 };
    let resume = crashed_at;
    // A worker that ran a good while before crashing starts a new series of crashes.
    let delay = if started.elapsed() > CRASH_RESTART_MAX_DELAY { CRASH_RESTART_DELAY } else { delay };
    let stopping = *stop.borrow();
    let then = match (stopping, resume) {
        (true, _) => "the partition is being revoked, so its next owner starts from the last commit".to_string(),
        (false, -1) => format!("it starts again where it was in {delay:?}"),
        (false, offset) if crashes_here >= CRASHES_BEFORE_HOLD => format!(
            "{crashes_here} workers in a row crashed at offset {offset}, so the partition is held there until an \
             operator resumes the pipeline or reloads its module"
        ),
        (false, offset) => format!("it starts again from offset {offset} in {delay:?}"),
    };
    let error =
        format!("pipeline {}, {topic}/{partition}: the partition's worker crashed ({what}); {then}", shared.spec.name);
    tracing::error!(pipeline = %shared.spec.name, %topic, partition, "{error}");
    shared.stats.record_worker_crash(error.clone());
    let place = LogPlace { topic: Some(topic.clone()), partition: Some(partition), offset: None, revision: None };
    shared.stats.function_log().push(LogLevel::Error, LogSource::Runtime, place, &error);
    if stopping {
        shared.set_partition_state(&topic, partition, PartitionState::Stopped);
        return;
    }
    shared.set_partition_state(&topic, partition, PartitionState::Starting);
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = stop.changed() => {
            shared.set_partition_state(&topic, partition, PartitionState::Stopped);
            return;
        }
    }
    let restart = Restart { resume, delay: (delay * 2).min(CRASH_RESTART_MAX_DELAY), crashes_here };
    let _ = crashes.send(Crash { topic, partition, restart });
}

/// What delivering a batch achieved.
enum Delivered {
    /// Everything delivered; the next offset to consume.
    All { next_offset: i64 },
    /// Delivered up to a record that failed under the `block` policy.
    BlockedAt { index: usize },
}

/// The broker's acknowledgements of everything a batch produced.
type Acknowledgements = Pin<Box<dyn Future<Output = Result<(), KafkaError>> + Send>>;

/// A batch whose outputs and dead letters are produced, awaiting the broker's
/// acknowledgements before its offset is stored.
struct InFlight {
    batch: Vec<InputRecord>,
    outcomes: Vec<Outcome>,
    /// What the batch delivers once acknowledged.
    delivered: Delivered,
    acks: Acknowledgements,
    /// When the batch was fetched.
    started: Instant,
}

impl InFlight {
    fn new(batch: Vec<InputRecord>, outcomes: Vec<Outcome>, sent: Sent, started: Instant) -> Self {
        let Sent { pending, delivered } = sent;
        Self { batch, outcomes, delivered, acks: acknowledgements(pending), started }
    }
}

/// Waits for every one of `pending`, in order; the first error ends the wait.
fn acknowledgements(pending: Vec<PendingDelivery>) -> Acknowledgements {
    Box::pin(async move {
        for delivery in pending {
            delivery.acknowledged().await?;
        }
        Ok(())
    })
}

/// The acknowledgements of the batch in flight; never ready when there is none.
async fn acknowledged(in_flight: &mut Option<InFlight>) -> Result<(), KafkaError> {
    match in_flight {
        Some(flight) => (&mut flight.acks).await,
        None => std::future::pending().await,
    }
}

impl PartitionWorker {
    /// Runs until the partition is revoked or the pipeline stops.
    pub(crate) async fn run(mut self) {
        let mut carried: Vec<InputRecord> = Vec::new();
        let mut in_flight: Option<InFlight> = None;
        self.shared.set_partition_state(&self.topic, self.partition, PartitionState::Running);
        self.shared.set_partition_module(&self.topic, self.partition, self.instance.module(), self.revision, None);
        if self.shared.spec.processing.guarantee == Guarantee::ExactlyOnce {
            self.shared.set_partition_state(&self.topic, self.partition, PartitionState::Starting);
            self.transactional = Transactional::start(&self.shared, &self.topic, self.partition, &mut self.stop).await;
            if self.transactional.is_none() {
                self.shared.set_partition_state(&self.topic, self.partition, PartitionState::Stopped);
                return;
            }
            self.shared.set_partition_state(&self.topic, self.partition, PartitionState::Running);
            self.instance.hold_effects();
        }
        if let Some(offset) = self.hold_at.take() {
            // The crash that led here was logged, with why the partition is held.
            if !self.hold(offset).await {
                self.shared.set_partition_state(&self.topic, self.partition, PartitionState::Stopped);
                return;
            }
        }
        loop {
            if *self.stop.borrow() {
                break;
            }
            let mut batch = if carried.is_empty() {
                // Waiting for the next record, the batch in flight is settled as soon as the
                // broker acknowledges it, so an idle partition does not hold its offset back.
                let first = tokio::select! {
                    first = self.queue.next() => first,
                    acked = acknowledged(&mut in_flight) => {
                        let flight = in_flight.take().expect("a batch in flight");
                        match self.settle(flight, Some(acked)).await {
                            Some(again) => {
                                carry(&mut carried, again);
                                continue;
                            }
                            None => break,
                        }
                    }
                    _ = self.stop.changed() => break,
                };
                next_batch(&self.shared, &self.queue, &self.topic, self.partition, first).await
            } else {
                std::mem::take(&mut carried)
            };
            if batch.is_empty() {
                continue;
            }
            if self.position.load(Ordering::SeqCst) < 0 {
                // Before anything is done, the status shows where the partition stands (and its
                // lag), even while its first batch is held (a cache outage, a failing call).
                self.set_position(batch[0].offset);
            }
            if let Some(hook) = &self.shared.before_batch {
                hook(&self.topic, self.partition, batch[0].offset);
            }
            if let Some(transactional) = &self.transactional {
                carried = transactional.cut(&mut batch);
            }
            let started = Instant::now();
            if self.module.has_changed().unwrap_or(false) {
                self.switch_module(batch[0].offset).await;
            }
            if let Some(transactional) = &mut self.transactional {
                transactional.prepare(&self.shared, &self.topic, self.partition, &mut self.instance, &batch);
            }
            self.shared.stats.record_batch(batch.len());
            let processing = &self.shared.spec.processing;
            let outcomes =
                failure::process(&mut self.instance, processing, &batch, &mut self.stop, &self.shared.stats.faults)
                    .await;
            let outcomes: Vec<Outcome> = outcomes.into_iter().map(|o| self.check_outputs(o)).collect();
            let outcomes = match self.transactional.is_some() {
                true => self.run_again_before_block(&batch, outcomes).await,
                false => outcomes,
            };
            if *self.stop.borrow() {
                // Revoked or stopping mid-batch: leave the batch uncommitted for the next owner.
                break;
            }
            if self.transactional.is_some() {
                let Some(delivered) = self.deliver_exactly_once(&batch, &outcomes).await else { break };
                self.shared.stats.record_batch_done(started);
                match self.after_delivery(batch, delivered).await {
                    // Before the records a replayed batch was cut from.
                    Some(again) => carry(&mut carried, again),
                    None => break,
                }
                continue;
            }
            // The batch before is acknowledged before this one's outputs are produced.
            if let Some(flight) = in_flight.take() {
                // Never blocked: a blocked batch is settled before the next one is fetched.
                if self.settle(flight, None).await.is_none() || *self.stop.borrow() {
                    // Told to stop meanwhile: this batch is left uncommitted.
                    break;
                }
            }
            let Some(sent) = self.send_with_retries(&batch, &outcomes, &mut 0).await else { break };
            let blocked = matches!(sent.delivered, Delivered::BlockedAt { .. });
            let flight = InFlight::new(batch, outcomes, sent, started);
            if blocked {
                // Settled now: nothing more is fetched until an operator resumes the partition.
                match self.settle(flight, None).await {
                    Some(again) => carry(&mut carried, again),
                    None => break,
                }
            } else {
                in_flight = Some(flight);
            }
        }
        if let Some(flight) = in_flight.take() {
            // Stopping: the batch in flight gets its acknowledgements' grace to be committed.
            self.settle(flight, None).await;
        }
        self.shared.set_partition_state(&self.topic, self.partition, PartitionState::Stopped);
    }

    /// Settles the batch in flight once the broker has acknowledged it (`acked` when that is
    /// already known): produces it again on an error until it is acknowledged, counts it and
    /// stores its offset. `Some` with the records to run again once a blocked partition is
    /// resumed (empty when nothing blocked), `None` when the worker is stopped first.
    async fn settle(
        &mut self,
        mut flight: InFlight,
        acked: Option<Result<(), KafkaError>>,
    ) -> Option<Vec<InputRecord>> {
        let mut acked = match acked {
            Some(acked) => acked,
            None => self.grace(&mut flight.acks, &flight.batch).await?,
        };
        let mut attempt = 0;
        while let Err(e) = acked {
            attempt += 1;
            self.log_delivery_error(&flight.batch, &e, attempt);
            if !wait_before_retry(&self.shared.spec.processing, attempt, &mut self.stop).await {
                return None;
            }
            let sent = self.send_with_retries(&flight.batch, &flight.outcomes, &mut attempt).await?;
            flight.acks = acknowledgements(sent.pending);
            acked = self.grace(&mut flight.acks, &flight.batch).await?;
        }
        self.count(&flight.batch, &flight.outcomes, &flight.delivered);
        self.shared.stats.record_batch_done(flight.started);
        self.after_delivery(flight.batch, flight.delivered).await
    }

    /// Stores the offset a delivered batch reached. Under the `block` policy, holds the
    /// partition at the failed record; `Some` with the records to run again once resumed
    /// (empty when nothing blocked), `None` when the worker is stopped first.
    async fn after_delivery(&mut self, batch: Vec<InputRecord>, delivered: Delivered) -> Option<Vec<InputRecord>> {
        match delivered {
            Delivered::All { next_offset } => {
                self.store(next_offset);
                Some(Vec::new())
            }
            Delivered::BlockedAt { index } => {
                match index {
                    // Nothing new to commit, but the status shows where the partition stands.
                    0 => self.set_position(batch[0].offset),
                    _ => self.store(batch[index].offset),
                }
                if !self.wait_while_blocked(&batch[index]).await {
                    return None;
                }
                Some(batch[index..].to_vec())
            }
        }
    }

    /// Waits for `acks`; once the worker is told to stop, at most [`STOP_ACK_GRACE`] more.
    /// `None` when the grace ran out (the batch stays uncommitted).
    async fn grace<T>(&mut self, acks: &mut (impl Future<Output = T> + Unpin), batch: &[InputRecord]) -> Option<T> {
        if !*self.stop.borrow() {
            tokio::select! {
                acked = &mut *acks => return Some(acked),
                _ = self.stop.changed() => {}
            }
        }
        match tokio::time::timeout(STOP_ACK_GRACE, acks).await {
            Ok(acked) => Some(acked),
            Err(_) => {
                tracing::warn!(
                    pipeline = %self.shared.spec.name, topic = %self.topic, partition = self.partition,
                    "stopping: gave up waiting {STOP_ACK_GRACE:?} for the acknowledgements of offsets {}; they stay uncommitted and will be processed again",
                    sluice_record::offset_range(batch)
                );
                None
            }
        }
    }

    /// Counts a failed attempt to produce `batch`'s results and logs it, once in ten attempts.
    fn log_delivery_error(&self, batch: &[InputRecord], e: &KafkaError, attempt: u32) {
        let error = format!(
            "pipeline {}, {}/{}: producing the results of offsets {} failed ({e}); trying again",
            self.shared.spec.name,
            self.topic,
            self.partition,
            sluice_record::offset_range(batch)
        );
        // Once, then every tenth attempt: an error that lasts holds the partition, and says so.
        if attempt % 10 == 1 {
            tracing::warn!(
                pipeline = %self.shared.spec.name, topic = %self.topic, partition = self.partition,
                "{error} (attempt {attempt})"
            );
        }
        self.shared.stats.record_delivery_failure(error);
    }

    /// Switches to the pipeline's new module before the batch starting at `offset`: the
    /// batch before it was processed whole by the old module, this one and every later one is
    /// processed by the new. The new instance is prepared now, so a module that cannot be
    /// instantiated shows up here (and again, retried, on the batch's first call).
    async fn switch_module(&mut self, offset: i64) {
        let started = Instant::now();
        let Version { revision, module } = self.shared.take_up(&mut self.module);
        let from = self.revision;
        self.revision = revision;
        if module.digest() == self.instance.module().digest() {
            // Reloads in quick succession that came back to the module running here.
            tracing::debug!(
                pipeline = %self.shared.spec.name, topic = %self.topic, partition = self.partition,
                "revision {revision} runs the module of revision {from}; nothing to switch"
            );
            self.shared.set_partition_module(&self.topic, self.partition, &module, revision, None);
            return;
        }
        self.instance = self.shared.instance_for(&self.topic, self.partition, &module, revision);
        if self.transactional.is_some() {
            self.instance.hold_effects();
        }
        if let Err(e) = self.instance.prepare().await {
            tracing::warn!(
                pipeline = %self.shared.spec.name, topic = %self.topic, partition = self.partition,
                "preparing module {}: {e}", module.digest()
            );
            let message = format!("preparing module {} of revision {revision}: {e}", module.digest());
            self.shared.stats.function_log().push(LogLevel::Error, LogSource::Runtime, self.place(None), &message);
        }
        let took = started.elapsed();
        tracing::info!(
            pipeline = %self.shared.spec.name, topic = %self.topic, partition = self.partition, offset,
            module = %module.digest(), from, revision, ?took, "partition switched to the reloaded module"
        );
        self.shared.set_partition_module(&self.topic, self.partition, &module, revision, Some((offset, took)));
    }

    /// Fails a record whose outputs name an output the pipeline does not declare, or one that
    /// is larger than the producer sends: producing it would fail on every attempt and hold
    /// the partition for good.
    fn check_outputs(&self, outcome: Outcome) -> Outcome {
        let Outcome::Done(outputs) = &outcome else { return outcome };
        let declared = &self.shared.spec.outputs;
        let failed =
            |kind, message| Outcome::Failed(Failure { kind, message, retryable: false, attempts: 1, outage: false });
        if let Some(target) = outputs.iter().filter_map(|o| o.target.as_deref()).find(|t| !declared.contains_key(*t)) {
            let names = declared.keys().collect::<Vec<_>>();
            let message = format!("output target {target:?} is not declared by the pipeline (declared: {names:?})");
            return failed(FailureKind::UndeclaredOutput, message);
        }
        let max = self.shared.sink.max_message_bytes();
        for (index, output) in outputs.iter().enumerate() {
            let bytes = KafkaSink::message_bytes(output.key.as_deref(), output.value.as_deref(), &output.headers);
            if bytes > max {
                let topic = &declared[output.target.as_deref().unwrap_or(DEFAULT_OUTPUT)];
                let message = format!(
                    "output {index} to topic {topic:?} is {bytes} bytes, more than the producer's largest message, \
                     {max} bytes (the Kafka property message.max.bytes; the topic's max.message.bytes must allow it too)"
                );
                return failed(FailureKind::OutputTooLarge, message);
            }
        }
        outcome
    }

    /// Queues the batch's outputs and dead letters in the producer, retrying on producer
    /// errors; `attempt` counts the failures of this batch's delivery so far. `None` when the
    /// worker is told to stop first.
    async fn send_with_retries(
        &mut self,
        batch: &[InputRecord],
        outcomes: &[Outcome],
        attempt: &mut u32,
    ) -> Option<Sent> {
        loop {
            let module = self.instance.module().digest().to_string();
            match send(&self.shared, &self.shared.sink, &module, batch, outcomes).await {
                Ok(sent) => return Some(sent),
                Err(e) => {
                    *attempt += 1;
                    self.log_delivery_error(batch, &e, *attempt);
                    if !wait_before_retry(&self.shared.spec.processing, *attempt, &mut self.stop).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Under the `block` policy in exactly-once mode: the batch's held cache writes must stop
    /// before the failed record, since it and the records after it run again once an operator
    /// resumes the partition. So the held writes are dropped and the records before it are run
    /// again alone (until none of them fails); the failed record's outcome is kept last.
    async fn run_again_before_block(&mut self, batch: &[InputRecord], mut outcomes: Vec<Outcome>) -> Vec<Outcome> {
        if self.shared.spec.processing.on_failure != FailurePolicy::Block {
            return outcomes;
        }
        let first_failed = |outcomes: &[Outcome]| outcomes.iter().position(|o| matches!(o, Outcome::Failed(_)));
        let Some(mut failed) = first_failed(&outcomes) else { return outcomes };
        loop {
            if *self.stop.borrow() {
                return outcomes;
            }
            drop(self.instance.take_held_effects());
            let failure = outcomes.swap_remove(failed);
            let processing = &self.shared.spec.processing;
            let before = match failed {
                0 => Vec::new(),
                _ => {
                    let faults = &self.shared.stats.faults;
                    failure::process(&mut self.instance, processing, &batch[..failed], &mut self.stop, faults).await
                }
            };
            let mut before: Vec<Outcome> = before.into_iter().map(|o| self.check_outputs(o)).collect();
            match first_failed(&before) {
                Some(earlier) => (outcomes, failed) = (before, earlier),
                None => {
                    before.push(failure);
                    return before;
                }
            }
        }
    }

    /// Exactly-once delivery: applies the batch's held cache writes with the partition's
    /// position, then produces its outputs and dead letters and commits its input offset in
    /// one transaction, trying again (aborting first) until it commits. `None` when the worker
    /// is stopped first, or when another owner fenced this partition's producer.
    async fn deliver_exactly_once(&mut self, batch: &[InputRecord], outcomes: &[Outcome]) -> Option<Delivered> {
        let effects = self.instance.take_held_effects();
        let blocked = self.shared.spec.processing.on_failure == FailurePolicy::Block;
        let upto = match blocked {
            true => outcomes.iter().position(|o| matches!(o, Outcome::Failed(_))).unwrap_or(outcomes.len()),
            false => outcomes.len(),
        };
        if upto == 0 {
            // Nothing to commit: the batch's first record failed and blocks the partition.
            let delivered = Delivered::BlockedAt { index: 0 };
            self.count(batch, outcomes, &delivered);
            return Some(delivered);
        }
        let span = (batch[0].offset, batch[upto - 1].offset);
        let transactional = self.transactional.as_mut().expect("exactly-once mode");
        let applied = transactional.apply(&self.shared, &self.topic, self.partition, &effects, span, &mut self.stop);
        if let Fenced::Skipped { .. } = applied.await? {
            transactional.after_skip(&mut self.instance, effects, span.1);
        }
        let mut attempt = 0;
        loop {
            let transactional = self.transactional.as_ref().expect("exactly-once mode");
            let module = self.instance.module().digest().to_string();
            let committed = async {
                transactional.begin()?;
                let delivered = deliver(&self.shared, transactional.producer(), &module, batch, outcomes)
                    .await
                    .map_err(|e| transactional.classify(e))?;
                let next_offset = match delivered {
                    Delivered::All { next_offset } => next_offset,
                    Delivered::BlockedAt { index } => batch[index].offset,
                };
                transactional.commit(&self.shared, &self.topic, self.partition, next_offset).await?;
                Ok::<_, CommitError>(delivered)
            }
            .await;
            let (first, last) = span;
            match committed {
                Ok(delivered) => {
                    // At once: should anything below crash the worker, its successor must not
                    // run the committed batch again.
                    self.set_position(match delivered {
                        Delivered::All { next_offset } => next_offset,
                        Delivered::BlockedAt { index } => batch[index].offset,
                    });
                    self.shared.stats.record_transaction(true);
                    self.count(batch, outcomes, &delivered);
                    return Some(delivered);
                }
                Err(CommitError::Fenced(e)) => {
                    transactional.abort().await;
                    self.shared.stats.record_transaction(false);
                    tracing::error!(
                        pipeline = %self.shared.spec.name, topic = %self.topic, partition = self.partition,
                        "exactly-once: the producer {} was fenced ({e}): another owner took the partition over; \
                         offsets {first}..={last} are left to it",
                        transactional.transactional_id()
                    );
                    // Wait for the revocation; the new owner runs the batch.
                    let _ = self.stop.changed().await;
                    return None;
                }
                Err(CommitError::Retry(e)) => {
                    transactional.abort().await;
                    let error = format!(
                        "pipeline {}, {}/{}: exactly-once: the transaction of offsets {first}..={last} failed ({e}); \
                         aborted, trying again",
                        self.shared.spec.name, self.topic, self.partition
                    );
                    self.shared.stats.record_transaction_failure(error.clone());
                    attempt += 1;
                    // Once, then every tenth attempt: a broker without transactions fails each one.
                    if attempt % 10 == 1 {
                        tracing::warn!("{error} (attempt {attempt})");
                    }
                    if !wait_before_retry(&self.shared.spec.processing, attempt, &mut self.stop).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Counts a delivered batch and logs its failures, once. A partition blocked at a failed
    /// record counts that record too: it is a failure an operator must see in `failed`, the
    /// last error and the function log, though it will run again once resumed.
    fn count(&self, batch: &[InputRecord], outcomes: &[Outcome], delivered: &Delivered) {
        let upto = match delivered {
            Delivered::All { .. } => outcomes.len(),
            Delivered::BlockedAt { index } => *index + 1,
        };
        let policy = self.shared.spec.processing.on_failure;
        for (record, outcome) in batch.iter().zip(outcomes).take(upto) {
            match outcome {
                Outcome::Done(outputs) => self.shared.stats.record_outputs(outputs.len()),
                Outcome::Failed(failure) => {
                    let error = format!(
                        "pipeline {}, {}/{} offset {}: {} ({}, {} attempt{})",
                        self.shared.spec.name,
                        record.topic,
                        record.partition,
                        record.offset,
                        failure.message,
                        failure.kind,
                        failure.attempts,
                        if failure.attempts == 1 { "" } else { "s" }
                    );
                    tracing::warn!("{error}; policy {policy:?}");
                    self.shared.stats.record_failure(policy, error);
                    self.log_failure(record, failure);
                }
            }
        }
    }

    /// Puts a failed record in the pipeline's function log: why it failed and what became of it.
    fn log_failure(&self, record: &InputRecord, failure: &Failure) {
        let attempts = failure.attempts;
        let (level, became) = match self.shared.spec.processing.on_failure {
            FailurePolicy::DeadLetter => {
                (LogLevel::Warn, format!("dead-lettered to {}", self.shared.spec.dead_letter_topic()))
            }
            FailurePolicy::Skip => (LogLevel::Warn, "skipped".to_owned()),
            FailurePolicy::Block => (LogLevel::Error, "the partition is blocked at it".to_owned()),
        };
        let message = format!(
            "{}: {} ({attempts} attempt{}); {became}",
            failure.kind,
            failure.message,
            if attempts == 1 { "" } else { "s" }
        );
        self.shared.stats.function_log().push(level, LogSource::Failure, self.place(Some(record.offset)), &message);
    }

    /// This worker's partition and revision, as a function log entry's place.
    fn place(&self, offset: Option<i64>) -> LogPlace {
        LogPlace {
            topic: Some(self.topic.clone()),
            partition: Some(self.partition),
            offset,
            revision: Some(self.revision),
        }
    }

    /// Stores `next_offset` (the offset after the last processed record) for commit. Fails
    /// harmlessly when the partition was revoked meanwhile.
    fn store(&self, next_offset: i64) {
        if self.transactional.is_some() {
            // Committed with the batch's transaction.
            self.set_position(next_offset);
            return;
        }
        match self.shared.source.store(&self.topic, self.partition, next_offset) {
            Ok(()) => self.set_position(next_offset),
            Err(e) => tracing::debug!(
                pipeline = %self.shared.spec.name, topic = %self.topic, partition = self.partition,
                "offset {next_offset} not stored: {e}"
            ),
        }
    }

    /// Records `next_offset` as the first offset not done: in the status, and for a successor
    /// should this worker crash.
    fn set_position(&self, next_offset: i64) {
        self.position.store(next_offset, Ordering::SeqCst);
        self.shared.set_partition_offset(&self.topic, self.partition, next_offset);
    }

    /// Under the `block` policy: holds the partition at `record` until an operator resumes
    /// it (`true`) or the worker is stopped (`false`).
    async fn wait_while_blocked(&mut self, record: &InputRecord) -> bool {
        tracing::error!(
            pipeline = %self.shared.spec.name, topic = %self.topic, partition = self.partition, offset = record.offset,
            "partition blocked at a failed record until an operator resumes it"
        );
        self.hold(record.offset).await
    }

    /// Holds the partition, `blocked` at `offset`, until an operator resumes the pipeline or
    /// reloads its module (`true`) or the worker is stopped (`false`).
    async fn hold(&mut self, offset: i64) -> bool {
        // Listening before the state says `blocked`: a resume that follows it is not missed.
        let resume = self.shared.unblock.notified();
        tokio::pin!(resume);
        resume.as_mut().enable();
        self.shared.set_partition_state(&self.topic, self.partition, PartitionState::Blocked { offset });
        let resumed = tokio::select! {
            _ = resume => true,
            _ = self.stop.changed() => false,
        };
        self.shared.set_partition_state(&self.topic, self.partition, PartitionState::Running);
        resumed
    }
}

/// Puts `again` (the records a blocked partition runs again once resumed) before the records
/// already carried to the next batch: in exactly-once mode, those a replayed batch was cut
/// from ([`Transactional::cut`]).
fn carry(carried: &mut Vec<InputRecord>, mut again: Vec<InputRecord>) {
    if !again.is_empty() {
        again.append(carried);
        *carried = again;
    }
}

/// Waits `processing`'s backoff before retry number `attempt`; `false` when the worker is
/// stopped first (or already).
async fn wait_before_retry(processing: &Processing, attempt: u32, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(processing.backoff(attempt)) => true,
        _ = stop.changed() => false,
    }
}

/// The next batch after its `first` record: takes more until the batch is full by count or
/// bytes or the linger time has passed.
async fn next_batch(
    shared: &Shared,
    queue: &PartitionQueue,
    topic: &str,
    partition: i32,
    first: Result<InputRecord, KafkaError>,
) -> Vec<InputRecord> {
    let processing = &shared.spec.processing;
    let mut batch = Vec::new();
    let mut bytes = 0;
    match first {
        Ok(record) => {
            bytes += record_bytes(&record);
            batch.push(record);
        }
        Err(e) => {
            log_consume_error(shared, topic, partition, &e);
            tokio::time::sleep(Duration::from_millis(100)).await;
            return batch;
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(processing.linger_ms);
    while batch.len() < processing.batch_size && bytes < processing.batch_max_bytes {
        match tokio::time::timeout_at(deadline, queue.next()).await {
            Ok(Ok(record)) => {
                bytes += record_bytes(&record);
                batch.push(record);
            }
            Ok(Err(e)) => {
                log_consume_error(shared, topic, partition, &e);
                break;
            }
            Err(_) => break,
        }
    }
    batch
}

/// Counts a consume error and logs it: at WARN now and then, at DEBUG in between.
fn log_consume_error(shared: &Shared, topic: &str, partition: i32, e: &KafkaError) {
    match shared.stats.record_consume_error() {
        true => tracing::warn!(
            pipeline = %shared.spec.name, topic = %topic, partition = partition,
            "consuming failed: {e}; reading again (consume errors are counted in status, and logged at most every {CONSUME_ERROR_LOG_INTERVAL:?})"
        ),
        false => {
            tracing::debug!(pipeline = %shared.spec.name, topic = %topic, partition = partition, "consuming failed: {e}")
        }
    }
}

/// A batch's outputs and dead letters, queued in the producer.
struct Sent {
    pending: Vec<PendingDelivery>,
    /// What the batch delivers once they are acknowledged.
    delivered: Delivered,
}

/// Produces a batch's outputs and dead letters and waits for the broker to acknowledge
/// them all.
async fn deliver(
    shared: &Shared,
    sink: &KafkaSink,
    module: &str,
    batch: &[InputRecord],
    outcomes: &[Outcome],
) -> Result<Delivered, KafkaError> {
    let Sent { pending, delivered } = send(shared, sink, module, batch, outcomes).await?;
    for delivery in pending {
        delivery.acknowledged().await?;
    }
    Ok(delivered)
}

/// Queues a batch's outputs and dead letters in the producer, up to the first failed record
/// under the `block` policy.
async fn send(
    shared: &Shared,
    sink: &KafkaSink,
    module: &str,
    batch: &[InputRecord],
    outcomes: &[Outcome],
) -> Result<Sent, KafkaError> {
    let spec = &shared.spec;
    let dead_letter_topic = spec.dead_letter_topic();
    let mut pending = Vec::new();
    let mut blocked_at = None;
    for (index, (record, outcome)) in batch.iter().zip(outcomes).enumerate() {
        match outcome {
            Outcome::Done(outputs) => {
                for output in outputs {
                    let name = output.target.as_deref().unwrap_or(DEFAULT_OUTPUT);
                    let topic = &spec.outputs[name];
                    pending.push(
                        sink.send(&Outgoing {
                            topic,
                            key: output.key.as_deref(),
                            value: output.value.as_deref(),
                            headers: &output.headers,
                            extra_headers: &[],
                        })
                        .await?,
                    );
                }
            }
            Outcome::Failed(failure) => match spec.processing.on_failure {
                FailurePolicy::DeadLetter => {
                    let headers = failure::dead_letter_headers(&spec.name, module, record, failure);
                    pending.push(
                        sink.send(&Outgoing {
                            topic: &dead_letter_topic,
                            key: record.key.as_deref(),
                            value: record.value.as_deref(),
                            headers: &record.headers,
                            extra_headers: &headers,
                        })
                        .await?,
                    );
                }
                FailurePolicy::Skip => {}
                FailurePolicy::Block => {
                    blocked_at = Some(index);
                    break;
                }
            },
        }
    }
    let delivered = match blocked_at {
        Some(index) => Delivered::BlockedAt { index },
        None => Delivered::All { next_offset: batch.last().map_or(0, |r| r.offset + 1) },
    };
    Ok(Sent { pending, delivered })
}
