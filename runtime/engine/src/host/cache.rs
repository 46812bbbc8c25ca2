//! The `cache` import: each call goes to the current call's [`sluice_cache::CallCache`], which
//! checks, namespaces and counts it, and holds its writes back until the call has succeeded
//! (the instance applies them then, or drops them with a failed call); an unavailable backend
//! is noted on the call so an outage is told apart from a bad record, and a call whose held
//! writes go past their limit is marked to fail as a whole.

use sluice_cache::CacheError;
use wasmtime::component::Linker;

use super::{Breach, HostState};

impl HostState {
    /// Notes an outage or a breach of the effects limit that a cache call met.
    fn note_cache_call<T>(&mut self, result: &Result<T, CacheError>) {
        if matches!(result, Err(CacheError::Unavailable(_))) {
            self.cache_unavailable += 1;
        }
        if let Some(breach) = self.call_cache.breach() {
            self.breach.get_or_insert(Breach::CacheEffects(breach));
        }
    }
}

/// Implements the `cache` import of one contract version; the versions' interfaces are the
/// same, so each is this one implementation under its own names.
macro_rules! cache_import {
    ($version:ident, $($interface:tt)*) => {
        mod $version {
            use $($interface)* as cache;
            use sluice_cache::CacheError;
            use wasmtime::component::{HasSelf, Linker};

            use super::HostState;

            /// The WIT form of a cache error: the variants match one to one.
            fn to_wit(e: CacheError) -> cache::CacheError {
                match e {
                    CacheError::Unavailable(m) => cache::CacheError::Unavailable(m),
                    CacheError::InvalidKey(m) => cache::CacheError::InvalidKey(m),
                    CacheError::TooLarge(m) => cache::CacheError::TooLarge(m),
                    CacheError::NotANumber(m) => cache::CacheError::NotANumber(m),
                    CacheError::InvalidArgument(m) => cache::CacheError::InvalidArgument(m),
                    CacheError::Other(m) => cache::CacheError::Other(m),
                }
            }

            /// Converts a cache result for the guest, noting outages and breaches.
            fn cache_result<T>(state: &mut HostState, result: Result<T, CacheError>) -> Result<T, cache::CacheError> {
                state.note_cache_call(&result);
                result.map_err(to_wit)
            }

            impl cache::Host for HostState {
                async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, cache::CacheError> {
                    let result = self.call_cache.get(&key).await;
                    cache_result(self, result)
                }

                async fn get_many(&mut self, keys: Vec<String>) -> Result<Vec<Option<Vec<u8>>>, cache::CacheError> {
                    let result = self.call_cache.get_many(&keys).await;
                    cache_result(self, result)
                }

                async fn set(&mut self, key: String, value: Vec<u8>, ttl_seconds: Option<u32>) -> Result<(), cache::CacheError> {
                    let result = self.call_cache.set(&key, &value, ttl_seconds).await;
                    cache_result(self, result)
                }

                async fn set_many(
                    &mut self,
                    entries: Vec<(String, Vec<u8>)>,
                    ttl_seconds: Option<u32>,
                ) -> Result<(), cache::CacheError> {
                    let result = self.call_cache.set_many(&entries, ttl_seconds).await;
                    cache_result(self, result)
                }

                async fn incr(&mut self, key: String, delta: i64, ttl_seconds: Option<u32>) -> Result<i64, cache::CacheError> {
                    let result = self.call_cache.incr(&key, delta, ttl_seconds).await;
                    cache_result(self, result)
                }

                async fn incr_many(
                    &mut self,
                    entries: Vec<(String, i64)>,
                    ttl_seconds: Option<u32>,
                ) -> Result<Vec<i64>, cache::CacheError> {
                    let result = self.call_cache.incr_many(&entries, ttl_seconds).await;
                    cache_result(self, result)
                }

                async fn delete(&mut self, key: String) -> Result<bool, cache::CacheError> {
                    let result = self.call_cache.delete(&key).await;
                    cache_result(self, result)
                }
            }

            pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
                cache::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
            }
        }
    };
}

cache_import!(v01, sluice_record::bindings::sluice::function::cache);
cache_import!(v02, sluice_record::batch::bindings::sluice::function::cache);

/// Links the `cache` import of every contract version.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    v01::add_to_linker(linker)?;
    v02::add_to_linker(linker)
}
