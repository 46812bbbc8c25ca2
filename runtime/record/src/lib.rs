//! The records that flow through Sluice: what a source hands to a function and what the
//! function returns. These are the record-shaped WIT types of contract 0.1.0, generated with
//! the rest of that world's host bindings ([`bindings`]) and shared by the engine, the local
//! runner and the Kafka source and sink; [`batch`] converts them to and from the batch shape
//! of contract 0.2.0.
//!
//! It depends on nothing of Sluice but the rules in `sluice-contract` (the 0.2.0 batch layout).

pub mod batch;
pub mod bindings;

pub use bindings::sluice::function::types::{Header, InputRecord, OutputRecord, RecordError};

/// The result for one input record: its outputs, or why it failed.
pub type RecordResult = Result<Vec<OutputRecord>, RecordError>;

/// The offsets of consecutive records as `first..=last` (`none` for no records), as errors
/// and logs name a batch.
pub fn offset_range(records: &[InputRecord]) -> String {
    match (records.first(), records.last()) {
        (Some(first), Some(last)) => format!("{}..={}", first.offset, last.offset),
        _ => "none".to_owned(),
    }
}
