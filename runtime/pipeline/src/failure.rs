//! Failure handling for one batch: find exactly the records at fault, retry what may
//! succeed, and describe what failed for good (for dead letters, logs and status).
//!
//! A batch error (a trap, a timeout, a limit) fails the whole call, so the batch is split in
//! halves until each failing record stands alone and the others succeed (bisect on error, as
//! Lambda's Kafka source does). Retryable failures are tried again with exponential backoff;
//! what still fails then goes to the pipeline's failure policy.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use super::spec::Processing;
use sluice_engine::{BatchErrorKind, FunctionInstance};
use sluice_record::{InputRecord, OutputRecord};

/// What became of one input record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Processed; these are its outputs.
    Done(Vec<OutputRecord>),
    /// Failed; this is why.
    Failed(Failure),
}

/// What kind of failure a record had: a stable name, in the `sluice.error.kind` header of
/// its dead letter and in logs, serialised as that name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// `record-error`: the function returned an error for the record.
    RecordError,
    /// `cache-unavailable`: the function returned a retryable error while the cache was
    /// unavailable.
    CacheUnavailable,
    /// `undeclared-output`: an output named a target the pipeline does not declare.
    UndeclaredOutput,
    /// `output-too-large`: an output is larger than the largest message the pipeline's
    /// producer sends (`message.max.bytes`).
    OutputTooLarge,
    /// The record alone failed the whole call: `cpu-limit`, `timeout`, `trap`, ...
    Batch(BatchErrorKind),
}

impl FailureKind {
    /// Every kind, for tests and documentation.
    pub const ALL: [FailureKind; 15] = [
        FailureKind::RecordError,
        FailureKind::CacheUnavailable,
        FailureKind::UndeclaredOutput,
        FailureKind::OutputTooLarge,
        FailureKind::Batch(BatchErrorKind::CpuLimit),
        FailureKind::Batch(BatchErrorKind::Timeout),
        FailureKind::Batch(BatchErrorKind::MemoryLimit),
        FailureKind::Batch(BatchErrorKind::TableLimit),
        FailureKind::Batch(BatchErrorKind::StackOverflow),
        FailureKind::Batch(BatchErrorKind::Trap),
        FailureKind::Batch(BatchErrorKind::OutputLimit),
        FailureKind::Batch(BatchErrorKind::CacheEffectsLimit),
        FailureKind::Batch(BatchErrorKind::ResultCount),
        FailureKind::Batch(BatchErrorKind::MalformedResults),
        FailureKind::Batch(BatchErrorKind::Instantiate),
    ];

    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::RecordError => "record-error",
            FailureKind::CacheUnavailable => "cache-unavailable",
            FailureKind::UndeclaredOutput => "undeclared-output",
            FailureKind::OutputTooLarge => "output-too-large",
            FailureKind::Batch(kind) => kind.as_str(),
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for FailureKind {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        FailureKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .ok_or_else(|| format!("{name:?} is not a failure kind"))
    }
}

impl serde::Serialize for FailureKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for FailureKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a record failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// What kind of failure.
    pub kind: FailureKind,
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

/// What failure handling did behind a pipeline's results, so that no trap, limit, split or
/// re-run goes unseen even when every record succeeds in the end: counted per pipeline, shown
/// in `/metrics` and `sluice status`.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// Failed calls by kind (`trap`, `memory-limit`, `cpu-limit`, ...).
    calls_failed: Mutex<BTreeMap<BatchErrorKind, u64>>,
    bisections: AtomicU64,
    reruns: AtomicU64,
    instance_rebuilds: AtomicU64,
    instances_retired: AtomicU64,
}

impl Faults {
    fn call_failed(&self, kind: BatchErrorKind) {
        *self.calls_failed.lock().unwrap_or_else(|p| p.into_inner()).entry(kind).or_default() += 1;
    }

    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> FaultCounts {
        let calls_failed = self.calls_failed.lock().unwrap_or_else(|p| p.into_inner());
        FaultCounts {
            calls_failed: calls_failed.iter().map(|(kind, n)| (kind.as_str().to_owned(), *n)).collect(),
            bisections: self.bisections.load(Ordering::Relaxed),
            reruns: self.reruns.load(Ordering::Relaxed),
            instance_rebuilds: self.instance_rebuilds.load(Ordering::Relaxed),
            instances_retired: self.instances_retired.load(Ordering::Relaxed),
        }
    }
}

/// What failure handling did, at one moment ([`Faults`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FaultCounts {
    /// Calls that failed as a whole, by kind: `trap`, `cpu-limit`, `memory-limit`,
    /// `timeout`, `stack-overflow`, `output-limit`, `cache-effects-limit`, `result-count`,
    /// `malformed-results`, `instantiate`, `table-limit`. Their records were run again in smaller groups.
    pub calls_failed: BTreeMap<String, u64>,
    /// Failed calls split in halves to find the records at fault.
    pub bisections: u64,
    /// Records processed again after a failed attempt (a split call's records, or a retry):
    /// the function saw them more than once, and their cache reads were repeated.
    pub reruns: u64,
    /// Function instances built again after a failed call discarded theirs.
    pub instance_rebuilds: u64,
    /// Function instances retired after a successful call because their memory had grown past
    /// the retirement threshold (a leaking language runtime), before it could trap a call.
    #[serde(default)]
    pub instances_retired: u64,
}

impl FaultCounts {
    /// Failed calls of every kind.
    pub fn calls_failed_total(&self) -> u64 {
        self.calls_failed.values().sum()
    }
}

/// Processes `records`, isolating failing records and retrying retryable failures: up to
/// `max_retries` times each, or for as long as the cache is unavailable. Returns one outcome
/// per record, in order. Retries stop early when `stop` turns true. Everything done beyond
/// one call is counted in `faults`.
pub(crate) async fn process(
    instance: &mut FunctionInstance,
    processing: &Processing,
    records: &[InputRecord],
    stop: &mut watch::Receiver<bool>,
    faults: &Faults,
) -> Vec<Outcome> {
    let mut outcomes = isolate(instance, records, faults, true).await;
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
            let (first, function) = (records[again[0]].offset, &instance.context().name);
            let held = again.len();
            // Once per outage here; the cache logs the outage itself, and its end.
            match round {
                1 => tracing::warn!(
                    "{function}: the cache is unavailable: holding {held} records from offset {first}, trying again in {delay:?}"
                ),
                _ => tracing::debug!(
                    "{function}: the cache is still unavailable: holding {held} records from offset {first}, round {round}"
                ),
            }
        } else {
            tracing::debug!(records = again.len(), ?delay, round, "retrying records after a retryable failure");
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => break,
        }
        let subset: Vec<InputRecord> = again.iter().map(|&i| records[i].clone()).collect();
        Faults::add(&faults.reruns, subset.len());
        for (i, outcome) in again.into_iter().zip(isolate(instance, &subset, faults, true).await) {
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

/// One attempt at `records`: a failing call is split until the failing records stand alone,
/// and a record is held at fault only when it fails alone on a fresh instance (or on one the
/// failure did not discard, such as an output limit's). The first failure of an attempt
/// (`whole`: not a split of it) is logged at WARN, once; the splits that follow at DEBUG.
fn isolate<'a>(
    instance: &'a mut FunctionInstance,
    records: &'a [InputRecord],
    faults: &'a Faults,
    whole: bool,
) -> Pin<Box<dyn Future<Output = Vec<Outcome>> + Send + 'a>> {
    Box::pin(async move {
        let (rebuilds, retired) = (instance.rebuilds(), instance.retired());
        let result = instance.process(records).await;
        Faults::add(&faults.instance_rebuilds, (instance.rebuilds() - rebuilds) as usize);
        Faults::add(&faults.instances_retired, (instance.retired() - retired) as usize);
        // A record that failed alone on an instance that had served other calls, and that the
        // failure discarded: what those calls left behind (a leak growing towards the memory
        // limit) may be the cause, so it is tried once more alone on a fresh instance.
        let again_on_fresh = records.len() == 1 && !instance.last_call_was_fresh() && !instance.is_live();
        if let Err(error) = &result {
            faults.call_failed(error.kind());
            let offsets = sluice_record::offset_range(records);
            let next = match (records.len(), again_on_fresh) {
                (1, false) => "the record is at fault",
                (1, true) => "running it again on a fresh instance",
                _ => "running it again in halves",
            };
            if whole {
                tracing::warn!(kind = %error.kind(), "call on offsets {offsets} failed: {error}; {next}");
            } else {
                tracing::debug!(kind = %error.kind(), "call on offsets {offsets} failed: {error}; {next}");
            }
        }
        match result {
            Ok(results) => {
                let outage = instance.saw_cache_outage();
                results
                    .into_iter()
                    .map(|result| match result {
                        Ok(outputs) => Outcome::Done(outputs),
                        Err(e) => {
                            let outage = outage && e.retryable;
                            Outcome::Failed(Failure {
                                kind: if outage { FailureKind::CacheUnavailable } else { FailureKind::RecordError },
                                message: e.message,
                                retryable: e.retryable,
                                attempts: 1,
                                outage,
                            })
                        }
                    })
                    .collect()
            }
            Err(_) if again_on_fresh => {
                Faults::add(&faults.reruns, 1);
                isolate(instance, records, faults, false).await
            }
            Err(error) if records.len() == 1 => {
                vec![Outcome::Failed(Failure {
                    kind: FailureKind::Batch(error.kind()),
                    message: error.to_string(),
                    retryable: error.is_retryable(),
                    attempts: 1,
                    outage: false,
                })]
            }
            Err(_) => {
                Faults::add(&faults.bisections, 1);
                Faults::add(&faults.reruns, records.len());
                let (left, right) = records.split_at(records.len() / 2);
                let mut outcomes = isolate(instance, left, faults, false).await;
                outcomes.extend(isolate(instance, right, faults, false).await);
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
        ("sluice.error.kind", failure.kind.as_str().to_owned()),
        ("sluice.error.message", failure.message.clone()),
        ("sluice.error.attempts", failure.attempts.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_kinds_have_the_names_of_dead_letter_headers_and_read_back_from_them() {
        let names: Vec<&str> = FailureKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "record-error",
                "cache-unavailable",
                "undeclared-output",
                "output-too-large",
                "cpu-limit",
                "timeout",
                "memory-limit",
                "table-limit",
                "stack-overflow",
                "trap",
                "output-limit",
                "cache-effects-limit",
                "result-count",
                "malformed-results",
                "instantiate"
            ]
        );
        for kind in FailureKind::ALL {
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, kind.as_str());
            assert_eq!(serde_json::from_value::<FailureKind>(json).unwrap(), kind);
            assert_eq!(kind.to_string(), kind.as_str());
        }
        assert!(serde_json::from_value::<FailureKind>("oops".into()).unwrap_err().to_string().contains("\"oops\""));
    }
}
