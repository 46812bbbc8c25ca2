//! Sluice integration suite: one test binary, one module per area.

mod examples;
mod kafka_broker;
mod limits;
mod modules;
