//! Failure handling for one batch: find exactly the records at fault, retry what may
//! succeed, and describe what failed for good (for dead letters, logs and status).
//!
//! A batch error (a trap, a timeout, a limit) fails the whole call, so the batch is split in
//! halves until each failing record stands alone and the others succeed (bisect on error, as
//! Lambda's Kafka source does). Retryable failures are tried again with exponential backoff;
//! what still fails then goes to the pipeline's failure policy.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::watch;

use super::spec::Processing;
use sluice_engine::FunctionInstance;
use sluice_record::{InputRecord, OutputRecord};

/// What became of one input record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Processed; these are its outputs.
    Done(Vec<OutputRecord>),
    /// Failed; this is why.
    Failed(Failure),
}

/// Why a record failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// A stable name: `record-error`, `undeclared-output`, or a batch error kind
    /// (`cpu-limit`, `timeout`, `trap`, ...).
    pub kind: &'static str,
    /// What went wrong.
    pub message: String,
    /// Whether another try may succeed.
    pub retryable: bool,
    /// How many times the record was processed.
    pub attempts: u32,
    /// The failure came with a cache outage (a cache call of the same call was unavailable):
    /// such records are retried until the cache is back, not dead-lettered, because the
    /// records are not at fault and every other record would fail the same way.
    pub outage: bool,
}

/// Processes `records`, isolating failing records and retrying retryable failures: up to
/// `max_retries` times each, or for as long as the cache is unavailable. Returns one outcome
/// per record, in order. Retries stop early when `stop` turns true.
pub(crate) async fn process(
    instance: &mut FunctionInstance,
    processing: &Processing,
    records: &[InputRecord],
    stop: &mut watch::Receiver<bool>,
) -> Vec<Outcome> {
    let mut outcomes = isolate(instance, records).await;
    for round in 1.. {
        let again: Vec<usize> = (0..outcomes.len())
            .filter(|&i| matches!(&outcomes[i], Outcome::Failed(f) if f.retryable && (f.outage || f.attempts <= processing.max_retries)))
            .collect();
        if again.is_empty() || *stop.borrow() {
            break;
        }
        let delay = processing.backoff(round);
        let outage = again.iter().any(|&i| matches!(&outcomes[i], Outcome::Failed(f) if f.outage));
        if outage {
            let first = records[again[0]].offset;
            tracing::warn!(
                partition = records[again[0]].partition,
                "the cache is unavailable: holding {} records from offset {first}, trying again in {delay:?}",
                again.len()
            );
        } else {
            tracing::debug!(records = again.len(), ?delay, round, "retrying records after a retryable failure");
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => break,
        }
        let subset: Vec<InputRecord> = again.iter().map(|&i| records[i].clone()).collect();
        for (i, outcome) in again.into_iter().zip(isolate(instance, &subset).await) {
            let attempts = match &outcomes[i] {
                Outcome::Failed(f) => f.attempts + 1,
                Outcome::Done(_) => 1,
            };
            outcomes[i] = match outcome {
                Outcome::Failed(f) => Outcome::Failed(Failure { attempts, ..f }),
                done => done,
            };
        }
    }
    outcomes
}

/// One attempt at `records`: a failing call is split until the failing records stand alone.
fn isolate<'a>(
    instance: &'a mut FunctionInstance,
    records: &'a [InputRecord],
) -> Pin<Box<dyn Future<Output = Vec<Outcome>> + Send + 'a>> {
    Box::pin(async move {
        match instance.process(records).await {
            Ok(results) => {
                let outage = instance.saw_cache_outage();
                results
                    .into_iter()
                    .map(|result| match result {
                        Ok(outputs) => Outcome::Done(outputs),
                        Err(e) => {
                            let outage = outage && e.retryable;
                            Outcome::Failed(Failure {
                                kind: if outage { "cache-unavailable" } else { "record-error" },
                                message: e.message,
                                retryable: e.retryable,
                                attempts: 1,
                                outage,
                            })
                        }
                    })
                    .collect()
            }
            Err(error) if records.len() == 1 => {
                vec![Outcome::Failed(Failure {
                    kind: error.kind(),
                    message: error.to_string(),
                    retryable: error.is_retryable(),
                    attempts: 1,
                    outage: false,
                })]
            }
            Err(error) => {
                tracing::debug!(
                    records = records.len(),
                    "batch failed ({error}); splitting it to find the records at fault"
                );
                let (left, right) = records.split_at(records.len() / 2);
                let mut outcomes = isolate(instance, left).await;
                outcomes.extend(isolate(instance, right).await);
                outcomes
            }
        }
    })
}

/// The headers of a dead letter, after the original record's own: where the record came
/// from and why it failed (Kafka Connect's convention of error context in headers).
pub(crate) fn dead_letter_headers(
    pipeline: &str,
    module: &str,
    record: &InputRecord,
    failure: &Failure,
) -> Vec<(&'static str, String)> {
    vec![
        ("sluice.pipeline", pipeline.to_owned()),
        ("sluice.module", module.to_owned()),
        ("sluice.source.topic", record.topic.clone()),
        ("sluice.source.partition", record.partition.to_string()),
        ("sluice.source.offset", record.offset.to_string()),
        ("sluice.error.kind", failure.kind.to_owned()),
        ("sluice.error.message", failure.message.clone()),
        ("sluice.error.attempts", failure.attempts.to_string()),
    ]
}
