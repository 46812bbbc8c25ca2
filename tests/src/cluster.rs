//! Nodes of Sluice on one broker (tansu), for the cluster tests and the cluster benchmark:
//! several `sluice serve` processes sharing one registry kept in Kafka, or one
//! `sluice serve` with its registry on disk (the baseline a benchmark compares them to); one
//! pipeline's topics; and the calls that read every node's report of a pipeline and wait until
//! the reports agree.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice::api::{AdminClient, PipelineReport};

use crate::guests;
use crate::kafka::{TansuBroker, unique_suffix};
use crate::process::ServeProcess;

/// How long a wait for the nodes' reports lasts before it fails.
pub const WAIT: Duration = Duration::from_secs(120);
/// Partitions of every input and output topic here: two per node of three.
pub const PARTITIONS: i32 = 6;
/// How often [`wait_for_nodes`] asks the nodes again.
const POLL: Duration = Duration::from_millis(100);

/// A broker, the nodes on it, and one pipeline's topics.
pub struct Cluster {
    /// The broker every node uses.
    pub broker: TansuBroker,
    dir: tempfile::TempDir,
    /// The nodes by index, `None` for one stopped; node `i` is `n{i+1}`.
    pub nodes: Vec<Option<ServeProcess>>,
    /// The input topic, [`PARTITIONS`] partitions.
    pub input: String,
    /// The output topic, [`PARTITIONS`] partitions.
    pub output: String,
    /// Whether the nodes run in cluster mode (the registry in Kafka; otherwise `--registry data-dir`).
    clustered: bool,
}

impl Cluster {
    /// A broker and `nodes` cluster nodes, `n1`, `n2`, ..., each on its own data directory.
    pub fn start(nodes: usize) -> Cluster {
        let mut cluster = Cluster::empty(true);
        for _ in 0..nodes {
            cluster.add_node();
        }
        cluster
    }

    /// A broker and one `sluice serve` outside cluster mode, its registry in its data directory.
    pub fn single() -> Cluster {
        let mut cluster = Cluster::empty(false);
        cluster.add_node();
        cluster
    }

    fn empty(clustered: bool) -> Cluster {
        let broker = TansuBroker::start();
        let id = unique_suffix();
        let (input, output) = (format!("in-{id}"), format!("out-{id}"));
        broker.create_topic(&input, PARTITIONS);
        broker.create_topic(&output, PARTITIONS);
        Cluster { broker, dir: tempfile::tempdir().unwrap(), nodes: Vec::new(), input, output, clustered }
    }

    /// Starts the next node; answers its index.
    pub fn add_node(&mut self) -> usize {
        let index = self.nodes.len();
        self.nodes.push(Some(self.spawn(index)));
        index
    }

    /// Node `index`'s data directory (made when the node first starts).
    pub fn data_dir(&self, index: usize) -> std::path::PathBuf {
        self.dir.path().join(format!("n{}", index + 1))
    }

    /// Starts node `index` (again, on its data directory).
    pub fn spawn(&self, index: usize) -> ServeProcess {
        let data = self.data_dir(index);
        let id = format!("n{}", index + 1);
        let args: &[&str] = if self.clustered { &["--node-id", &id] } else { &["--registry", "data-dir"] };
        ServeProcess::start(&self.broker.bootstrap(), &data, args)
    }

    /// Node `index`'s admin API.
    pub fn url(&self, index: usize) -> String {
        self.nodes[index].as_ref().expect("a running node").url().to_string()
    }

    /// The indexes of the nodes running now.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].is_some()).collect()
    }

    /// The name of the cluster's own pipeline.
    pub fn name(&self) -> String {
        format!("p-{}", self.input)
    }

    /// The spec of the cluster's own pipeline, from the input to the output topic.
    pub fn spec(&self) -> Value {
        self.spec_named(&self.name())
    }

    /// A spec of a pipeline `name` from the input to the output topic, with no module.
    pub fn spec_named(&self, name: &str) -> Value {
        json!({
            "name": name,
            "inputs": [self.input],
            "outputs": { "default": self.output },
            "processing": { "linger_ms": 5, "batch_size": 50, "on_failure": "skip" }
        })
    }

    /// Each running node's report of the pipeline `name`, asked of all of them at once, in the
    /// order of [`Cluster::running`]; `None` from a node that does not have the pipeline (or
    /// did not answer).
    pub async fn reports(&self, name: &str) -> Vec<Option<PipelineReport>> {
        let asks: Vec<_> = self
            .running()
            .into_iter()
            .map(|index| {
                let (url, name) = (self.url(index), name.to_string());
                tokio::spawn(async move { report(&url, &name).await })
            })
            .collect();
        let mut reports = Vec::with_capacity(asks.len());
        for ask in asks {
            reports.push(ask.await.expect("report task"));
        }
        reports
    }
}

/// Runs a blocking admin API call off the async threads.
pub async fn api<T: Send + 'static>(url: &str, call: impl FnOnce(AdminClient) -> T + Send + 'static) -> T {
    let client = AdminClient::new(url, None);
    tokio::task::spawn_blocking(move || call(client)).await.expect("admin call task")
}

/// The report of `name` from the node at `url`, `None` if it has none.
pub async fn report(url: &str, name: &str) -> Option<PipelineReport> {
    let name = name.to_string();
    api(url, move |c| c.get_pipeline(&name)).await.ok()
}

/// Each running node's report of the cluster's own pipeline, once `check` holds for all of
/// them together. Panics after [`WAIT`], showing what the nodes report.
pub async fn wait_for_nodes(
    cluster: &Cluster,
    what: &str,
    check: impl Fn(&[PipelineReport]) -> bool,
) -> Vec<PipelineReport> {
    wait_for_pipeline(cluster, &cluster.name(), POLL, what, check).await
}

/// Each running node's report of the pipeline `name`, asking every `every`, once every node
/// has one and `check` holds for all of them together. Panics after [`WAIT`], showing what
/// the nodes report.
pub async fn wait_for_pipeline(
    cluster: &Cluster,
    name: &str,
    every: Duration,
    what: &str,
    check: impl Fn(&[PipelineReport]) -> bool,
) -> Vec<PipelineReport> {
    let deadline = Instant::now() + WAIT;
    loop {
        let answers = cluster.reports(name).await;
        let everyone = answers.iter().all(Option::is_some);
        let reports: Vec<PipelineReport> = answers.into_iter().flatten().collect();
        if everyone && check(&reports) {
            return reports;
        }
        let shown: Vec<String> = reports
            .iter()
            .map(|r| format!("{:?} revision {} owning {:?} error {:?}", r.state, r.revision, owned(r), r.error))
            .collect();
        assert!(Instant::now() < deadline, "timed out waiting for {what}; the nodes report: {shown:#?}");
        tokio::time::sleep(every).await;
    }
}

/// The partitions the report's node owns now.
pub fn owned(report: &PipelineReport) -> Vec<i32> {
    report.status.partitions.iter().filter(|p| p.owned).map(|p| p.partition).collect()
}

/// Every partition owned by exactly one of the nodes reporting.
pub fn split_over_nodes(reports: &[PipelineReport]) -> bool {
    let all: Vec<i32> = reports.iter().flat_map(owned).collect();
    let distinct: BTreeSet<i32> = all.iter().copied().collect();
    all.len() == PARTITIONS as usize && distinct.len() == PARTITIONS as usize
}

/// Every owned partition on every node runs `digest` and has processed a batch with it.
pub fn all_owned_run(reports: &[PipelineReport], digest: &str) -> bool {
    split_over_nodes(reports)
        && reports.iter().all(|r| {
            r.status.partitions.iter().filter(|p| p.owned).all(|p| {
                let processed_after_switch = match (p.next_offset, p.last_switch.map(|s| s.offset)) {
                    (Some(next), Some(at)) => next > at,
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                p.module.as_deref() == Some(digest) && processed_after_switch
            })
        })
}

/// Deploys the pipeline `spec` with the guest `guest` through the node at `url`
/// (`POST /v1/deploy`); answers the module's digest.
pub async fn deploy(url: &str, spec: Value, guest: &str) -> String {
    let module = guests::component(guest);
    api(url, move |c| c.deploy(&spec, &module, &mut |_, _| {})).await.expect("deploy").pipeline.module
}

/// Uploads `guest` to the node at `url`; answers its digest.
pub async fn upload(url: &str, guest: &str) -> String {
    let module = guests::component(guest);
    api(url, move |c| c.upload_module(&module, &mut |_, _| {})).await.expect("upload").digest
}

/// The input id `n` of an output value of the passthrough or tagged guests for an input
/// `id-n` (`id-n` or `tag:id-n`).
pub fn input_id(value: &str) -> usize {
    let id = value.rsplit_once(':').map_or(value, |(_, id)| id);
    id.strip_prefix("id-").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("unexpected output {value:?}"))
}
