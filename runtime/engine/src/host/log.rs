//! The `log` import: the guest's log lines, written to the runtime log under the function's
//! name.

use sluice_record::bindings::sluice::function::log;
use wasmtime::component::{HasSelf, Linker};

use super::HostState;
use crate::guest_log;

impl log::Host for HostState {
    async fn log(&mut self, level: log::Level, message: String) {
        guest_log::emit(&self.context.name, level, &message, self.limits.max_log_line_bytes);
    }
}

/// Links the `log` import.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    log::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
}
