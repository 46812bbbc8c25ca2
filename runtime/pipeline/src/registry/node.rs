//! The node's identity: a name kept in `<data_dir>/node-id`, made once and read on every
//! start, so a runtime that restarts (after a crash too) is the same member of its pipelines'
//! consumer groups and takes its partitions back at once (Kafka static membership).
//!
//! The id is `sluice-` and 16 random hex digits, or whatever an operator wrote in the file
//! (or passed with `--node-id`): 1 to 100 ASCII letters, digits, `_`, `-` or `.`.

use std::hash::{BuildHasher as _, Hasher as _};
use std::io;
use std::path::Path;

/// The file in the data directory that holds the node id.
pub const NODE_ID_FILE: &str = "node-id";
/// Longest node id accepted.
pub const MAX_NODE_ID_LEN: usize = 100;

/// Checks a node id given by an operator.
pub fn validate_node_id(id: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if id.is_empty() || id.len() > MAX_NODE_ID_LEN || !id.chars().all(allowed) {
        return Err(format!("node id {id:?} must be 1 to {MAX_NODE_ID_LEN} ASCII letters, digits, '_', '-' or '.'"));
    }
    Ok(())
}

/// The node id kept in `data_dir`, made and stored (atomically) when there is none yet.
pub fn load_or_create(data_dir: &Path) -> io::Result<String> {
    let path = data_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim().to_string();
            validate_node_id(&id)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?;
            Ok(id)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir)?;
            let id = format!("sluice-{:016x}", random_u64());
            super::write_atomically(data_dir, NODE_ID_FILE, format!("{id}\n").as_bytes())?;
            super::sync_dir(data_dir)?;
            Ok(id)
        }
        Err(e) => Err(e),
    }
}

/// 64 random bits from the standard library's randomly keyed hasher (seeded by the operating
/// system), mixed with the time and process id. A name, not a secret.
fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher
        .write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_id_is_made_once_and_read_back_on_every_start() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        assert!(first.starts_with("sluice-") && first.len() == 23, "{first}");
        assert_eq!(load_or_create(dir.path()).unwrap(), first);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create(other.path()).unwrap(), first, "two data directories, two nodes");
    }

    #[test]
    fn a_node_id_longer_than_the_limit_is_refused_naming_it() {
        assert_eq!(validate_node_id(&"n".repeat(MAX_NODE_ID_LEN)), Ok(()));
        let error = validate_node_id(&"n".repeat(MAX_NODE_ID_LEN + 1)).unwrap_err();
        assert!(error.contains("must be 1 to 100 ASCII letters"), "{error}");
        assert!(validate_node_id("").is_err() && validate_node_id("a b").is_err());
    }

    #[test]
    fn a_damaged_node_id_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(NODE_ID_FILE), "not valid/\n").unwrap();
        let error = load_or_create(dir.path()).unwrap_err().to_string();
        assert!(error.contains(NODE_ID_FILE) && error.contains("must be 1 to 100"), "{error}");
    }
}
