//! Fuzzing the paths that take untrusted bytes and that the integration suite can reach:
//! pipeline specs (JSON from the admin API, TOML from the serve config), module uploads, the
//! local runner's input files and records through a guest. Targets inside the crate (cache
//! URLs, memcached replies, Kafka headers) are in their modules. `make fuzz` runs them all
//! long; see `runtime/fuzzing/src/lib.rs`.

mod modules;
mod records;
mod specs;
