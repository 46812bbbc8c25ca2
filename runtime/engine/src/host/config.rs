//! The `config` import: the pipeline's settings for the function, read-only.

use sluice_record::batch::bindings::sluice::function::config as config_v02;
use sluice_record::bindings::sluice::function::config;
use wasmtime::component::{HasSelf, Linker};

use super::HostState;

impl config::Host for HostState {
    async fn get(&mut self, key: String) -> Option<String> {
        self.context.config.get(&key).cloned()
    }

    async fn get_all(&mut self) -> Vec<(String, String)> {
        self.context.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

impl config_v02::Host for HostState {
    async fn get(&mut self, key: String) -> Option<String> {
        config::Host::get(self, key).await
    }

    async fn get_all(&mut self) -> Vec<(String, String)> {
        config::Host::get_all(self).await
    }
}

/// Links the `config` import of every contract version.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    config::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)?;
    config_v02::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
}
