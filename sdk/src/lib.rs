//! Write Sluice stream functions in Rust.
//!
//! A stream function is a WebAssembly component that the Sluice runtime calls with the records
//! of a Kafka topic. This crate hides the component plumbing: you write one plain Rust function
//! that takes one [`Record`] and emits zero or more [`Output`]s, mark it with
//! [`#[sluice_sdk::function]`](macro@function), and build the crate for `wasm32-wasip2`.
//!
//! ```
//! use sluice_sdk::{Output, Outputs, Record, Result};
//!
//! /// Upper-cases every value; records without a value pass through unchanged.
//! #[sluice_sdk::function]
//! fn process(record: &Record, out: &mut Outputs) -> Result<()> {
//!     let mut output = Output::from_record(record);
//!     if record.value().is_some() {
//!         output = output.with_value(record.value_str()?.to_uppercase());
//!     }
//!     out.emit(output);
//!     Ok(())
//! }
//!
//! # fn main() {
//! // On a native target the same function runs against an in-memory stand-in for the host.
//! let results = sluice_sdk::testing::run(process, vec![Record::new().with_key("k").with_value("hi")]);
//! let outputs = results[0].as_ref().unwrap();
//! assert_eq!(outputs[0].value_str(), Some("HI"));
//! assert_eq!(outputs[0].key(), Some(&b"k"[..]));
//! # }
//! ```
//!
//! # Building
//!
//! The function's crate is a library with `crate-type = ["cdylib", "rlib"]` that depends on
//! `sluice-sdk` only (not on `wit-bindgen`). `cargo build --release --target wasm32-wasip2`
//! then produces a component, `target/wasm32-wasip2/release/<crate_name>.wasm`, ready to
//! deploy. A crate holds exactly one `#[sluice_sdk::function]`.
//!
//! # What the runtime guarantees, and what it asks of you
//!
//! - **At-least-once delivery.** A record is committed only after everything it produced has
//!   been acknowledged by the broker. After a crash, a rebalance or a retry the function sees
//!   the same record again, so it must be **idempotent**: derive outputs and cache writes from
//!   the record itself, not from how many times it was seen.
//! - **Per-partition order.** Within one partition records arrive in offset order. Partitions run
//!   in parallel on separate instances, and an instance may be rebuilt at any time (after a trap
//!   or a reload): keep state in the [`cache`], never in globals.
//! - **One result per record.** Returning [`Err`] fails only that record. An
//!   [`Error::retryable`] error (a cache outage, say) is retried with backoff before the
//!   pipeline's failure policy applies; an [`Error::fatal`] error goes to the failure policy
//!   (usually a dead-letter topic) at once. The outputs of a failed record are discarded.
//! - **Bounded calls.** CPU time, memory and output size are limited per call. A panic or an
//!   exceeded limit traps the instance; the runtime then retries the batch in smaller groups so
//!   that only the offending records fail.
//!
//! # Host capabilities
//!
//! - [`cache`]: a key-value cache shared by every partition of the pipeline.
//! - [`log`]: lines in the runtime's log, tagged with the pipeline and function.
//! - [`config`]: the pipeline's settings for this function.
//!
//! # Testing
//!
//! On native targets (plain `cargo test`) the [`testing`] module replaces the host with a
//! thread-local in-memory stand-in that has the same cache semantics as the runtime, so a
//! function is unit-tested without building a component.

extern crate self as sluice_sdk;

pub mod cache;
pub mod config;
mod error;
pub mod log;
mod output;
mod record;

#[cfg(target_arch = "wasm32")]
mod component;
#[cfg(target_arch = "wasm32")]
use component as host;

#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
#[cfg(not(target_arch = "wasm32"))]
use testing::stand_in as host;

pub use error::{Error, Result};
pub use output::{IntoBytes, Output, Outputs};
pub use record::{Header, Record};

/// Marks the crate's stream function.
///
/// Put it on a function with the signature `fn(&Record, &mut Outputs) -> Result<()>` (any name,
/// any visibility). The function stays as written, so tests call it directly or through
/// [`testing::run`]. When compiling for WebAssembly, the attribute also generates the
/// component's `process` export: it turns each record of a batch into a [`Record`], calls the
/// function once per record with a fresh [`Outputs`], and returns one result per record, in
/// order (the outputs on `Ok`, the error's message and retryability on `Err`).
///
/// The generated export contains the component ABI's `unsafe` glue under `#[allow(unsafe_code)]`,
/// so it works in crates that deny `unsafe_code` but not in crates that forbid it.
///
/// ```
/// use sluice_sdk::{Output, Outputs, Record, Result};
///
/// #[sluice_sdk::function]
/// fn process(record: &Record, out: &mut Outputs) -> Result<()> {
///     out.emit(Output::from_record(record));
///     Ok(())
/// }
/// # fn main() {}
/// ```
///
/// Anything else is a compile error:
///
/// ```compile_fail
/// #[sluice_sdk::function]
/// fn process(record: &sluice_sdk::Record) -> sluice_sdk::Result<()> {
///     Ok(())
/// }
/// # fn main() {}
/// ```
pub use sluice_sdk_macros::function;

/// Support for the code that `#[sluice_sdk::function]` generates. Not a public API: it may
/// change in any release.
#[doc(hidden)]
pub mod __private {
    /// The signature `#[sluice_sdk::function]` requires.
    pub type ProcessFn = fn(&crate::Record, &mut crate::Outputs) -> crate::Result<()>;

    #[cfg(target_arch = "wasm32")]
    pub use wit_bindgen;

    #[cfg(target_arch = "wasm32")]
    pub use crate::component::{Batch, BatchResults, process_batch};

    #[cfg(target_arch = "wasm32")]
    pub use bindings::Guest;

    /// Bindings generated from `wit/sluice.wit`. The export macro is
    /// `::sluice_sdk::__private::bindings::export!`.
    #[cfg(target_arch = "wasm32")]
    #[allow(unsafe_code, missing_docs, clippy::all)]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../wit",
            world: "processor",
            ownership: Borrowing { duplicate_if_necessary: false },
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: "::sluice_sdk::__private::bindings",
            runtime_path: "::sluice_sdk::__private::wit_bindgen::rt",
        });
    }
}
