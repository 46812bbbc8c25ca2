//! The `log` import: the guest's log lines, written to the runtime log under the function's
//! name and to the context's log sink.

use sluice_record::batch::bindings::sluice::function::log as log_v02;
use sluice_record::bindings::sluice::function::log;
use wasmtime::component::{HasSelf, Linker};

use super::HostState;
use crate::guest_log::{self, GuestOutput};

impl log::Host for HostState {
    async fn log(&mut self, level: log::Level, message: String) {
        let sink = self.context.log_sink.as_deref();
        guest_log::emit(&self.context.name, sink, GuestOutput::Log, level, &message, self.limits.max_log_line_bytes);
    }
}

impl log_v02::Host for HostState {
    async fn log(&mut self, level: log_v02::Level, message: String) {
        let level = match level {
            log_v02::Level::Trace => log::Level::Trace,
            log_v02::Level::Debug => log::Level::Debug,
            log_v02::Level::Info => log::Level::Info,
            log_v02::Level::Warn => log::Level::Warn,
            log_v02::Level::Error => log::Level::Error,
        };
        log::Host::log(self, level, message).await
    }
}

/// Links the `log` import of every contract version.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    log::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)?;
    log_v02::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
}
