//! `sluice nodes`: the nodes of the runtime's cluster, as the runtime sees them.

use sluice::api::{ClusterView, NodeShare, NodeStatus};

use super::{print_json, print_table};
use crate::ClientArgs;

/// Lists the cluster's nodes; outside a cluster, the runtime alone.
pub fn nodes(args: &ClientArgs) -> anyhow::Result<()> {
    let view = args.client().cluster()?;
    if args.json {
        return print_json(&view);
    }
    print_table(&["NODE", "STATE", "LAST SEEN", "PIPELINES", "PARTITIONS"], &node_rows(&view))?;
    if !view.cluster {
        outln!("(not in cluster mode: this runtime alone)")?;
    }
    Ok(())
}

/// One row per node; this node's id is marked with `*`.
fn node_rows(view: &ClusterView) -> Vec<Vec<String>> {
    view.nodes
        .iter()
        .map(|n: &NodeStatus| {
            let pipelines = &n.heartbeat.pipelines;
            let partitions: usize = pipelines.iter().map(|p| p.partitions.len()).sum();
            let name = if n.node == view.node { format!("{} *", n.node) } else { n.node.clone() };
            vec![
                name,
                n.state.to_string(),
                format!("{} s ago", n.last_seen_secs),
                pipelines.len().to_string(),
                partitions.to_string(),
            ]
        })
        .collect()
}

/// One row per node running a pipeline, for `sluice status`.
pub fn share_rows(shares: &[NodeShare]) -> Vec<Vec<String>> {
    shares
        .iter()
        .map(|s| {
            // A partition still on another revision than its node's says which.
            let partitions: Vec<String> = s
                .partitions
                .iter()
                .map(|p| match p.revision {
                    Some(revision) if revision != s.revision => format!("{p} (rev {revision})"),
                    _ => p.to_string(),
                })
                .collect();
            vec![
                s.node.clone(),
                s.state.to_string(),
                s.revision.to_string(),
                if partitions.is_empty() { "-".into() } else { partitions.join(",") },
                s.records_in.to_string(),
                s.lag.to_string(),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice::api::{Heartbeat, NodePipeline, NodeState, OwnedPartition};

    fn pipeline(partitions: &[i32]) -> NodePipeline {
        NodePipeline {
            name: "p".into(),
            revision: 4,
            module: "sha256:00".into(),
            state: "running".into(),
            partitions: partitions
                .iter()
                .map(|&p| OwnedPartition { topic: "clicks".into(), partition: p, revision: None })
                .collect(),
            records_in: 12,
            records_out: 12,
            failed: 0,
            lag: 1,
            last_error: None,
        }
    }

    fn node(id: &str, state: NodeState, pipelines: Vec<NodePipeline>) -> NodeStatus {
        NodeStatus {
            node: id.into(),
            state,
            last_seen_secs: 3,
            heartbeat: Heartbeat { node: id.into(), admin_url: None, sent_at: 1, left: false, pipelines },
        }
    }

    #[test]
    fn the_nodes_table_counts_pipelines_and_partitions_and_marks_this_node() {
        let view = ClusterView {
            node: "b".into(),
            cluster: true,
            nodes: vec![
                node("a", NodeState::Up, vec![pipeline(&[0, 3]), pipeline(&[1])]),
                node("b", NodeState::Gone, vec![]),
            ],
        };
        assert_eq!(node_rows(&view), [["a", "up", "3 s ago", "2", "3"], ["b *", "gone", "3 s ago", "0", "0"]]);
    }

    #[test]
    fn a_node_share_lists_its_partitions_as_topic_slash_partition() {
        let share = NodeShare {
            node: "a".into(),
            state: NodeState::Up,
            revision: 4,
            module: "sha256:00".into(),
            pipeline_state: "running".into(),
            partitions: pipeline(&[0, 3]).partitions,
            records_in: 12,
            lag: 1,
        };
        let idle = NodeShare { partitions: Vec::new(), ..share.clone() };
        let mut switching = share.clone();
        switching.partitions[0].revision = Some(4);
        switching.partitions[1].revision = Some(3);
        assert_eq!(
            share_rows(&[share, idle, switching]),
            [
                ["a", "up", "4", "clicks/0,clicks/3", "12", "1"],
                ["a", "up", "4", "-", "12", "1"],
                ["a", "up", "4", "clicks/0,clicks/3 (rev 3)", "12", "1"]
            ]
        );
    }
}
