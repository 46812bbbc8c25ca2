//! The registry: what this runtime keeps in its data directory. [`ModuleRegistry`] holds the
//! function modules uploaded to it, by content digest; [`pipelines::PipelineStore`] holds
//! the pipelines deployed on it, with their state and module history.
//!
//! The module registry owns the folder `<data_dir>/modules/` and nothing else. Every module in it
//! was checked and compiled by [`Engine::load`] before it was stored, so an invalid module is
//! never kept. It does not run modules and knows nothing of pipelines: a pipeline asks the
//! registry for bytes and loads them on the engine itself.
//!
//! # Layout on disk
//!
//! ```text
//! <data_dir>/modules/<hex>.wasm    the module binary, named by the hex of its SHA-256
//! <data_dir>/modules/<hex>.json    its metadata (ModuleInfo as JSON)
//! <data_dir>/modules/*.tmp         a write in progress (or interrupted by a crash)
//! ```
//!
//! Every file is written to a `.tmp` file in the same folder, synced, then renamed into place.
//! The metadata file is what makes a module part of the registry: it is renamed in after the
//! binary when storing, and removed before the binary when deleting. A crash at any point
//! therefore leaves the registry as it was before the call or as it is after it; the leftovers
//! (temporary files, a binary without metadata) are ignored by [`ModuleRegistry::list`] and
//! removed by [`ModuleRegistry::open`].

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use sluice_engine::{Engine, Module, ModuleDigest, ModuleError};

pub mod node;
pub mod pipelines;

/// The folder of the registry inside the runtime's data directory.
pub const MODULES_DIR: &str = "modules";

/// The prefix of a digest in its text form, `sha256:<hex>`.
const DIGEST_PREFIX: &str = sluice_contract::DIGEST_PREFIX;
/// Hex digits in a SHA-256 digest.
const DIGEST_HEX_LEN: usize = sluice_contract::DIGEST_HEX_LEN;
/// The ending of every temporary file.
const TMP_SUFFIX: &str = ".tmp";

/// What the registry knows about a stored module (its metadata file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModuleInfo {
    /// The content digest, `sha256:<hex>`.
    #[schema(pattern = "^sha256:[0-9a-f]{64}$")]
    pub digest: String,
    /// Size of the module binary in bytes.
    pub size: u64,
    /// When the module was first stored, in seconds since the Unix epoch (UTC).
    pub uploaded_at: u64,
    /// The names of the component's exports, comma-separated (for a function of the
    /// `sluice:function/processor` world, `process`).
    pub exports: String,
}

/// The result of [`ModuleRegistry::put`].
#[derive(Debug, Clone)]
pub struct Stored {
    /// The stored module's metadata.
    pub info: ModuleInfo,
    /// `true` when this call stored the module, `false` when it was already in the registry
    /// (the metadata is then the one stored first).
    pub created: bool,
    /// The module as this call compiled it; `None` when it was already stored (and so not
    /// compiled again).
    pub module: Option<Module>,
}

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The text given as a digest is not `sha256:<64 hex digits>` (or the 64 hex digits alone).
    #[error("`{text}` is not a module digest: expected sha256:<64 hex digits>")]
    MalformedDigest {
        /// The text given.
        text: String,
    },
    /// No module with this digest is stored.
    #[error("module {digest} is not in the registry")]
    NotFound {
        /// The digest asked for.
        digest: String,
    },
    /// The engine refused the module; nothing was stored.
    #[error("{}", refused_message(digest, source))]
    Refused {
        /// The digest of the bytes refused.
        digest: String,
        /// Why the engine refused them.
        source: ModuleError,
    },
    /// The disk failed under the registry.
    #[error("module registry storage failed for module {digest}: {action}: {source}")]
    Storage {
        /// The module concerned, or `*` for the registry as a whole.
        digest: String,
        /// What the registry was doing.
        action: String,
        /// The error from the file system.
        source: io::Error,
    },
    /// A stored file is not what the registry wrote (edited or damaged outside the runtime).
    #[error("module {digest} is damaged in the registry: {reason}")]
    Corrupt {
        /// The module concerned.
        digest: String,
        /// What is wrong.
        reason: String,
    },
    /// A background task of the registry ended abnormally (a panic while compiling).
    #[error("module registry task failed for module {digest}: {reason}")]
    Task {
        /// The module concerned, or `*` when not known yet.
        digest: String,
        /// What happened to the task.
        reason: String,
    },
}

/// The engine's message, prefixed by the digest when the message does not name it already.
fn refused_message(digest: &str, error: &ModuleError) -> String {
    let message = error.to_string();
    if message.contains(digest) { message } else { format!("module {digest} refused: {message}") }
}

/// A digest given as `sha256:<hex>` or `<hex>`, in its canonical form `sha256:<hex>`
/// (lowercase).
pub fn canonical_digest(text: &str) -> Result<String, RegistryError> {
    parse_digest(text).map(|hex| format!("{DIGEST_PREFIX}{hex}"))
}

/// A digest given as `sha256:<hex>` or `<hex>` (as [`canonical_digest`] reads it), typed.
pub fn module_digest(text: &str) -> Result<ModuleDigest, RegistryError> {
    ModuleDigest::parse_allowing_bare_hex(text).map_err(|error| RegistryError::MalformedDigest { text: error.text })
}

/// The hex part of a digest given as `sha256:<hex>` or `<hex>`, lowercased (the contract's
/// [`ModuleDigest::parse_allowing_bare_hex`]).
pub fn parse_digest(text: &str) -> Result<String, RegistryError> {
    module_digest(text).map(|digest| digest.hex().to_owned())
}

/// The uploaded modules of one runtime, stored under `<data_dir>/modules/`. Cheap to clone.
///
/// Calls that touch the disk or the compiler run on tokio's blocking thread pool, so they can
/// be awaited from handlers without stalling the executor.
#[derive(Clone)]
pub struct ModuleRegistry {
    inner: Arc<RegistryInner>,
}

struct RegistryInner {
    dir: PathBuf,
    engine: Engine,
    /// Serialises stores and deletes, so a binary and its metadata always change together.
    writes: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for ModuleRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleRegistry").field("dir", &self.inner.dir).finish()
    }
}

impl ModuleRegistry {
    /// Opens (creating it when missing) the registry in `<data_dir>/modules/`, which checks
    /// modules on `engine`. Removes what interrupted writes left behind. Blocks briefly on
    /// the file system: call it at startup.
    pub fn open(data_dir: &Path, engine: Engine) -> Result<ModuleRegistry, RegistryError> {
        let dir = data_dir.join(MODULES_DIR);
        fs::create_dir_all(&dir).map_err(|e| storage("*", format!("cannot create {}", dir.display()), e))?;
        remove_leftovers(&dir)?;
        Ok(ModuleRegistry { inner: Arc::new(RegistryInner { dir, engine, writes: tokio::sync::Mutex::new(()) }) })
    }

    /// The folder the modules are stored in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Checks and compiles `bytes` on the engine, then stores them. Storing the same bytes
    /// again changes nothing and returns the metadata stored first, unless the stored copy is
    /// damaged (its metadata unreadable, its binary missing or not matching the digest): then
    /// it is replaced, which repairs the registry. A module the engine refuses is not stored:
    /// [`RegistryError::Refused`].
    pub async fn put(&self, bytes: Bytes) -> Result<Stored, RegistryError> {
        let engine = self.inner.engine.clone();
        let dir = self.inner.dir.clone();
        let checked = blocking("*", move || -> Result<Checked, RegistryError> {
            let digest = ModuleDigest::of(&bytes);
            if let Some(info) = intact_info(&dir, digest.hex())? {
                return Ok(Checked::AlreadyStored(info));
            }
            match engine.load(&bytes) {
                Ok(module) => Ok(Checked::Valid { exports: exports_summary(&engine, &module), digest, bytes, module }),
                Err(source) => Err(RegistryError::Refused { digest: digest.to_string(), source }),
            }
        })
        .await?;
        let (digest, bytes, exports, module) = match checked {
            Checked::AlreadyStored(info) => return Ok(Stored { info, created: false, module: None }),
            Checked::Valid { digest, bytes, exports, module } => (digest, bytes, exports, module),
        };

        let _writing = self.inner.writes.lock().await;
        let dir = self.inner.dir.clone();
        blocking(&digest.to_string(), move || {
            let hex = digest.hex();
            // Stored by a concurrent call while this one was compiling.
            if let Some(info) = intact_info(&dir, hex)? {
                return Ok(Stored { info, created: false, module: Some(module) });
            }
            let info = ModuleInfo { digest: digest.to_string(), size: bytes.len() as u64, uploaded_at: now(), exports };
            let metadata = serde_json::to_vec_pretty(&info).expect("metadata serialises");
            let name = info.digest.as_str();
            write_atomically(&dir, &wasm_name(hex), &bytes).map_err(|e| storage(name, "cannot write the binary", e))?;
            write_atomically(&dir, &json_name(hex), &metadata)
                .map_err(|e| storage(name, "cannot write the metadata", e))?;
            sync_dir(&dir).map_err(|e| storage(name, "cannot sync the registry folder", e))?;
            tracing::info!(module = name, size = info.size, "module stored in the registry");
            Ok(Stored { info, created: true, module: Some(module) })
        })
        .await
    }

    /// The metadata of the module `digest` (`sha256:<hex>` or `<hex>`).
    pub async fn info(&self, digest: &str) -> Result<Option<ModuleInfo>, RegistryError> {
        let hex = parse_digest(digest)?;
        let dir = self.inner.dir.clone();
        blocking(&format!("{DIGEST_PREFIX}{hex}"), move || read_info(&dir, &hex)).await
    }

    /// The metadata and bytes of the module `digest` (`sha256:<hex>` or `<hex>`). The bytes
    /// are checked against the digest: a damaged binary is [`RegistryError::Corrupt`].
    pub async fn get(&self, digest: &str) -> Result<Option<(ModuleInfo, Vec<u8>)>, RegistryError> {
        let hex = parse_digest(digest)?;
        let dir = self.inner.dir.clone();
        let name = format!("{DIGEST_PREFIX}{hex}");
        blocking(&name.clone(), move || {
            let Some(info) = read_info(&dir, &hex)? else { return Ok(None) };
            let bytes = match fs::read(dir.join(wasm_name(&hex))) {
                Ok(bytes) => bytes,
                // Deleted between the two reads.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(storage(&name, "cannot read the binary", e)),
            };
            if ModuleDigest::of(&bytes).hex() != hex {
                return Err(RegistryError::Corrupt {
                    digest: name,
                    reason: "the binary does not match its digest".into(),
                });
            }
            Ok(Some((info, bytes)))
        })
        .await
    }

    /// Every stored module, sorted by digest. Damaged metadata files are skipped with a
    /// warning, so one bad file does not hide the others.
    pub async fn list(&self) -> Result<Vec<ModuleInfo>, RegistryError> {
        let dir = self.inner.dir.clone();
        blocking("*", move || {
            let mut modules = Vec::new();
            for hex in stored_hexes(&dir)? {
                match read_info(&dir, &hex) {
                    Ok(Some(info)) => modules.push(info),
                    Ok(None) => {}
                    Err(e) => tracing::warn!("skipping a module in the registry listing: {e}"),
                }
            }
            modules.sort_by(|a, b| a.digest.cmp(&b.digest));
            Ok(modules)
        })
        .await
    }

    /// Removes the module `digest` (`sha256:<hex>` or `<hex>`): [`RegistryError::NotFound`]
    /// when it is not stored.
    pub async fn delete(&self, digest: &str) -> Result<(), RegistryError> {
        let hex = parse_digest(digest)?;
        let _writing = self.inner.writes.lock().await;
        let dir = self.inner.dir.clone();
        let name = format!("{DIGEST_PREFIX}{hex}");
        blocking(&name.clone(), move || {
            // The metadata goes first: once it is gone the module is no longer in the registry.
            match fs::remove_file(dir.join(json_name(&hex))) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(RegistryError::NotFound { digest: name }),
                Err(e) => return Err(storage(&name, "cannot remove the metadata", e)),
            }
            match fs::remove_file(dir.join(wasm_name(&hex))) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // The module is deleted; the binary left behind is removed at the next open.
                Err(e) => tracing::warn!(module = %name, "cannot remove the binary of a deleted module: {e}"),
            }
            sync_dir(&dir).map_err(|e| storage(&name, "cannot sync the registry folder", e))?;
            tracing::info!(module = %name, "module deleted from the registry");
            Ok(())
        })
        .await
    }

    /// Checks that the registry folder can still be read (for readiness probes).
    pub async fn check(&self) -> Result<(), RegistryError> {
        let dir = self.inner.dir.clone();
        blocking("*", move || {
            fs::read_dir(&dir).map(drop).map_err(|e| storage("*", format!("cannot read {}", dir.display()), e))
        })
        .await
    }
}

/// What the compiling step of [`ModuleRegistry::put`] found.
enum Checked {
    AlreadyStored(ModuleInfo),
    Valid { digest: ModuleDigest, bytes: Bytes, exports: String, module: Module },
}

/// Runs `work` on the blocking pool; a panic in it becomes [`RegistryError::Task`].
async fn blocking<T: Send + 'static>(
    digest: &str,
    work: impl FnOnce() -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, RegistryError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| RegistryError::Task { digest: digest.to_string(), reason: e.to_string() })?
}

fn storage(digest: &str, action: impl Into<String>, source: io::Error) -> RegistryError {
    RegistryError::Storage { digest: digest.to_string(), action: action.into(), source }
}

fn wasm_name(hex: &str) -> String {
    format!("{hex}.wasm")
}

fn json_name(hex: &str) -> String {
    format!("{hex}.json")
}

pub(crate) fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The export names of a loaded module, comma-separated.
fn exports_summary(engine: &Engine, module: &Module) -> String {
    module.export_names(engine).join(", ")
}

/// The metadata of `<hex>`, `None` when it is not stored.
fn read_info(dir: &Path, hex: &str) -> Result<Option<ModuleInfo>, RegistryError> {
    let name = format!("{DIGEST_PREFIX}{hex}");
    let text = match fs::read(dir.join(json_name(hex))) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(storage(&name, "cannot read the metadata", e)),
    };
    let info: ModuleInfo = serde_json::from_slice(&text)
        .map_err(|e| RegistryError::Corrupt { digest: name.clone(), reason: format!("unreadable metadata: {e}") })?;
    if info.digest != name {
        return Err(RegistryError::Corrupt {
            digest: name,
            reason: format!("the metadata names another module, {}", info.digest),
        });
    }
    Ok(Some(info))
}

/// The metadata of `<hex>` when the module is stored and intact: its metadata readable and
/// its binary matching the digest. `None` when it is not stored or damaged (with a warning),
/// so that storing it again replaces it.
fn intact_info(dir: &Path, hex: &str) -> Result<Option<ModuleInfo>, RegistryError> {
    let name = format!("{DIGEST_PREFIX}{hex}");
    let damage = match read_info(dir, hex) {
        Ok(None) => return Ok(None),
        Ok(Some(info)) => match fs::read(dir.join(wasm_name(hex))) {
            Ok(bytes) if ModuleDigest::of(&bytes).hex() == hex => return Ok(Some(info)),
            Ok(_) => "the binary does not match its digest".to_string(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => "the binary is missing".to_string(),
            Err(e) => return Err(storage(&name, "cannot read the binary", e)),
        },
        Err(RegistryError::Corrupt { reason, .. }) => reason,
        Err(e) => return Err(e),
    };
    tracing::warn!(module = %name, "the stored copy is damaged ({damage}); storing it again replaces it");
    Ok(None)
}

/// The hex digests that have a metadata file, in no particular order.
fn stored_hexes(dir: &Path) -> Result<Vec<String>, RegistryError> {
    let entries = fs::read_dir(dir).map_err(|e| storage("*", format!("cannot list {}", dir.display()), e))?;
    let mut hexes = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| storage("*", format!("cannot list {}", dir.display()), e))?;
        if let Some(hex) = entry.file_name().to_str().and_then(|n| n.strip_suffix(".json"))
            && is_hex_digest(hex)
        {
            hexes.push(hex.to_string());
        }
    }
    Ok(hexes)
}

fn is_hex_digest(text: &str) -> bool {
    text.len() == DIGEST_HEX_LEN && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Removes temporary files and binaries without metadata: what interrupted writes and deletes
/// leave behind. Files the registry did not name are left alone.
fn remove_leftovers(dir: &Path) -> Result<(), RegistryError> {
    let entries = fs::read_dir(dir).map_err(|e| storage("*", format!("cannot list {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| storage("*", format!("cannot list {}", dir.display()), e))?;
        let Some(file_name) = entry.file_name().to_str().map(str::to_string) else { continue };
        let leftover = if file_name.ends_with(TMP_SUFFIX) {
            true
        } else if let Some(hex) = file_name.strip_suffix(".wasm") {
            is_hex_digest(hex) && !dir.join(json_name(hex)).exists()
        } else {
            false
        };
        if leftover {
            tracing::info!(file = %entry.path().display(), "removing a leftover of an interrupted registry write");
            fs::remove_file(entry.path())
                .map_err(|e| storage("*", format!("cannot remove {}", entry.path().display()), e))?;
        }
    }
    Ok(())
}

/// A sequence number that keeps concurrent temporary files of one process apart.
static TMP_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `dir/name` so that a crash leaves either the old file or the whole new
/// one: a temporary file in the same folder, synced, then renamed over the target.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let sequence = TMP_SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{name}.{}-{sequence}{TMP_SUFFIX}", std::process::id()));
    let result = (|| {
        let mut file = File::create_new(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, dir.join(name))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes the renames in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn digests_are_accepted_with_or_without_the_algorithm_prefix() {
        assert_eq!(parse_digest(HEX).unwrap(), HEX);
        assert_eq!(parse_digest(&format!("sha256:{HEX}")).unwrap(), HEX);
        assert_eq!(parse_digest(&HEX.to_ascii_uppercase()).unwrap(), HEX);
    }

    #[test]
    fn malformed_digests_are_refused() {
        for text in
            ["", "sha256:", "abc", &HEX[1..], &format!("{HEX}0"), &format!("sha512:{HEX}"), &HEX.replace('0', "g")]
        {
            assert!(matches!(parse_digest(text), Err(RegistryError::MalformedDigest { .. })), "{text}");
        }
    }

    #[test]
    fn atomic_writes_replace_the_file_and_leave_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("sluice-registry-unit-{}-{}", std::process::id(), now()));
        fs::create_dir_all(&dir).unwrap();
        write_atomically(&dir, "a.json", b"one").unwrap();
        write_atomically(&dir, "a.json", b"two").unwrap();
        assert_eq!(fs::read(dir.join("a.json")).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn leftovers_are_temporary_files_and_binaries_without_metadata() {
        let dir = std::env::temp_dir().join(format!("sluice-registry-leftovers-{}-{}", std::process::id(), now()));
        fs::create_dir_all(&dir).unwrap();
        let other = HEX.replace('0', "1");
        for name in [
            format!("{HEX}.wasm"),
            format!("{HEX}.json"),
            format!("{other}.wasm"),
            format!("{other}.json.1-2.tmp"),
            "notes.txt".to_string(),
        ] {
            fs::write(dir.join(name), b"x").unwrap();
        }
        remove_leftovers(&dir).unwrap();
        let mut names: Vec<_> =
            fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, vec![format!("{HEX}.json"), format!("{HEX}.wasm"), "notes.txt".to_string()]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
