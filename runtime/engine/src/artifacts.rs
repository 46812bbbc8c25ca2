//! The on-disk cache of compiled modules, so a restart or a reload of a module already seen
//! does not compile it again.
//!
//! Artifacts are keyed by the module's content digest and the engine's compatibility hash
//! (wasmtime version, target, and every compilation setting), so an artifact is only reused by
//! an engine that would have produced the same one. The directory must be private to the
//! runtime: compiled artifacts are native code and are trusted when loaded.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use wasmtime::component::Component;

use super::ModuleDigest;

pub(crate) struct ArtifactCache {
    dir: PathBuf,
    compatibility: String,
}

impl ArtifactCache {
    pub(crate) fn open(dir: &Path, engine: &wasmtime::Engine) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(ArtifactCache { dir: dir.to_path_buf(), compatibility: format!("{:016x}", hasher.finish()) })
    }

    fn path(&self, digest: &ModuleDigest) -> PathBuf {
        self.dir.join(format!("{}-{}.cwasm", digest.hex(), self.compatibility))
    }

    /// The compiled module for `digest`, when this cache has a usable one.
    #[allow(unsafe_code)]
    pub(crate) fn load(&self, engine: &wasmtime::Engine, digest: &ModuleDigest) -> Option<Component> {
        let path = self.path(digest);
        if !path.exists() {
            return None;
        }
        // SAFETY: `deserialize_file` trusts the file to be an artifact that wasmtime produced.
        // Only `store` below writes into this directory, from `Component::serialize` of a
        // component this runtime compiled, and it renames complete files into place, so a
        // file at an artifact path is always a whole artifact of ours. Artifacts of another
        // engine configuration have another name, and wasmtime still checks the header.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring unusable compiled artifact: {e:#}");
                None
            }
        }
    }

    /// Saves `component`'s compiled form; a crash leaves either no file or a whole one.
    pub(crate) fn store(&self, digest: &ModuleDigest, component: &Component) -> anyhow::Result<()> {
        let bytes = component.serialize().map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let path = self.path(digest);
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }
}
