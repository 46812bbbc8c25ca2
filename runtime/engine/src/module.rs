//! Loading a function module: checks that the bytes are a component of the Sluice world,
//! compiles it (or reuses a compiled artifact), and prepares it for fast instantiation.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::Component;

use super::Engine;
use super::host::HostState;
use sluice_record::batch::bindings::ProcessorPre as BatchProcessorPre;
use sluice_record::bindings::ProcessorPre;

/// The first four bytes of every WebAssembly binary.
const WASM_MAGIC: [u8; 4] = *b"\0asm";
/// Version and layer of a core module (`01 00 00 00`).
const CORE_MODULE_VERSION: [u8; 4] = [1, 0, 0, 0];
/// Version and layer of a component (`0d 00 01 00`).
const COMPONENT_VERSION: [u8; 4] = [0x0d, 0, 1, 0];

/// The content digest that names a module, `sha256:<hex>`: defined by the contract crate, so
/// every part of Sluice parses and shows it the same way.
pub use sluice_contract::{MalformedDigest, ModuleDigest};

/// Why a module was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleError {
    /// Over [`super::Limits::max_module_bytes`].
    #[error("module is {size} bytes, over the {limit} byte limit")]
    TooLarge {
        /// Size of the module.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not a WebAssembly binary at all.
    #[error("module is not WebAssembly: it does not start with the bytes `\\0asm`")]
    NotWasm,
    /// A core module, not a component.
    #[error(
        "module is a core WebAssembly module, not a component: build it for the wasm32-wasip2 target \
         (or wrap it with `wasm-tools component new`) so that it implements the sluice:function/processor world"
    )]
    CoreModule,
    /// A WebAssembly binary of a version or layer this runtime does not know.
    #[error("module has an unknown WebAssembly version/layer {0:02x?}; expected a component (0d 00 01 00)")]
    UnknownVersion([u8; 4]),
    /// Looks like a component but does not validate or compile.
    #[error("module {digest} is not a valid component: {reason}")]
    Invalid {
        /// The module's digest.
        digest: ModuleDigest,
        /// What the validator said.
        reason: String,
    },
    /// Imports something the runtime does not provide.
    #[error(
        "module {digest} imports {reason}, which Sluice does not provide. Provided: {PROVIDED}.{}",
        hint.as_deref().map(|h| format!(" {h}")).unwrap_or_default()
    )]
    UnsupportedImport {
        /// The module's digest.
        digest: ModuleDigest,
        /// What is missing: the interfaces, or the linker's reason when it is not a missing one.
        reason: String,
        /// For a toolchain known to add the import by default, how to build without it.
        hint: Option<String>,
    },
    /// Does not export `process` with the right type.
    #[error(
        "module {digest} does not implement the sluice:function/processor world: it must export \
         `process: func(batch: input-batch) -> batch-results` (contract 0.2.0) or \
         `process: func(batch: list<input-record>) -> list<record-result>` (0.1.0): {reason}"
    )]
    WrongExports {
        /// The module's digest.
        digest: ModuleDigest,
        /// What is wrong with the exports.
        reason: String,
    },
}

/// What a function may import, as the refusal of any other import names it.
pub const PROVIDED: &str = "sluice:function/cache, log and config (0.2.0 and 0.1.0), and WASI 0.2: wasi:cli, wasi:clocks, \
     wasi:filesystem (no directories), wasi:io, wasi:random and wasi:sockets (no network)";

/// The packages whose interfaces the host links (`PROVIDED`).
const PROVIDED_PACKAGES: [&str; 7] =
    ["sluice:function/", "wasi:cli/", "wasi:clocks/", "wasi:filesystem/", "wasi:io/", "wasi:random/", "wasi:sockets/"];

/// How to drop an import that a known toolchain adds by default: (interface prefix, advice).
const KNOWN_IMPORTS: [(&str, &str); 1] = [(
    "wasi:http/",
    "A JavaScript component built by jco/componentize-js imports wasi:http unless it is built without it: \
     `jco componentize ... --disable http fetch-event` (docs/languages.md). A Rust function gets it from an \
     HTTP crate (wasi's http, spin-sdk): a stream function cannot make HTTP calls.",
)];

/// The refusal of a component the linker could not satisfy: the imports of packages the host
/// does not link, with a hint for the toolchains known to add them; else the linker's reason.
fn unsupported_import(
    engine: &Engine,
    component: &Component,
    digest: &ModuleDigest,
    error: &wasmtime::Error,
) -> ModuleError {
    let imports = component.component_type();
    let missing: Vec<String> = imports
        .imports(engine.wasmtime())
        .map(|(name, _)| name.to_owned())
        .filter(|name| !PROVIDED_PACKAGES.iter().any(|package| name.starts_with(package)))
        .collect();
    let hint = KNOWN_IMPORTS
        .iter()
        .find(|(prefix, _)| missing.iter().any(|name| name.starts_with(prefix)))
        .map(|(_, advice)| (*advice).to_owned());
    let reason = match missing.is_empty() {
        true => format!("something (the linker says: {error:#})"),
        false => missing.join(", "),
    };
    ModuleError::UnsupportedImport { digest: digest.clone(), reason, hint }
}

/// A validated, compiled module, ready to instantiate. Cheap to clone.
#[derive(Clone)]
pub struct Module {
    inner: Arc<ModuleInner>,
}

struct ModuleInner {
    digest: ModuleDigest,
    size: usize,
    pre: Pre,
    compile_time: Duration,
    from_artifact_cache: bool,
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Module").field("digest", &self.inner.digest).field("size", &self.inner.size).finish()
    }
}

impl Module {
    /// Checks, compiles and prepares `bytes` on `engine`.
    pub(crate) fn load(engine: &Engine, bytes: &[u8]) -> Result<Module, ModuleError> {
        check_header(bytes, engine.limits().max_module_bytes)?;
        let digest = ModuleDigest::of(bytes);
        let started = Instant::now();
        let (component, from_artifact_cache) = match engine.artifacts().and_then(|a| a.load(engine.wasmtime(), &digest))
        {
            Some(component) => (component, true),
            None => {
                let component = Component::new(engine.wasmtime(), bytes)
                    .map_err(|e| ModuleError::Invalid { digest: digest.clone(), reason: format!("{e:#}") })?;
                (component, false)
            }
        };
        let compile_time = started.elapsed();
        engine.stats().module_loaded(compile_time, from_artifact_cache);
        let instance_pre = engine
            .linker()
            .instantiate_pre(&component)
            .map_err(|e| unsupported_import(engine, &component, &digest, &e))?;
        let pre = match BatchProcessorPre::new(instance_pre.clone()) {
            Ok(pre) => Pre::Batch(pre),
            Err(batch) => Pre::Records(ProcessorPre::new(instance_pre).map_err(|records| {
                let reason = format!("as 0.2.0: {batch:#}; as 0.1.0: {records:#}");
                ModuleError::WrongExports { digest: digest.clone(), reason }
            })?),
        };
        if let (Some(artifacts), false) = (engine.artifacts(), from_artifact_cache) {
            // A module that cannot be cached still runs; it is compiled again next time.
            if let Err(e) = artifacts.store(&digest, &component) {
                tracing::warn!(module = %digest, "could not save the compiled module: {e:#}");
            }
        }
        tracing::debug!(module = %digest, size = bytes.len(), ?compile_time, from_artifact_cache, "module loaded");
        Ok(Module {
            inner: Arc::new(ModuleInner { digest, size: bytes.len(), pre, compile_time, from_artifact_cache }),
        })
    }

    /// The module's content digest.
    pub fn digest(&self) -> &ModuleDigest {
        &self.inner.digest
    }

    /// Size of the module binary in bytes.
    pub fn size(&self) -> usize {
        self.inner.size
    }

    /// Time spent compiling (or loading the compiled artifact).
    pub fn compile_time(&self) -> Duration {
        self.inner.compile_time
    }

    /// `true` when the compiled artifact came from the on-disk cache.
    pub fn from_artifact_cache(&self) -> bool {
        self.inner.from_artifact_cache
    }

    /// The names of the component's exports, as `engine` sees them.
    pub fn export_names(&self, engine: &Engine) -> Vec<String> {
        let component = match self.pre() {
            Pre::Batch(pre) => pre.instance_pre().component(),
            Pre::Records(pre) => pre.instance_pre().component(),
        };
        let component_type = component.component_type();
        component_type.exports(engine.wasmtime()).map(|(name, _)| name.to_owned()).collect()
    }

    /// The version of the contract the module was built for: `"0.2.0"` or `"0.1.0"`.
    pub fn contract(&self) -> &'static str {
        match self.pre() {
            Pre::Batch(_) => "0.2.0",
            Pre::Records(_) => "0.1.0",
        }
    }

    pub(crate) fn pre(&self) -> &Pre {
        &self.inner.pre
    }
}

/// A module ready to instantiate, by the contract version its `process` export follows.
pub(crate) enum Pre {
    /// 0.2.0: a batch as columns and one buffer of bytes (`wit/sluice.wit`).
    Batch(BatchProcessorPre<HostState>),
    /// 0.1.0: a list of records (`wit/v0.1/sluice.wit`).
    Records(ProcessorPre<HostState>),
}

/// The checks that need no compiler: size, magic, and core module versus component.
fn check_header(bytes: &[u8], max_module_bytes: usize) -> Result<(), ModuleError> {
    if bytes.len() > max_module_bytes {
        return Err(ModuleError::TooLarge { size: bytes.len(), limit: max_module_bytes });
    }
    if bytes.len() < 8 || bytes[..4] != WASM_MAGIC {
        return Err(ModuleError::NotWasm);
    }
    let version: [u8; 4] = bytes[4..8].try_into().expect("eight bytes checked above");
    match version {
        COMPONENT_VERSION => Ok(()),
        CORE_MODULE_VERSION => Err(ModuleError::CoreModule),
        other => Err(ModuleError::UnknownVersion(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks_name_what_is_wrong() {
        assert_eq!(check_header(b"hello world", 1024), Err(ModuleError::NotWasm));
        assert_eq!(check_header(b"\0asm", 1024), Err(ModuleError::NotWasm));
        assert_eq!(check_header(b"\0asm\x01\0\0\0", 1024), Err(ModuleError::CoreModule));
        assert_eq!(check_header(b"\0asm\x02\0\0\0", 1024), Err(ModuleError::UnknownVersion([2, 0, 0, 0])));
        assert_eq!(check_header(b"\0asm\x0d\0\x01\0", 1024), Ok(()));
        assert_eq!(check_header(&[0; 2048], 1024), Err(ModuleError::TooLarge { size: 2048, limit: 1024 }));
    }
}
