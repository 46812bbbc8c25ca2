//! The chaos suite, run by `make chaos` (not part of `make test`): 100,000 records with unique
//! ids and per-key sequence numbers go through `sluice serve` pipelines on a tansu broker
//! while the harness kills the runtime (`kill -9`, at least 8 times), kills and restarts the
//! broker, restarts the runtime with SIGTERM, and freezes Redis (SIGSTOP, then SIGCONT)
//! under a stateful function. Each scenario has its own topics, pipeline and consumer group.
//! The checker ([`sluice_tests::chaos`], which defines every count) then reads the topics
//! and prints one row per scenario; the run fails if a record was lost, a duplicate was not
//! a replay of an uncommitted batch, a SIGTERM restart duplicated anything, a key's records
//! came out of order, or the pipeline never recovered from a fault.
//!
//! Set `SLUICE_CHAOS_SEED` to replay the same fault moments; the seed is printed. Runtime
//! logs are kept in `target/chaos/` for after the run.

mod load;
mod reader;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use load::Load;
use reader::{Read, Reader, end_offsets, read_all};
use serde_json::Value;
use sluice_tests::chaos::{self, Fault, Input, Output, Report, Row};
use sluice_tests::guests;
use sluice_tests::kafka::{TansuBroker, committed_offsets};
use sluice_tests::process::{ServeProcess, sluice_binary};
use sluice_tests::servers::RedisServer;

/// Records over the whole suite.
const TOTAL_RECORDS: u64 = 100_000;
/// Records per second written to a scenario's input. tansu 0.6 with SQLite storage keeps up
/// with this next to the pipeline's own output on a busy 2-core machine; much faster and the
/// broker, not the runtime, becomes what the suite measures.
const RATE: u64 = 1_000;
/// Keys the records are spread over.
const KEYS: u64 = 32;
/// Partitions of every input and output topic.
const PARTITIONS: i32 = 3;
/// Records a batch holds at most (the pipeline's `batch_size`).
const BATCH_SIZE: usize = 100;
/// How long after the pipeline is seen processing (at the start, or after the previous fault)
/// the next fault hits: a random moment in this range.
const FAULT_DELAY: std::ops::Range<Duration> = Duration::from_millis(300)..Duration::from_millis(3_000);
/// The share of a scenario's records written at full rate before the load slows to a trickle
/// until the last fault has been injected (so that records keep arriving after every fault).
const FULL_RATE_SHARE: f64 = 0.9;
/// How long the broker stays dead before it is restarted.
const BROKER_DOWN: Duration = Duration::from_secs(2);
/// How long Redis stays frozen.
const REDIS_FROZEN: Duration = Duration::from_secs(3);
/// How long the pipeline may take to create an output after a fault ended before the suite
/// gives up on it (and injects no more faults in that scenario).
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the pipeline may take, once every record is written, to commit the whole input.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
/// How long reading a topic to its end may take.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// What the harness does to a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultKind {
    /// `kill -9` of the runtime, restarted at once.
    KillRuntime,
    /// SIGTERM to the runtime, restarted once it has exited.
    TerminateRuntime,
    /// `kill -9` of the broker, restarted after [`BROKER_DOWN`].
    KillBroker,
    /// SIGSTOP to Redis, SIGCONT after [`REDIS_FROZEN`].
    FreezeRedis,
}

/// One scenario.
struct Scenario {
    name: &'static str,
    fault: FaultKind,
    times: usize,
    records: u64,
    /// The guest crate.
    guest: &'static str,
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        name: "runtime kill -9",
        fault: FaultKind::KillRuntime,
        times: 8,
        records: 40_000,
        guest: "passthrough",
    },
    Scenario {
        name: "runtime SIGTERM restart",
        fault: FaultKind::TerminateRuntime,
        times: 2,
        records: 20_000,
        guest: "passthrough",
    },
    Scenario { name: "broker kill -9", fault: FaultKind::KillBroker, times: 1, records: 20_000, guest: "passthrough" },
    Scenario {
        name: "Redis stop/continue",
        fault: FaultKind::FreezeRedis,
        times: 1,
        records: 20_000,
        guest: "counter",
    },
];

impl Scenario {
    fn describe(&self) -> String {
        let what = match self.fault {
            FaultKind::KillRuntime => "runtime kill -9",
            FaultKind::TerminateRuntime => "runtime SIGTERM",
            FaultKind::KillBroker => "broker kill -9",
            FaultKind::FreezeRedis => "Redis SIGSTOP/CONT",
        };
        format!("{} x {what}", self.times)
    }

    /// A short name for topics and files.
    fn slug(&self) -> String {
        self.name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect()
    }
}

/// A small deterministic random generator (xorshift64*), seeded per run.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What every scenario shares.
struct Setting {
    broker: TansuBroker,
    redis: RedisServer,
    dir: PathBuf,
    rng: Rng,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis() as i64
}

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(run())
}

async fn run() -> ExitCode {
    let started = Instant::now();
    let seed = std::env::var("SLUICE_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| now_ms() as u64);
    assert_eq!(SCENARIOS.iter().map(|s| s.records).sum::<u64>(), TOTAL_RECORDS);
    sluice_binary();
    for scenario in &SCENARIOS {
        guests::component(scenario.guest);
    }
    let dir = guests::workspace_root().join("target/chaos");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create target/chaos");
    println!(
        "chaos: {TOTAL_RECORDS} records at {RATE}/s over {} scenarios, seed {seed} (SLUICE_CHAOS_SEED), logs in {}",
        SCENARIOS.len(),
        dir.display()
    );
    let mut setting = Setting { broker: TansuBroker::start(), redis: RedisServer::start(), dir, rng: Rng(seed.max(1)) };

    let mut rows = Vec::new();
    let mut problems = Vec::new();
    let mut first_id = 0;
    for scenario in &SCENARIOS {
        let scenario_started = Instant::now();
        println!("chaos: {} ({}, {} records)...", scenario.name, scenario.describe(), scenario.records);
        let (report, mut notes) = run_scenario(&mut setting, scenario, first_id).await;
        first_id += scenario.records;
        println!("chaos: {} done in {:.0} s", scenario.name, scenario_started.elapsed().as_secs_f64());
        problems.extend(verdict(scenario, &report));
        problems.append(&mut notes);
        rows.push(Row { scenario: scenario.name.into(), faults: scenario.describe(), report });
    }

    println!("\n{}", chaos::table(&rows));
    for row in &rows {
        let recoveries: Vec<String> = row
            .report
            .recoveries
            .iter()
            .map(|r| r.map_or("never".into(), |d| format!("{:.2}", d.as_secs_f64())))
            .collect();
        println!("{}: recovery per fault (s): {}", row.scenario, recoveries.join(", "));
    }
    println!("wall time {:.0} s", started.elapsed().as_secs_f64());
    if problems.is_empty() {
        println!("chaos: passed");
        ExitCode::SUCCESS
    } else {
        for problem in &problems {
            println!("chaos: {problem}");
        }
        println!("chaos: FAILED");
        ExitCode::FAILURE
    }
}

/// What in `report` breaks the delivery guarantee.
fn verdict(scenario: &Scenario, report: &Report) -> Vec<String> {
    let mut problems = Vec::new();
    let name = scenario.name;
    if report.lost > 0 {
        problems.push(format!("{name}: {} records lost, e.g. ids {:?}", report.lost, report.lost_sample));
    }
    if report.duplicated_outside_uncommitted > 0 {
        problems
            .push(format!("{name}: {} duplicates outside uncommitted batches", report.duplicated_outside_uncommitted));
    }
    if scenario.fault == FaultKind::TerminateRuntime && report.duplicated > 0 {
        problems.push(format!("{name}: {} duplicates after a SIGTERM restart", report.duplicated));
    }
    if report.out_of_order > 0 {
        problems.push(format!("{name}: {} outputs out of order", report.out_of_order));
    }
    if report.unrecovered() > 0 {
        problems.push(format!("{name}: no output after {} of its faults", report.unrecovered()));
    }
    problems
}

/// The topics of a scenario.
struct Topics {
    input: String,
    output: String,
    dead_letters: String,
}

/// Runs one scenario from `first_id`: its report, and notes on what went wrong along the way.
async fn run_scenario(setting: &mut Setting, scenario: &Scenario, first_id: u64) -> (Report, Vec<String>) {
    let mut notes = Vec::new();
    let slug = scenario.slug();
    let topics =
        Topics { input: format!("{slug}-in"), output: format!("{slug}-out"), dead_letters: format!("{slug}-dlq") };
    let broker = &setting.broker;
    broker.create_topic(&topics.input, PARTITIONS);
    broker.create_topic(&topics.output, PARTITIONS);
    broker.create_topic(&topics.dead_letters, 1);
    let bootstrap = broker.bootstrap();
    let cache = if scenario.guest == "counter" { setting.redis.url() } else { "memory://".to_string() };
    let config = serve_config(&setting.dir.join(&slug), &bootstrap, &slug, &topics, scenario.guest, &cache);
    let log = setting.dir.join(format!("{slug}.log"));
    let group = format!("sluice.{slug}");
    let mut runtime = Some(serve(&config, &log));

    let outputs = Reader::start(&bootstrap, &topics.output);
    let slow_after = (scenario.records as f64 * FULL_RATE_SHARE) as u64;
    let load = Load { first_id, count: scenario.records, keys: KEYS, partitions: PARTITIONS, rate: RATE, slow_after };
    let running = load::start(&bootstrap, &topics.input, load);

    let mut faults: Vec<Fault> = Vec::new();
    let mut running_since = now_ms();
    for i in 0..scenario.times {
        // Each fault hits a pipeline that is processing: after an output created since the
        // previous fault ended (or since the start), at a random moment shortly after.
        if !wait_for_output_after(&outputs, running_since, RECOVERY_TIMEOUT).await {
            notes.push(format!(
                "{}: no output within {RECOVERY_TIMEOUT:?} before fault {}; no more faults",
                scenario.name,
                i + 1
            ));
            break;
        }
        let delay = FAULT_DELAY.start + (FAULT_DELAY.end - FAULT_DELAY.start).mul_f64(setting.rng.unit());
        tokio::time::sleep(delay).await;
        let fault = match scenario.fault {
            FaultKind::KillRuntime => {
                let at_ms = now_ms();
                runtime.take().expect("the runtime runs").kill_9();
                let committed = committed_offsets(&bootstrap, &group, &topics.input).await;
                let ended_ms = now_ms();
                runtime = Some(serve(&config, &log));
                Fault { at_ms, ended_ms, committed }
            }
            FaultKind::TerminateRuntime => {
                let at_ms = now_ms();
                runtime.take().expect("the runtime runs").terminate();
                let committed = committed_offsets(&bootstrap, &group, &topics.input).await;
                let ended_ms = now_ms();
                runtime = Some(serve(&config, &log));
                Fault { at_ms, ended_ms, committed }
            }
            FaultKind::KillBroker => {
                // Read before the kill: the runtime may commit more before the broker dies,
                // so these may be a little behind (which only widens what counts as a replay).
                let committed = committed_offsets(&bootstrap, &group, &topics.input).await;
                let at_ms = now_ms();
                setting.broker.stop();
                tokio::time::sleep(BROKER_DOWN).await;
                setting.broker.restart();
                Fault { at_ms, ended_ms: now_ms(), committed }
            }
            FaultKind::FreezeRedis => {
                let committed = committed_offsets(&bootstrap, &group, &topics.input).await;
                let at_ms = now_ms();
                setting.redis.pause();
                tokio::time::sleep(REDIS_FROZEN).await;
                setting.redis.resume();
                Fault { at_ms, ended_ms: now_ms(), committed }
            }
        };
        running_since = fault.ended_ms;
        faults.push(fault);
    }
    running.release();

    match running.done.await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => notes.push(format!("{}: the load failed: {e}", scenario.name)),
        Err(e) => notes.push(format!("{}: the load task failed: {e}", scenario.name)),
    }
    let bootstrap = setting.broker.bootstrap();
    if let Err(e) = wait_for_commit(&bootstrap, &group, &topics.input).await {
        notes.push(format!("{}: {e}; runtime log: {}", scenario.name, log.display()));
    }
    if let Some(mut runtime) = runtime.take() {
        runtime.terminate();
    }
    if !outputs.catch_up(READ_TIMEOUT) {
        notes.push(format!("{}: the output topic was not read to its end", scenario.name));
    }
    let outputs = outputs.finish();
    let inputs = read_all(&bootstrap, &topics.input, READ_TIMEOUT).unwrap_or_else(|e| {
        notes.push(format!("{}: {e}", scenario.name));
        Vec::new()
    });
    let dead_letters = read_all(&bootstrap, &topics.dead_letters, READ_TIMEOUT).unwrap_or_else(|e| {
        notes.push(format!("{}: {e}", scenario.name));
        Vec::new()
    });
    let inputs: Vec<Input> = inputs.iter().map(parse_input).collect();
    let outputs: Vec<Output> = outputs.iter().map(parse_output).collect();
    let dead_letter_ids: Vec<u64> = dead_letters.iter().map(|r| parse_input(r).id).collect();
    let report = chaos::check(&inputs, &outputs, &dead_letter_ids, &faults);
    if report.input_duplicates > 0 {
        notes.push(format!(
            "{}: the load generator's producer wrote {} ids twice to the input (the broker did not deduplicate \
             its retries); the checker expects those twice on the output",
            scenario.name, report.input_duplicates
        ));
    }
    (report, notes)
}

/// Waits until the reader has seen an output created at or after `since_ms`.
async fn wait_for_output_after(outputs: &Reader, since_ms: i64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while outputs.latest_created_ms() < since_ms {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Waits until `group` has committed every record of `topic`.
async fn wait_for_commit(bootstrap: &str, group: &str, topic: &str) -> Result<(), String> {
    let ends = end_offsets(bootstrap, topic, PARTITIONS)?;
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let committed = committed_offsets(bootstrap, group, topic).await;
        if ends.iter().all(|(p, end)| committed.get(p).is_some_and(|c| c >= end)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "after {DRAIN_TIMEOUT:?} the pipeline had committed {committed:?} of the input's ends {ends:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `sluice serve --config <config>`, logging (appended) to `log`.
fn serve(config: &Path, log: &Path) -> ServeProcess {
    ServeProcess::spawn(&["--config".as_ref(), config.as_ref(), "--status-every".as_ref(), "5".as_ref()], log.into())
}

/// Writes the `sluice serve` config of a scenario into `dir` (its data directory is inside).
fn serve_config(dir: &Path, bootstrap: &str, name: &str, topics: &Topics, guest: &str, cache: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("create the scenario's directory");
    let path = dir.join("sluice.toml");
    let mut text = String::new();
    write!(
        text,
        r#"data_dir = "{data}"

[kafka]
brokers = "{bootstrap}"

[[pipeline]]
name = "{name}"
inputs = ["{input}"]
outputs = {{ default = "{output}" }}
module = "{module}"
cache = "{cache}"
processing = {{ dead_letter_topic = "{dlq}", batch_size = {BATCH_SIZE}, linger_ms = 5 }}
"#,
        data = dir.join("data").display(),
        input = topics.input,
        output = topics.output,
        module = guests::component(guest).display(),
        dlq = topics.dead_letters,
    )
    .unwrap();
    std::fs::write(&path, text).expect("write the serve config");
    path
}

/// The id and sequence number of a record's JSON value.
fn id_and_seq(read: &Read) -> (u64, u64, Value) {
    let value: Value = serde_json::from_str(&read.value)
        .unwrap_or_else(|e| panic!("partition {} offset {}: {e}: {:?}", read.partition, read.offset, read.value));
    let field = |name: &str| {
        value[name].as_u64().unwrap_or_else(|| panic!("offset {} has no {name}: {:?}", read.offset, read.value))
    };
    (field("id"), field("seq"), value)
}

fn parse_input(read: &Read) -> Input {
    let (id, seq, _) = id_and_seq(read);
    Input { partition: read.partition, offset: read.offset, key: read.key.clone(), id, seq }
}

fn parse_output(read: &Read) -> Output {
    let (id, seq, value) = id_and_seq(read);
    Output {
        partition: read.partition,
        offset: read.offset,
        created_ms: read.created_ms,
        key: read.key.clone(),
        id,
        seq,
        count: value["count"].as_i64(),
    }
}
