//! Loading a function module: checks that the bytes are a component of the Sluice world,
//! compiles it (or reuses a compiled artifact), and prepares it for fast instantiation.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use super::Engine;
use super::host::HostState;
use sluice_record::bindings::ProcessorPre;

/// The first four bytes of every WebAssembly binary.
const WASM_MAGIC: [u8; 4] = *b"\0asm";
/// Version and layer of a core module (`01 00 00 00`).
const CORE_MODULE_VERSION: [u8; 4] = [1, 0, 0, 0];
/// Version and layer of a component (`0d 00 01 00`).
const COMPONENT_VERSION: [u8; 4] = [0x0d, 0, 1, 0];

/// The content digest that names a module: `sha256:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleDigest(Arc<str>);

impl ModuleDigest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        ModuleDigest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))).into())
    }

    /// The hexadecimal part.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// The first 12 hex digits, for logs.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }
}

impl fmt::Display for ModuleDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The prefix of a digest's text form.
const DIGEST_PREFIX: &str = "sha256:";
/// Hex digits in a SHA-256 digest.
const DIGEST_HEX_LEN: usize = 64;

/// Text that is not a module digest (`sha256:<64 hex digits>`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a module digest: expected sha256:<64 hex digits>")]
pub struct MalformedDigest {
    /// The text given, cut to its first 100 characters.
    pub text: String,
}

impl ModuleDigest {
    /// Reads the text form `sha256:<64 hex digits>` (hex digits in either case; kept in
    /// lowercase). Anything else, bare hex included, is refused.
    pub fn parse(text: &str) -> Result<ModuleDigest, MalformedDigest> {
        match text.strip_prefix(DIGEST_PREFIX) {
            Some(hex) if hex.len() == DIGEST_HEX_LEN && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Ok(ModuleDigest(format!("{DIGEST_PREFIX}{}", hex.to_ascii_lowercase()).into()))
            }
            _ => Err(MalformedDigest { text: text.chars().take(100).collect() }),
        }
    }

    /// The text form, `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for ModuleDigest {
    type Err = MalformedDigest;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ModuleDigest::parse(text)
    }
}

impl serde::Serialize for ModuleDigest {
    /// As its text form, `sha256:<hex>`.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ModuleDigest {
    /// From its text form only ([`ModuleDigest::parse`]).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = ModuleDigest;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a module digest, sha256:<64 hex digits>")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<ModuleDigest, E> {
                ModuleDigest::parse(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Text)
    }
}

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
        "module {digest} imports something Sluice does not provide (only sluice:function/cache, log, config \
         and WASI 0.2 are): {reason}"
    )]
    UnsupportedImport {
        /// The module's digest.
        digest: ModuleDigest,
        /// What is missing.
        reason: String,
    },
    /// Does not export `process` with the right type.
    #[error(
        "module {digest} does not implement the sluice:function/processor world: it must export \
         `process: func(batch: list<input-record>) -> list<record-result>`: {reason}"
    )]
    WrongExports {
        /// The module's digest.
        digest: ModuleDigest,
        /// What is wrong with the exports.
        reason: String,
    },
}

/// A validated, compiled module, ready to instantiate. Cheap to clone.
#[derive(Clone)]
pub struct Module {
    inner: Arc<ModuleInner>,
}

struct ModuleInner {
    digest: ModuleDigest,
    size: usize,
    pre: ProcessorPre<HostState>,
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
            .map_err(|e| ModuleError::UnsupportedImport { digest: digest.clone(), reason: format!("{e:#}") })?;
        let pre = ProcessorPre::new(instance_pre)
            .map_err(|e| ModuleError::WrongExports { digest: digest.clone(), reason: format!("{e:#}") })?;
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
        let component_type = self.pre().instance_pre().component().component_type();
        component_type.exports(engine.wasmtime()).map(|(name, _)| name.to_owned()).collect()
    }

    pub(crate) fn pre(&self) -> &ProcessorPre<HostState> {
        &self.inner.pre
    }
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

    #[test]
    fn a_digest_reads_only_from_its_text_form_and_shows_as_it() {
        let digest = ModuleDigest::of(b"module");
        assert_eq!(ModuleDigest::parse(digest.as_str()), Ok(digest.clone()));
        let upper = format!("sha256:{}", digest.hex().to_ascii_uppercase());
        assert_eq!(upper.parse::<ModuleDigest>(), Ok(digest.clone()), "hex in either case, kept in lowercase");
        let hex = digest.hex().to_owned();
        for text in [
            hex.as_str(),
            "sha256:",
            "f.wasm",
            &format!("sha256:{}", &hex[1..]),
            &format!("sha256:{hex}0"),
            &format!("sha256:{}g", &hex[1..]),
            &format!("SHA256:{hex}"),
            &format!("sha512:{hex}"),
        ] {
            let error = ModuleDigest::parse(text).unwrap_err();
            assert!(error.to_string().ends_with("is not a module digest: expected sha256:<64 hex digits>"), "{error}");
        }
        let long = "x".repeat(1000);
        assert_eq!(ModuleDigest::parse(&long).unwrap_err().text.len(), 100, "a long text is cut in the error");
    }
}
