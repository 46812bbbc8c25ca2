//! The records that flow through Sluice: what a source hands to a function and what the
//! function returns. These are the WIT `sluice:function/types` types, shared by the engine, the
//! local runner and the Kafka source and sink.

pub use crate::engine::bindings::sluice::function::types::{Header, InputRecord, OutputRecord, RecordError};

/// The result for one input record: its outputs, or why it failed.
pub type RecordResult = Result<Vec<OutputRecord>, RecordError>;
