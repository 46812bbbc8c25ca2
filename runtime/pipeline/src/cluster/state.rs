//! The registry as every node of a cluster rebuilds it from the registry topic: a pure state
//! machine, fed the topic's records in order, that knows nothing of Kafka or of running
//! pipelines. Every node applies the same records in the same order with the same rules, so
//! every node reaches the same state without talking to another.
//!
//! # Records
//!
//! | key | value |
//! |---|---|
//! | `pipeline/<name>` | a [`PipelineChange`]: the pipeline's whole record after the change (`null` once deleted) and its generation |
//! | `module/<hex>` | a [`ModuleChange`]: a module stored in the modules topic, or deleted from it |
//!
//! # Conflicts
//!
//! Each pipeline has a *generation*, counting its accepted changes. A change proposed on a
//! node carries the generation it makes, one more than the one its node had applied. It is
//! accepted when it is one more than the current generation, and rejected otherwise: of two
//! changes proposed at once on two nodes from the same generation, the first in the log wins
//! and the second is rejected, on every node alike. A node whose change was rejected appends
//! the current record again with the current generation (a *restatement*, which changes
//! nothing where it is applied), so that the last record of the key, the one a compacted topic
//! keeps, is the accepted one. The first record a node reads for a pipeline is accepted
//! whatever its generation: in a compacted topic it may be the only one left.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::registry::ModuleInfo;
use crate::registry::pipelines::PipelineRecord;

/// The key prefix of a pipeline's records.
pub const PIPELINE_KEY_PREFIX: &str = "pipeline/";
/// The key prefix of a module's records.
pub const MODULE_KEY_PREFIX: &str = "module/";

/// The key of pipeline `name`'s records.
pub fn pipeline_key(name: &str) -> String {
    format!("{PIPELINE_KEY_PREFIX}{name}")
}

/// The key of module `hex`'s records.
pub fn module_key(hex: &str) -> String {
    format!("{MODULE_KEY_PREFIX}{hex}")
}

/// A change of a pipeline, as appended to the registry topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineChange {
    /// The generation this change makes: the proposer's current generation plus one (or the
    /// current one, for a restatement).
    pub generation: u64,
    /// The pipeline's record after the change; `None` once deleted.
    pub record: Option<PipelineRecord>,
    /// The node that proposed it.
    pub node: String,
}

/// A change of a module, as appended to the registry topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleChange {
    /// The module's metadata while it is stored; `None` once deleted.
    pub info: Option<ModuleInfo>,
    /// How many chunks its binary is split into in the modules topic.
    pub chunks: u32,
    /// The node that stored or deleted it.
    pub node: String,
}

/// A pipeline as the log left it.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineEntry {
    /// Its accepted changes so far.
    pub generation: u64,
    /// Its record; `None` once deleted.
    pub record: Option<PipelineRecord>,
    /// The offset of the record that made it so.
    pub offset: i64,
}

/// What applying one record of the log did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A pipeline change was accepted: the pipeline is at its generation now.
    Pipeline {
        /// The pipeline.
        name: String,
    },
    /// A restatement of a pipeline's current record: nothing changed.
    Restated,
    /// A pipeline change made from an older generation, rejected.
    Rejected {
        /// The pipeline.
        name: String,
        /// The generation it is at.
        generation: u64,
        /// Its current module revision (0 once deleted).
        revision: u64,
    },
    /// A module was stored or deleted.
    Module {
        /// Its hex digest.
        hex: String,
    },
    /// The record cannot be read; nothing changed.
    Invalid(String),
}

/// The registry rebuilt from the log.
#[derive(Debug, Default)]
pub struct RegistryState {
    pipelines: BTreeMap<String, PipelineEntry>,
    modules: BTreeMap<String, ModuleChange>,
    /// Pipelines whose last record was rejected, and not restated since.
    unrestated: BTreeSet<String>,
    /// The offset of the next record to apply.
    next_offset: i64,
}

impl RegistryState {
    /// Applies the record at `offset` with `key` and `value`. Records must come in the log's
    /// order; one at an offset already applied changes nothing.
    pub fn apply(&mut self, offset: i64, key: &[u8], value: Option<&[u8]>) -> Outcome {
        if offset < self.next_offset {
            return Outcome::Invalid(format!("offset {offset} is already applied"));
        }
        self.next_offset = offset + 1;
        let Ok(key) = std::str::from_utf8(key) else {
            return Outcome::Invalid(format!("offset {offset}: the key is not UTF-8"));
        };
        let Some(value) = value else {
            // Tombstones are never written to the registry topic; a foreign one changes nothing.
            return Outcome::Invalid(format!("offset {offset}: key {key:?} has no value"));
        };
        if let Some(name) = key.strip_prefix(PIPELINE_KEY_PREFIX) {
            match serde_json::from_slice::<PipelineChange>(value) {
                Ok(change) => self.apply_pipeline(offset, name, change),
                Err(e) => Outcome::Invalid(format!("offset {offset}: key {key:?}: not a pipeline change: {e}")),
            }
        } else if let Some(hex) = key.strip_prefix(MODULE_KEY_PREFIX) {
            match serde_json::from_slice::<ModuleChange>(value) {
                Ok(change) => {
                    self.modules.insert(hex.to_string(), change);
                    Outcome::Module { hex: hex.to_string() }
                }
                Err(e) => Outcome::Invalid(format!("offset {offset}: key {key:?}: not a module change: {e}")),
            }
        } else {
            Outcome::Invalid(format!("offset {offset}: unknown key {key:?}"))
        }
    }

    fn apply_pipeline(&mut self, offset: i64, name: &str, change: PipelineChange) -> Outcome {
        if let Some(record) = &change.record
            && let Err(e) = record.spec.validate()
        {
            return Outcome::Invalid(format!("offset {offset}: pipeline {name}: invalid spec: {e}"));
        }
        if change.record.as_ref().is_some_and(|r| r.spec.name != name) {
            return Outcome::Invalid(format!("offset {offset}: key names pipeline {name}, its record another"));
        }
        let current = self.pipelines.get(name);
        let accepted = match current {
            None => true,
            Some(entry) => change.generation == entry.generation + 1,
        };
        if accepted {
            self.unrestated.remove(name);
            self.pipelines.insert(
                name.to_string(),
                PipelineEntry { generation: change.generation, record: change.record, offset },
            );
            return Outcome::Pipeline { name: name.to_string() };
        }
        let entry = current.expect("a rejected change has a current entry");
        if change.generation == entry.generation && change.record == entry.record {
            self.unrestated.remove(name);
            return Outcome::Restated;
        }
        let outcome = Outcome::Rejected {
            name: name.to_string(),
            generation: entry.generation,
            revision: entry.record.as_ref().map_or(0, PipelineRecord::revision),
        };
        self.unrestated.insert(name.to_string());
        outcome
    }

    /// The offset of the next record to apply.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// Pipeline `name` as the log left it, deleted ones included.
    pub fn pipeline(&self, name: &str) -> Option<&PipelineEntry> {
        self.pipelines.get(name)
    }

    /// Every pipeline that exists, by name.
    pub fn pipelines(&self) -> impl Iterator<Item = (&String, &PipelineEntry)> {
        self.pipelines.iter().filter(|(_, entry)| entry.record.is_some())
    }

    /// Module `hex` as the log left it.
    pub fn module(&self, hex: &str) -> Option<&ModuleChange> {
        self.modules.get(hex)
    }

    /// Pipelines whose last record was a rejected change: their accepted record must be
    /// restated.
    pub fn unrestated(&self) -> impl Iterator<Item = &String> {
        self.unrestated.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::pipelines::RevisionCause;
    use crate::spec::{ModuleDigest, PipelineSpec};

    fn record(module: &str) -> PipelineRecord {
        let spec: PipelineSpec = serde_json::from_value(serde_json::json!({
            "name": "clicks", "inputs": ["clicks"], "outputs": {"default": "clicks.out"},
            "module": ModuleDigest::of(module.as_bytes())
        }))
        .unwrap();
        PipelineRecord::new(spec)
    }

    fn change(generation: u64, record: Option<PipelineRecord>, node: &str) -> Vec<u8> {
        serde_json::to_vec(&PipelineChange { generation, record, node: node.into() }).unwrap()
    }

    #[test]
    fn of_two_changes_made_from_one_generation_the_first_in_the_log_wins_everywhere() {
        let created = record("a");
        let mut from_node_1 = created.clone();
        from_node_1.push_revision(&ModuleDigest::of(b"b"), RevisionCause::Reload, 10);
        let mut from_node_2 = created.clone();
        from_node_2.push_revision(&ModuleDigest::of(b"c"), RevisionCause::Reload, 10);
        let log = [
            change(1, Some(created.clone()), "n1"),
            change(2, Some(from_node_1.clone()), "n1"),
            change(2, Some(from_node_2), "n2"),
            change(2, Some(from_node_1.clone()), "n2"),
        ];
        let mut nodes = [RegistryState::default(), RegistryState::default()];
        for node in &mut nodes {
            let outcomes: Vec<Outcome> = log
                .iter()
                .enumerate()
                .map(|(offset, value)| node.apply(offset as i64, b"pipeline/clicks", Some(value)))
                .collect();
            assert_eq!(outcomes[1], Outcome::Pipeline { name: "clicks".into() });
            assert_eq!(outcomes[2], Outcome::Rejected { name: "clicks".into(), generation: 2, revision: 2 });
            assert_eq!(outcomes[3], Outcome::Restated, "the loser's node restates the winner");
            let entry = node.pipeline("clicks").unwrap();
            assert_eq!((entry.generation, entry.record.as_ref()), (2, Some(&from_node_1)));
            assert_eq!(node.unrestated().count(), 0);
        }
    }

    #[test]
    fn a_rejected_change_not_yet_restated_is_listed() {
        let mut state = RegistryState::default();
        state.apply(0, b"pipeline/clicks", Some(&change(1, Some(record("a")), "n1")));
        state.apply(1, b"pipeline/clicks", Some(&change(1, Some(record("b")), "n2")));
        assert_eq!(state.unrestated().collect::<Vec<_>>(), ["clicks"]);
    }

    #[test]
    fn the_first_record_of_a_compacted_topic_is_accepted_whatever_its_generation() {
        let mut state = RegistryState::default();
        assert_eq!(
            state.apply(40, b"pipeline/clicks", Some(&change(7, Some(record("a")), "n1"))),
            Outcome::Pipeline { name: "clicks".into() }
        );
        assert_eq!(state.pipeline("clicks").unwrap().generation, 7);
    }

    #[test]
    fn a_deleted_pipeline_keeps_its_generation_and_can_be_created_again() {
        let mut state = RegistryState::default();
        state.apply(0, b"pipeline/clicks", Some(&change(1, Some(record("a")), "n1")));
        state.apply(1, b"pipeline/clicks", Some(&change(2, None, "n1")));
        assert_eq!(state.pipelines().count(), 0);
        assert_eq!(
            state.apply(2, b"pipeline/clicks", Some(&change(1, Some(record("b")), "n2"))),
            Outcome::Rejected { name: "clicks".into(), generation: 2, revision: 0 }
        );
        assert!(matches!(
            state.apply(3, b"pipeline/clicks", Some(&change(3, Some(record("b")), "n2"))),
            Outcome::Pipeline { .. }
        ));
    }

    #[test]
    fn a_record_that_cannot_be_read_is_named_by_its_offset_and_the_rest_applied() {
        let mut state = RegistryState::default();
        let outcomes = [
            state.apply(0, b"pipeline/clicks", Some(b"{ not json")),
            state.apply(1, b"something/else", Some(b"{}")),
            state.apply(2, b"pipeline/other", Some(&change(1, Some(record("a")), "n1"))),
            state.apply(3, b"pipeline/clicks", Some(&change(1, Some(record("a")), "n1"))),
        ];
        let Outcome::Invalid(first) = &outcomes[0] else { panic!("{:?}", outcomes[0]) };
        assert!(first.contains("offset 0") && first.contains("pipeline/clicks"), "{first}");
        assert!(matches!(&outcomes[1], Outcome::Invalid(e) if e.contains("offset 1")));
        assert!(matches!(&outcomes[2], Outcome::Invalid(e) if e.contains("offset 2") && e.contains("another")));
        assert_eq!(outcomes[3], Outcome::Pipeline { name: "clicks".into() });
        assert_eq!(state.next_offset(), 4);
    }
}
