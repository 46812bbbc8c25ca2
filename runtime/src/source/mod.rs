//! Where records come from. The Kafka source is the one trigger today; the engine and the
//! pipeline do not depend on its types beyond [`crate::record::InputRecord`].

pub mod kafka;
