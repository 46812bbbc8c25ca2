//! The pipeline store: every pipeline deployed on this runtime, as a record on disk with its
//! spec, whether it should run, and the history of its module versions.
//!
//! The store owns the folder `<data_dir>/pipelines/`: one `<name>.json` per pipeline, written
//! atomically (a temporary file, synced, renamed into place), so a crash mid-deploy leaves
//! the record as it was before or after, never half-written. It runs nothing: the
//! [`crate::manager`] reads the records at start-up and starts what they say.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{now, sync_dir, write_atomically};
use crate::spec::{ModuleDigest, PipelineSpec, is_valid_name};

/// The folder of the pipeline store inside the runtime's data directory.
pub const PIPELINES_DIR: &str = "pipelines";

/// Module versions kept per pipeline, the current one included, for rollback.
pub const DEFAULT_KEEP_VERSIONS: usize = 10;

/// Whether a pipeline should be running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DesiredState {
    /// Consuming and processing.
    Running,
    /// Stopped by an operator, its offsets committed; resumes where it stopped.
    Paused,
}

/// Why a module version was put in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RevisionCause {
    /// A create or update of the pipeline (`PUT`, a deploy, the config file).
    Deploy,
    /// A hot reload.
    Reload,
    /// A rollback to a kept version.
    Rollback,
}

impl RevisionCause {
    /// The name, as stored and answered: `deploy`, `reload` or `rollback`.
    pub fn as_str(self) -> &'static str {
        match self {
            RevisionCause::Deploy => "deploy",
            RevisionCause::Reload => "reload",
            RevisionCause::Rollback => "rollback",
        }
    }
}

impl std::fmt::Display for RevisionCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One module version a pipeline ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Revision {
    /// 1 for the first deploy, one more for each change of module.
    pub revision: u64,
    /// The module digest, `sha256:<hex>`.
    #[schema(value_type = String, pattern = "^sha256:[0-9a-f]{64}$")]
    pub module: ModuleDigest,
    /// When this version was put in place, in seconds since the Unix epoch.
    pub deployed_at: u64,
    /// What put it in place.
    pub cause: RevisionCause,
    /// A later revision replaced this one before any partition took it up: it never
    /// processed a record (reloads in quick succession are merged).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub superseded: bool,
}

/// A pipeline as the runtime keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineRecord {
    /// The spec; its `module` is the digest of the current version.
    pub spec: PipelineSpec,
    /// Whether the pipeline should run.
    pub state: DesiredState,
    /// The latest module versions, oldest first; the last one is the current version.
    pub revisions: Vec<Revision>,
    /// For a pipeline declared in `sluice serve`'s config file: the digest of the
    /// declaration last applied. While the file says the same, a restart keeps the stored
    /// state (changes made over the API win); a changed declaration is applied again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared: Option<String>,
}

impl PipelineRecord {
    /// A new pipeline at revision 1.
    pub fn new(spec: PipelineSpec) -> PipelineRecord {
        let first = Revision {
            revision: 1,
            module: spec.module.clone(),
            deployed_at: now(),
            cause: RevisionCause::Deploy,
            superseded: false,
        };
        PipelineRecord { spec, state: DesiredState::Running, revisions: vec![first], declared: None }
    }

    /// The current revision number.
    pub fn revision(&self) -> u64 {
        self.revisions.last().map_or(0, |r| r.revision)
    }

    /// Makes `module` the current version (for `cause`), keeping at most `keep` versions.
    pub fn push_revision(&mut self, module: &ModuleDigest, cause: RevisionCause, keep: usize) {
        let revision = self.revision() + 1;
        self.spec.module = module.clone();
        self.revisions.push(Revision {
            revision,
            module: module.clone(),
            deployed_at: now(),
            cause,
            superseded: false,
        });
        let excess = self.revisions.len().saturating_sub(keep.max(1));
        self.revisions.drain(..excess);
    }

    /// The newest kept version before the current one whose module differs from it.
    pub fn previous(&self) -> Option<&Revision> {
        let current = &self.spec.module;
        self.revisions.iter().rev().skip(1).find(|r| &r.module != current)
    }

    /// Marks the kept version `revision` as superseded before it processed a record.
    pub fn mark_superseded(&mut self, revision: u64) {
        if let Some(kept) = self.revisions.iter_mut().find(|r| r.revision == revision) {
            kept.superseded = true;
        }
    }

    /// The kept version `revision`.
    pub fn find(&self, revision: u64) -> Option<&Revision> {
        self.revisions.iter().find(|r| r.revision == revision)
    }
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[error("pipeline store: {action}: {source}")]
pub struct StoreError {
    /// What the store was doing.
    pub action: String,
    /// The file system's error.
    pub source: io::Error,
}

/// The pipelines of one runtime, stored under `<data_dir>/pipelines/`.
#[derive(Debug, Clone)]
pub struct PipelineStore {
    dir: PathBuf,
}

impl PipelineStore {
    /// Opens (creating it when missing) the store in `<data_dir>/pipelines/`, removing the
    /// temporary files of interrupted writes.
    pub fn open(data_dir: &Path) -> Result<PipelineStore, StoreError> {
        let dir = data_dir.join(PIPELINES_DIR);
        let fail = |action: String| move |source| StoreError { action, source };
        fs::create_dir_all(&dir).map_err(fail(format!("cannot create {}", dir.display())))?;
        for entry in fs::read_dir(&dir).map_err(fail(format!("cannot list {}", dir.display())))? {
            let entry = entry.map_err(fail(format!("cannot list {}", dir.display())))?;
            if entry.file_name().to_string_lossy().ends_with(".tmp") {
                tracing::info!(file = %entry.path().display(), "removing a leftover of an interrupted pipeline write");
                fs::remove_file(entry.path()).map_err(fail(format!("cannot remove {}", entry.path().display())))?;
            }
        }
        Ok(PipelineStore { dir })
    }

    /// The folder the records are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every stored pipeline, sorted by name. A record is loaded only when it can be read, its
    /// spec is valid and its pipeline's name is its file's name (so no two records name one
    /// pipeline); any other is skipped with an error in the log, so one damaged or foreign
    /// file does not keep the others from starting, and no path is ever made of a name that
    /// was not checked.
    pub fn load_all(&self) -> Result<Vec<PipelineRecord>, StoreError> {
        let entries = fs::read_dir(&self.dir)
            .map_err(|source| StoreError { action: format!("cannot list {}", self.dir.display()), source })?;
        let mut records: Vec<PipelineRecord> = Vec::new();
        let mut paths: Vec<PathBuf> = entries.flatten().map(|entry| entry.path()).collect();
        paths.sort();
        for path in paths {
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let file_stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
            let record = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|text| serde_json::from_slice::<PipelineRecord>(&text).map_err(|e| e.to_string()))
                .and_then(|record| {
                    record.spec.validate().map_err(|e| format!("invalid spec: {e}"))?;
                    if record.spec.name != file_stem {
                        return Err(format!(
                            "it names pipeline {:?}, but a record is named after its pipeline ({file_stem:?} here)",
                            record.spec.name
                        ));
                    }
                    if records.iter().any(|r| r.spec.name == record.spec.name) {
                        return Err(format!("pipeline {:?} is already loaded from another record", record.spec.name));
                    }
                    Ok(record)
                });
            match record {
                Ok(record) => records.push(record),
                Err(e) => tracing::error!(file = %path.display(), "skipping a pipeline record: {e}"),
            }
        }
        records.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        Ok(records)
    }

    /// The record file of pipeline `name`, refused unless `name` is a valid pipeline name (so
    /// never a path outside the store).
    fn path_of(&self, name: &str) -> Result<PathBuf, StoreError> {
        if !is_valid_name(name) {
            return Err(StoreError {
                action: format!("refusing the pipeline name {:?}", name.chars().take(100).collect::<String>()),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a valid pipeline name"),
            });
        }
        Ok(self.dir.join(format!("{name}.json")))
    }

    /// Writes `record` atomically, replacing the pipeline's previous record.
    pub fn save(&self, record: &PipelineRecord) -> Result<(), StoreError> {
        let name = &record.spec.name;
        self.path_of(name)?;
        let text = serde_json::to_vec_pretty(record).expect("a pipeline record serialises");
        write_atomically(&self.dir, &format!("{name}.json"), &text)
            .and_then(|()| sync_dir(&self.dir))
            .map_err(|source| StoreError { action: format!("cannot save pipeline {name}"), source })
    }

    /// Removes the pipeline's record; nothing happens when there is none.
    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        match fs::remove_file(self.path_of(name)?) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(StoreError { action: format!("cannot remove pipeline {name}"), source }),
        }
        sync_dir(&self.dir).map_err(|source| StoreError { action: format!("cannot remove pipeline {name}"), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digest of the module named `name` in these tests.
    fn digest(name: &str) -> ModuleDigest {
        ModuleDigest::of(name.as_bytes())
    }

    fn record() -> PipelineRecord {
        let spec: PipelineSpec = serde_json::from_value(serde_json::json!({
            "name": "clicks", "inputs": ["clicks"], "outputs": {"default": "clicks.out"}, "module": digest("aa")
        }))
        .unwrap();
        PipelineRecord::new(spec)
    }

    #[test]
    fn revisions_are_numbered_and_only_the_last_ones_kept() {
        let mut record = record();
        for module in ["bb", "cc", "dd"] {
            record.push_revision(&digest(module), RevisionCause::Reload, 3);
        }
        let kept: Vec<(u64, &ModuleDigest)> = record.revisions.iter().map(|r| (r.revision, &r.module)).collect();
        assert_eq!(kept, vec![(2, &digest("bb")), (3, &digest("cc")), (4, &digest("dd"))]);
        assert_eq!(record.spec.module, digest("dd"));
        assert_eq!(record.revision(), 4);
    }

    #[test]
    fn the_previous_version_skips_reloads_of_the_same_module() {
        let mut record = record();
        record.push_revision(&digest("bb"), RevisionCause::Reload, 10);
        record.push_revision(&digest("bb"), RevisionCause::Reload, 10);
        assert_eq!(record.previous().map(|r| &r.module), Some(&digest("aa")));
    }

    /// A record as the version before typed specs wrote it (`sluice serve` with a Redis cache
    /// with a password, reloaded, rolled back, declared in a config file), byte for byte.
    const RECORD_OF_THE_PREVIOUS_VERSION: &str = r#"{
  "spec": {
    "name": "clicks",
    "inputs": [
      "clicks"
    ],
    "outputs": {
      "default": "clicks.out"
    },
    "module": "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
    "cache": "redis://app:s3cr%40t@127.0.0.1:6379/2?timeout_ms=250",
    "namespace": null,
    "config": {
      "greeting": "hello"
    },
    "processing": {
      "batch_size": 500,
      "batch_max_bytes": 4194304,
      "linger_ms": 20,
      "max_retries": 5,
      "retry_backoff_ms": 100,
      "retry_backoff_max_ms": 5000,
      "on_failure": "dead-letter",
      "dead_letter_topic": null,
      "start": "earliest"
    },
    "group": {
      "static_membership": true,
      "session_timeout_ms": 10000,
      "heartbeat_interval_ms": 3000
    }
  },
  "state": "paused",
  "revisions": [
    {
      "revision": 1,
      "module": "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
      "deployed_at": 1790000000,
      "cause": "deploy"
    },
    {
      "revision": 2,
      "module": "sha256:fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9",
      "deployed_at": 1790000100,
      "cause": "reload",
      "superseded": true
    },
    {
      "revision": 3,
      "module": "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
      "deployed_at": 1790000200,
      "cause": "rollback"
    }
  ],
  "declared": "sha256:0f343b0931126a20f133d67c2b018a3b1e3c0e3c5f2d28e8b2f8c1c2c44a3c11"
}"#;

    #[test]
    fn a_record_written_by_the_previous_version_loads_and_is_written_back_the_same() {
        let root = std::env::temp_dir().join(format!("sluice-store-previous-{}-{}", std::process::id(), now()));
        let store = PipelineStore::open(&root.join("data")).unwrap();
        fs::write(store.dir().join("clicks.json"), RECORD_OF_THE_PREVIOUS_VERSION).unwrap();
        let records = store.load_all().unwrap();
        assert_eq!(records.len(), 1, "the record loads");
        let record = &records[0];
        let causes: Vec<RevisionCause> = record.revisions.iter().map(|r| r.cause).collect();
        assert_eq!(causes, [RevisionCause::Deploy, RevisionCause::Reload, RevisionCause::Rollback]);
        assert!(record.revisions[1].superseded);
        assert_eq!(record.spec.module, digest("foo"));
        assert_eq!(record.previous().map(|r| &r.module), Some(&digest("bar")));
        assert_eq!(record.state, DesiredState::Paused);
        let sluice_cache::CacheUrl::Redis(redis) = record.spec.cache.url() else { panic!("a Redis cache") };
        assert_eq!((redis.username.as_deref(), redis.password.as_deref(), redis.db), (Some("app"), Some("s3cr@t"), 2));
        store.save(record).unwrap();
        let written = fs::read_to_string(store.dir().join("clicks.json")).unwrap();
        assert_eq!(written, RECORD_OF_THE_PREVIOUS_VERSION, "saved again, byte for byte");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn records_survive_a_reopen_and_leftovers_are_removed() {
        let dir = std::env::temp_dir().join(format!("sluice-store-{}-{}", std::process::id(), now()));
        let store = PipelineStore::open(&dir).unwrap();
        store.save(&record()).unwrap();
        fs::write(store.dir().join("half.json.1-1.tmp"), b"{").unwrap();
        fs::write(store.dir().join("broken.json"), b"{ not json").unwrap();
        let store = PipelineStore::open(&dir).unwrap();
        assert_eq!(store.load_all().unwrap(), vec![record()]);
        assert!(!store.dir().join("half.json.1-1.tmp").exists());
        store.remove("clicks").unwrap();
        assert!(store.load_all().unwrap().is_empty());
        fs::remove_dir_all(dir).unwrap();
    }

    /// The JSON of `record` with its spec's name replaced by `name`.
    fn renamed(name: &str) -> Vec<u8> {
        let mut value = serde_json::to_value(record()).unwrap();
        value["spec"]["name"] = name.into();
        serde_json::to_vec(&value).unwrap()
    }

    #[test]
    fn records_are_loaded_only_when_valid_and_named_after_their_file() {
        let root = std::env::temp_dir().join(format!("sluice-store-checks-{}-{}", std::process::id(), now()));
        let data_dir = root.join("data");
        let store = PipelineStore::open(&data_dir).unwrap();
        store.save(&record()).unwrap();
        // A name that walks out of the store, a second record naming `clicks`, an invalid spec.
        fs::write(store.dir().join("evil.json"), renamed("../evil")).unwrap();
        fs::write(store.dir().join("clicks-copy.json"), renamed("clicks")).unwrap();
        let mut invalid = serde_json::to_value(record()).unwrap();
        invalid["spec"]["name"] = "broken".into();
        invalid["spec"]["processing"] = serde_json::json!({"linger_ms": u64::MAX});
        fs::write(store.dir().join("broken.json"), serde_json::to_vec(&invalid).unwrap()).unwrap();
        assert_eq!(store.load_all().unwrap(), vec![record()], "only the valid record named after its file");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_name_that_is_not_a_pipeline_name_never_becomes_a_path() {
        let root = std::env::temp_dir().join(format!("sluice-store-paths-{}-{}", std::process::id(), now()));
        let store = PipelineStore::open(&root.join("data")).unwrap();
        let outside = root.join("data").join("evil.json");
        fs::write(&outside, b"not the store's").unwrap();
        for name in ["../evil", "..", "a/b", ""] {
            assert!(store.remove(name).is_err(), "{name:?}");
            let mut record = record();
            record.spec.name = name.into();
            assert!(store.save(&record).is_err(), "{name:?}");
        }
        assert_eq!(fs::read(&outside).unwrap(), b"not the store's", "the file outside the store is untouched");
        fs::remove_dir_all(root).unwrap();
    }
}
