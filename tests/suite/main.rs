//! Sluice integration suite: one test binary, one module per area.

mod admin;
mod cache_conformance;
mod cache_contract;
mod cache_effects;
mod cache_resilience;
mod cache_tls;
mod cluster;
mod cluster_status;
mod console;
mod contract_versions;
mod control;
mod exactly_once;
mod examples;
mod first_run;
mod function_logs;
mod fuzz;
mod kafka_broker;
mod languages;
mod layering;
mod limits;
mod locking;
mod modules;
mod operator_cli;
mod pipelines;
mod scaffold;
mod serve_engine_limits;
