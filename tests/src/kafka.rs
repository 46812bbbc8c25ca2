//! The Kafka side of the harness: a real Kafka-protocol broker ([`TansuBroker`], the `tansu`
//! binary run as a child process on loopback) and small rdkafka clients that tests use to write
//! input records, read output records and inspect a group's committed offsets.
//!
//! This module owns the broker processes it starts (each is killed by its PID when stopped or
//! dropped, never by name) and the temporary directories holding their logs. It knows nothing
//! about Sluice's pipeline: tests connect the runtime to [`TansuBroker::bootstrap`] themselves.
//!
//! The broker logs at `warn` whatever `RUST_LOG` the tests run with (tansu at `info` writes
//! thousands of lines a second); set `SLUICE_TANSU_LOG` (a `RUST_LOG` filter) to change that.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers as _, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tempfile::TempDir;

/// How long a broker may take from spawn to answering a metadata request.
pub const BROKER_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a single admin or metadata request made by this harness may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the producer of [`produce`] keeps retrying one record before it reports a failure
/// (`message.timeout.ms`), so a dead broker fails a test instead of hanging it.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Lines of the broker's log quoted in a panic message.
const LOG_TAIL_LINES: usize = 40;

/// The environment variable holding the broker's log filter, and its default.
const LOG_FILTER_VAR: &str = "SLUICE_TANSU_LOG";
const DEFAULT_LOG_FILTER: &str = "warn";

/// The file name of a persistent broker's SQLite database inside its storage directory.
const SQLITE_FILE: &str = "tansu.db";

/// Where a broker keeps its records and group state.
#[derive(Debug, Clone)]
enum Storage {
    /// `memory://tansu/`: gone when the process exits; see [`TansuBroker::start_in_memory`].
    Memory,
    /// `sqlite://tansu.db` inside this directory: survives a restart.
    Sqlite(PathBuf),
}

/// A tansu broker (Kafka wire protocol) running as a child process on `127.0.0.1`.
///
/// Start one per test with [`TansuBroker::start`] (SQLite in a temporary directory) or
/// [`TansuBroker::start_persistent`] (SQLite in a directory the test chooses, so a second broker
/// can take over the data). Both keep their data across [`TansuBroker::restart`].
/// The broker's stdout and stderr go to a log file in a temporary directory
/// ([`TansuBroker::log_path`]); its tail is quoted when the broker fails to start.
/// Dropping the value kills the process by its PID.
///
/// Group behaviour of tansu 0.6.0 that tests must plan for:
/// - a member that closes its consumer (LeaveGroup) hands its partitions to the others in
///   well under a second, and a member that joins gets its share within about 3 seconds;
/// - a member that dies without leaving is dropped after its session timeout, but the
///   survivors' rejoin brings back their *old* assignment: the dead member's partitions stay
///   unassigned until another member joins the group (which then splits all partitions).
#[derive(Debug)]
pub struct TansuBroker {
    binary: PathBuf,
    port: u16,
    storage: Storage,
    /// Holds the log file and is the broker's working directory; removed on drop.
    workdir: TempDir,
    child: Option<Child>,
}

impl TansuBroker {
    /// Starts a broker on a free loopback port, storing into an SQLite database in its own
    /// temporary directory (deleted on drop), and waits until it answers a metadata request.
    /// [`TansuBroker::restart`] keeps the data.
    ///
    /// SQLite rather than tansu's `memory://` engine because the memory engine cannot serve a
    /// fetch that starts inside a stored record batch (see [`TansuBroker::start_in_memory`]),
    /// which is exactly what a consumer group resuming from a committed offset does.
    ///
    /// Panics if `tansu` is not installed (run `make setup`) or if the broker is not ready within
    /// [`BROKER_READY_TIMEOUT`].
    pub fn start() -> TansuBroker {
        TansuBroker::launch(None)
    }

    /// Starts a broker with tansu's `memory://` storage, lost when the process stops.
    ///
    /// Only for tests that read every partition from offset 0: tansu 0.6.0's memory engine
    /// returns only record batches whose *base* offset is at or after the fetch offset, so a
    /// consumer resuming at an offset inside a batch (a committed offset, say) receives nothing
    /// until a new batch is written, then skips the rest of the old batch and may receive the
    /// new batch several times. [`TansuBroker::start`] has no such problem.
    pub fn start_in_memory() -> TansuBroker {
        TansuBroker::launch(Some(Storage::Memory))
    }

    /// Starts a broker whose records, topics and committed offsets live in an SQLite database
    /// in `dir` (created if missing), so that a new broker started on the same `dir` finds them
    /// again. Only one broker may use a `dir` at a time.
    pub fn start_persistent(dir: &Path) -> TansuBroker {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create broker storage dir {}: {e}", dir.display()));
        let dir = dir.canonicalize().unwrap_or_else(|e| panic!("resolve {}: {e}", dir.display()));
        TansuBroker::launch(Some(Storage::Sqlite(dir)))
    }

    /// Starts a broker with `storage`, by default SQLite in its own temporary directory.
    fn launch(storage: Option<Storage>) -> TansuBroker {
        let workdir = tempfile::Builder::new().prefix("sluice-tansu-").tempdir().expect("broker temp dir");
        let storage = storage.unwrap_or_else(|| Storage::Sqlite(workdir.path().to_path_buf()));
        let mut broker = TansuBroker { binary: tansu_binary(), port: free_port(), storage, workdir, child: None };
        broker.spawn();
        broker
    }

    /// The address clients bootstrap from: `127.0.0.1:PORT`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The loopback port the broker listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The file receiving the broker's stdout and stderr, appended to across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.workdir.path().join("broker.log")
    }

    /// The PID of the running broker process, or `None` while stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Creates `name` with `partitions` partitions through `tansu topic create` and waits until
    /// the broker's metadata lists all of them.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        let output = self
            .command(self.workdir.path())
            .args(["topic", "create", "--broker", &self.url(), "--partitions", &partitions.to_string(), name])
            .output()
            .unwrap_or_else(|e| panic!("run {} topic create: {e}", self.binary.display()));
        assert!(
            output.status.success(),
            "tansu topic create {name} ({partitions} partitions) failed with {}:\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            let seen = partition_count(&self.bootstrap(), name).unwrap_or(0);
            if seen == partitions {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "topic {name} shows {seen} of {partitions} partitions after {REQUEST_TIMEOUT:?}\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the broker process (SIGKILL, by PID) and waits for it to exit: from the clients'
    /// side, the broker crashed. Does nothing if it is already stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The child may have exited on its own; either way `wait` reaps it.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the broker if it runs, then starts it again on the same port with the same storage
    /// and waits until it is ready. The restarted broker keeps its topics, records and committed
    /// offsets, except after [`TansuBroker::start_in_memory`], where it comes back empty.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// The last lines of the broker's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
        format!("--- last lines of {} ---\n{tail}", self.log_path().display())
    }

    fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// A `tansu` command with the harness's log settings, run in `cwd` (tansu reads `.env` and
    /// resolves SQLite paths there).
    fn command(&self, cwd: &Path) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .current_dir(cwd)
            .env("RUST_LOG", std::env::var(LOG_FILTER_VAR).unwrap_or_else(|_| DEFAULT_LOG_FILTER.into()))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        command
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "broker on port {} already runs", self.port);
        let mut log = OpenOptions::new().create(true).append(true).open(self.log_path()).expect("open broker log");
        writeln!(log, "=== sluice harness: starting tansu on {} ({:?}) ===", self.url(), self.storage)
            .expect("write broker log");
        let (storage_url, cwd) = match &self.storage {
            Storage::Memory => ("memory://tansu/".to_string(), self.workdir.path().to_path_buf()),
            // tansu resolves `sqlite://NAME` against its working directory.
            Storage::Sqlite(dir) => (format!("sqlite://{SQLITE_FILE}"), dir.clone()),
        };
        let child = self
            .command(&cwd)
            .args(["broker", "--listener-url", &self.url(), "--advertised-listener-url", &self.url()])
            .args(["--storage-engine", &storage_url])
            .stdout(log.try_clone().expect("clone broker log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {} broker: {e}", self.binary.display()));
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits until the port accepts connections and an rdkafka client gets metadata listing a
    /// broker, or panics with the log tail.
    fn wait_ready(&mut self) {
        let started = Instant::now();
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().expect("poll broker process")) {
                self.child = None;
                panic!("tansu broker on port {} exited with {status} while starting\n{}", self.port, self.log_tail());
            }
            // Probe with a plain TCP connect first so the client does not log refused connections.
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                match metadata_broker_count(&self.bootstrap()) {
                    Ok(n) if n > 0 => return,
                    Ok(_) | Err(_) => {}
                }
            }
            if started.elapsed() > BROKER_READY_TIMEOUT {
                self.stop();
                panic!(
                    "tansu broker on port {} not ready after {BROKER_READY_TIMEOUT:?}\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TansuBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `tansu` executable: the first one on `PATH`, else `$CARGO_HOME/bin` or `~/.cargo/bin`.
fn tansu_binary() -> PathBuf {
    let path_dirs = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default();
    let cargo_bins = [
        std::env::var_os("CARGO_HOME").map(|h| PathBuf::from(h).join("bin")),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo").join("bin")),
    ];
    path_dirs
        .into_iter()
        .chain(cargo_bins.into_iter().flatten())
        .map(|dir| dir.join("tansu"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the `tansu` Kafka broker is not installed (looked on PATH and in ~/.cargo/bin): \
                 run `make setup` to install it"
            )
        })
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("find a free loopback port").port()
}

/// A client configuration for `bootstrap` with the settings every harness client shares:
/// IPv4 loopback, bounded socket timeouts. Tests may extend it for their own clients.
pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("socket.timeout.ms", REQUEST_TIMEOUT.as_millis().to_string());
    config
}

/// How many brokers a metadata request to `bootstrap` lists.
fn metadata_broker_count(bootstrap: &str) -> Result<usize, KafkaError> {
    let client: BaseConsumer = client_config(bootstrap).create()?;
    Ok(client.fetch_metadata(None, Duration::from_secs(2))?.brokers().len())
}

/// The number of partitions of `topic`, or an error if the broker does not know it.
pub fn partition_count(bootstrap: &str, topic: &str) -> Result<i32, KafkaError> {
    let client: BaseConsumer = client_config(bootstrap).create()?;
    let metadata = client.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
    let topic_metadata = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition))?;
    if let Some(error) = topic_metadata.error() {
        return Err(KafkaError::MetadataFetch(error.into()));
    }
    Ok(topic_metadata.partitions().len() as i32)
}

/// One record to write with [`produce`]: `(partition, key, value, headers)`.
pub type ProduceRecord<'a> = (i32, Option<&'a [u8]>, &'a [u8], &'a [(&'a str, &'a [u8])]);

/// Writes `records` to `topic` in order with an idempotent producer and waits for every
/// delivery report. Returns the `(partition, offset)` each record was written at, in input order.
///
/// Panics on the first failed delivery (a record is retried for up to [`DELIVERY_TIMEOUT`]).
pub async fn produce(bootstrap: &str, topic: &str, records: &[ProduceRecord<'_>]) -> Vec<(i32, i64)> {
    let producer: FutureProducer = client_config(bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", DELIVERY_TIMEOUT.as_millis().to_string())
        .create()
        .expect("create producer");
    let mut pending: std::collections::VecDeque<(usize, DeliveryFuture)> = Default::default();
    let mut delivered = Vec::with_capacity(records.len());
    for (index, &(partition, key, value, headers)) in records.iter().enumerate() {
        let owned_headers =
            headers.iter().fold(OwnedHeaders::new(), |h, &(key, value)| h.insert(Header { key, value: Some(value) }));
        let mut record =
            FutureRecord::<[u8], [u8]>::to(topic).partition(partition).payload(value).headers(owned_headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        loop {
            match producer.send_result(record) {
                Ok(future) => {
                    pending.push_back((index, future));
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    // Make room by waiting for the oldest record in flight.
                    record = returned;
                    let (oldest, future) = pending.pop_front().expect("queue full with nothing in flight");
                    delivered.push(await_delivery(topic, oldest, future).await);
                }
                Err((error, _)) => panic!("enqueue record {index} for {topic}: {error}"),
            }
        }
    }
    for (index, future) in pending {
        delivered.push(await_delivery(topic, index, future).await);
    }
    delivered
}

async fn await_delivery(topic: &str, index: usize, future: DeliveryFuture) -> (i32, i64) {
    match future.await {
        Ok(Ok(delivery)) => (delivery.partition, delivery.offset),
        Ok(Err((error, _))) => panic!("deliver record {index} to {topic}: {error}"),
        Err(_) => panic!("producer dropped record {index} for {topic} without a delivery report"),
    }
}

/// A record read back by [`consume_all`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConsumedRecord {
    /// The partition it was read from.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
    /// Its key, if any.
    pub key: Option<Vec<u8>>,
    /// Its value, if any (`None` for a tombstone).
    pub value: Option<Vec<u8>>,
    /// Its headers in order; a header without a value has an empty one.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl ConsumedRecord {
    /// The key as UTF-8 text (empty if there is none), for assertions.
    pub fn key_text(&self) -> String {
        String::from_utf8(self.key.clone().unwrap_or_default()).expect("UTF-8 key")
    }

    /// The value as UTF-8 text (empty if there is none), for assertions.
    pub fn value_text(&self) -> String {
        String::from_utf8(self.value.clone().unwrap_or_default()).expect("UTF-8 value")
    }

    /// The value of the first header named `key`.
    pub fn header(&self, key: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_slice())
    }

    /// Copies what a test needs out of an rdkafka message.
    pub fn from_message(message: &impl rdkafka::Message) -> ConsumedRecord {
        ConsumedRecord {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers: message
                .headers()
                .map(|headers| {
                    headers.iter().map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec())).collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// Reads `topic` from the beginning of every partition (explicit assignment, no group, nothing
/// committed) until `expected` records arrived or `timeout` passed, and returns what was read in
/// arrival order. Callers assert on the count: fewer than `expected` means the timeout passed.
pub async fn consume_all(bootstrap: &str, topic: &str, expected: usize, timeout: Duration) -> Vec<ConsumedRecord> {
    consume_until(bootstrap, topic, timeout, |records| records.len() >= expected).await
}

/// Reads every partition of `topic` from its beginning until `done` holds of the records read
/// (asked after each one), or `timeout` passes; returns the records read, in the order read.
pub async fn consume_until(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
    mut done: impl FnMut(&[ConsumedRecord]) -> bool,
) -> Vec<ConsumedRecord> {
    let partitions = partition_count(bootstrap, topic).unwrap_or_else(|e| panic!("metadata of {topic}: {e}"));
    let consumer: StreamConsumer = client_config(bootstrap)
        .set("group.id", format!("sluice-tests-reader-{}", unique_suffix()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()
        .expect("create consumer");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(topic, partition, Offset::Beginning).expect("assignment");
    }
    consumer.assign(&assignment).expect("assign partitions");
    let deadline = tokio::time::Instant::now() + timeout;
    let mut records = Vec::new();
    while !done(&records) {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(message)) => records.push(ConsumedRecord::from_message(&message)),
            // Transient errors (a broker restarting, end of partition) do not end the read.
            Ok(Err(_)) => {}
            Err(_) => break,
        }
    }
    records
}

/// The offsets `group` has committed on `topic`, by partition; partitions without a commit are
/// left out. The values are the next offsets to read (last processed + 1).
pub async fn committed_offsets(bootstrap: &str, group: &str, topic: &str) -> BTreeMap<i32, i64> {
    let (bootstrap, group, topic) = (bootstrap.to_string(), group.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let partitions = partition_count(&bootstrap, &topic).unwrap_or_else(|e| panic!("metadata of {topic}: {e}"));
        let consumer: BaseConsumer = client_config(&bootstrap)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("create consumer");
        let mut query = TopicPartitionList::new();
        for partition in 0..partitions {
            query.add_partition(&topic, partition);
        }
        let committed = consumer
            .committed_offsets(query, REQUEST_TIMEOUT)
            .unwrap_or_else(|e| panic!("committed offsets of group {group} on {topic}: {e}"));
        committed
            .elements_for_topic(&topic)
            .iter()
            .filter_map(|element| match element.offset() {
                Offset::Offset(offset) => Some((element.partition(), offset)),
                _ => None,
            })
            .collect()
    })
    .await
    .expect("committed offsets task")
}

/// A suffix that makes group ids unique within and across test processes.
pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A broker a test runs its pipelines on: tansu ([`TansuBroker`]) or librdkafka's mock cluster
/// ([`MockBroker`]).
pub trait TestBroker {
    /// The address clients bootstrap from.
    fn bootstrap(&self) -> String;
    /// Creates topic `name` with `partitions` partitions.
    fn create_topic(&self, name: &str, partitions: i32);
}

impl TestBroker for TansuBroker {
    fn bootstrap(&self) -> String {
        TansuBroker::bootstrap(self)
    }
    fn create_topic(&self, name: &str, partitions: i32) {
        TansuBroker::create_topic(self, name, partitions)
    }
}

impl TestBroker for MockBroker {
    fn bootstrap(&self) -> String {
        MockBroker::bootstrap(self)
    }
    fn create_topic(&self, name: &str, partitions: i32) {
        MockBroker::create_topic(self, name, partitions)
    }
}

/// What [`MockBroker`]'s thread does to the cluster for a caller: create a topic, slow a
/// broker down, ...; its error as text.
type ClusterCommand = Box<
    dyn FnOnce(&rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>) -> Result<(), String>
        + Send,
>;

/// A [`ClusterCommand`] with where to answer.
type ClusterRequest = (ClusterCommand, std::sync::mpsc::Sender<Result<(), String>>);

/// librdkafka's mock cluster, in this process, listening on loopback TCP so that a runtime in
/// another process can use it (and be killed while the cluster lives on).
///
/// Unlike tansu 0.6.0, it implements the whole transaction protocol (EndTxn included), so an
/// exactly-once pipeline commits on it. It does not filter aborted transactions, though: a
/// `read_committed` reader sees the records of aborted and open transactions too
/// (docs/delivery.md says what the tests verify on it).
pub struct MockBroker {
    bootstrap: String,
    /// Commands for the cluster's thread, each with where to answer; `None` stops the thread.
    requests: std::sync::mpsc::Sender<Option<ClusterRequest>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MockBroker {
    /// Starts a one-broker mock cluster on a thread of its own (its handle cannot move between
    /// threads).
    pub fn start() -> MockBroker {
        MockBroker::start_with_brokers(1)
    }

    /// Starts a mock cluster of `brokers` brokers, numbered from 1.
    pub fn start_with_brokers(brokers: i32) -> MockBroker {
        let (requests, incoming) = std::sync::mpsc::channel::<Option<ClusterRequest>>();
        let (ready, started) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let cluster = rdkafka::mocking::MockCluster::new(brokers).expect("mock cluster");
            ready.send(cluster.bootstrap_servers()).unwrap();
            for (command, reply) in incoming.iter().map_while(|request| request) {
                let _ = reply.send(command(&cluster));
            }
        });
        let bootstrap = started.recv().expect("the mock cluster started");
        MockBroker { bootstrap, requests, thread: Some(thread) }
    }

    /// The address clients bootstrap from.
    pub fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }

    /// Runs `command` on the cluster's thread; panics with what it failed to do.
    fn command(&self, what: &str, command: ClusterCommand) {
        let (reply, answer) = std::sync::mpsc::channel();
        self.requests.send(Some((command, reply))).expect("the mock cluster runs");
        answer.recv().expect("the mock cluster answers").unwrap_or_else(|e| panic!("{what}: {e}"));
    }

    /// Creates topic `name` with `partitions` partitions.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        let topic = name.to_owned();
        self.command(
            &format!("create topic {name}"),
            Box::new(move |cluster| cluster.create_topic(&topic, partitions, 1).map_err(|e| e.to_string())),
        );
    }

    /// Makes broker `broker` lead partition `partition` of `topic`.
    pub fn set_leader(&self, topic: &str, partition: i32, broker: i32) {
        let name = topic.to_owned();
        self.command(
            &format!("lead {topic}/{partition} from broker {broker}"),
            Box::new(move |cluster| {
                cluster.partition_leader(&name, partition, Some(broker)).map_err(|e| e.to_string())
            }),
        );
    }

    /// Makes broker `broker` the coordinator of consumer group `group`.
    pub fn set_group_coordinator(&self, group: &str, broker: i32) {
        let group = group.to_owned();
        self.command(
            &format!("coordinate group {group} from broker {broker}"),
            Box::new(move |cluster| {
                let coordinator = rdkafka::mocking::MockCoordinator::Group(group);
                cluster.coordinator(coordinator, broker).map_err(|e| e.to_string())
            }),
        );
    }

    /// Makes the next `count` requests of kind `api` fail with `error`, one each.
    pub fn fail_requests(
        &self,
        api: rdkafka::types::RDKafkaApiKey,
        error: rdkafka::types::RDKafkaRespErr,
        count: usize,
    ) {
        self.command(
            &format!("fail {count} {api:?} requests with {error:?}"),
            Box::new(move |cluster| {
                cluster.request_errors(api, &vec![error; count]);
                Ok(())
            }),
        );
    }

    /// Delays every answer of broker `broker` by `delay` (zero: no delay).
    pub fn set_round_trip_time(&self, broker: i32, delay: std::time::Duration) {
        self.command(
            &format!("delay broker {broker} by {delay:?}"),
            Box::new(move |cluster| cluster.broker_round_trip_time(broker, delay).map_err(|e| e.to_string())),
        );
    }
}

impl Drop for MockBroker {
    fn drop(&mut self) {
        let _ = self.requests.send(None);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
