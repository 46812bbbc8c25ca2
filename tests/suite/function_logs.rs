//! A pipeline's function log, read through `GET /v1/pipelines/{name}/logs` and `sluice logs`
//! from a `sluice serve` process on a real Kafka-protocol broker (tansu): the function's own
//! lines (the `log` import, stdout, stderr) and why records failed, filtered by level, time
//! and count, followed as they come, and bounded.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use sluice::api::{LogEntry, LogLevel, LogList, LogSource, LogsQuery};
use sluice::pipeline::function_log::FUNCTION_LOG_CAPACITY;
use sluice_tests::hostile::HostilePipeline;
use sluice_tests::process::sluice_binary;

/// How long a test waits for an entry before it fails.
const WAIT: Duration = Duration::from_secs(90);

/// The hostile guest's pipeline, with the function log's reads.
struct World(HostilePipeline);

impl std::ops::Deref for World {
    type Target = HostilePipeline;
    fn deref(&self) -> &HostilePipeline {
        &self.0
    }
}

impl World {
    async fn start() -> World {
        World(HostilePipeline::start("logs", None).await)
    }

    /// Reads the pipeline's log with `query` until `check` holds, returning it.
    async fn logs_until(&self, query: LogsQuery, what: &str, check: impl Fn(&LogList) -> bool) -> LogList {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (client, name, query) = (self.client(), self.name.clone(), query.clone());
            let list = tokio::task::spawn_blocking(move || client.logs(&name, &query)).await.unwrap().expect("logs");
            if check(&list) {
                return list;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}; the log: {list:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The entry whose message contains `text`.
fn find<'a>(list: &'a LogList, text: &str) -> Option<&'a LogEntry> {
    list.entries.iter().find(|e| e.message.contains(text))
}

/// Runs `sluice` with `args` against the API at `url`; returns stdout, or panics with stderr.
fn cli(url: &str, args: &[&str]) -> String {
    let output = Command::new(sluice_binary()).args(args).env("SLUICE_URL", url).output().unwrap();
    assert!(output.status.success(), "sluice {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_functions_lines_and_its_records_failures_are_in_its_pipelines_log_at_their_levels() {
    let world = World::start().await;
    let values = ["log info hello from the log import", "print", "log debug a detail", "fail", "panic", "plain"];
    world.produce(&values.map(String::from)).await;

    let all = world
        .logs_until(LogsQuery::default(), "every line and both failures", |list| {
            let lines = ["hello from the log import", "hello from stdout", "hello from stderr", "a detail"];
            let failed =
                |offset| list.entries.iter().any(|e| e.source == LogSource::Failure && e.offset == Some(offset));
            lines.iter().all(|text| find(list, text).is_some()) && failed(3) && failed(4)
        })
        .await;
    let said = find(&all, "hello from the log import").unwrap();
    assert_eq!(
        (said.level, said.source, said.partition, said.offset, said.revision),
        (LogLevel::Info, LogSource::Log, Some(0), None, Some(1))
    );
    assert_eq!(said.topic.as_deref(), Some(world.input.as_str()));
    assert_eq!(
        (find(&all, "hello from stdout").unwrap().source, find(&all, "hello from stdout").unwrap().level),
        (LogSource::Stdout, LogLevel::Info)
    );
    assert_eq!(
        (find(&all, "hello from stderr").unwrap().source, find(&all, "hello from stderr").unwrap().level),
        (LogSource::Stderr, LogLevel::Warn)
    );
    assert_eq!(find(&all, "a detail").unwrap().level, LogLevel::Debug);

    // A poison record's dead letter: its offset, why it failed, and where it went.
    let rejected = find(&all, "rejected record").unwrap();
    assert_eq!((rejected.level, rejected.source, rejected.offset), (LogLevel::Warn, LogSource::Failure, Some(3)));
    assert_eq!(
        rejected.message,
        format!("record-error: rejected record at offset 3 (1 attempt); dead-lettered to {}.dlq", world.name)
    );
    let trapped = all.entries.iter().find(|e| e.source == LogSource::Failure && e.offset == Some(4)).unwrap();
    assert!(trapped.message.starts_with("trap: "), "{}", trapped.message);
    assert!(trapped.message.contains("poison record at offset 4"), "the panic's message: {}", trapped.message);
    assert_eq!(all.node, world.client().cluster().unwrap().node, "the answering node's log");
    assert_eq!(all.capacity, FUNCTION_LOG_CAPACITY);
    assert!(all.entries.windows(2).all(|w| w[0].seq < w[1].seq && w[0].time_ms <= w[1].time_ms), "oldest first");

    // At warn and above: stderr and the failures only.
    let warn = LogsQuery { level: Some("warn".into()), ..LogsQuery::default() };
    let (client, name) = (world.client(), world.name.clone());
    let list = tokio::task::spawn_blocking(move || client.logs(&name, &warn)).await.unwrap().unwrap();
    assert!(list.entries.iter().all(|e| e.level >= LogLevel::Warn), "{list:#?}");
    assert!(find(&list, "hello from stderr").is_some() && find(&list, "rejected record").is_some());
    assert!(find(&list, "hello from the log import").is_none() && find(&list, "a detail").is_none());

    // A time in the future leaves nothing; the last two are the latest two.
    let url = world.serve.url().to_string();
    let name = world.name.clone();
    let later = cli(&url, &["logs", &name, "--since", "2999-01-01T00:00:00Z", "--json"]);
    assert_eq!(serde_json::from_str::<LogList>(&later).unwrap().entries, []);
    let recent = cli(&url, &["logs", &name, "--since", "10m", "-n", "2", "--json"]);
    let recent: LogList = serde_json::from_str(&recent).unwrap();
    assert_eq!(recent.entries, all.entries[all.entries.len() - 2..]);

    // `sluice logs` as text: one line per entry, with its time, level, place and revision.
    let text = cli(&url, &["logs", &name, "--level", "warn"]);
    let line = text.lines().find(|l| l.contains("rejected record")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.starts_with(&rejected.time), "{line}");
    assert!(line.contains(&format!(" WARN  {}/0@3 r1 failure: record-error: rejected record", world.input)), "{line}");
    assert!(!text.contains("hello from the log import"), "{text}");

    // An unknown pipeline is the API's 404; a level that is none is a 400 naming it.
    let client = world.client();
    let (missing, bad) = tokio::task::spawn_blocking(move || {
        let missing = client.logs("no-such-pipeline", &LogsQuery::default()).unwrap_err();
        let bad = client.logs(&name, &LogsQuery { level: Some("loud".into()), ..LogsQuery::default() }).unwrap_err();
        (missing, bad)
    })
    .await
    .unwrap();
    let missing = missing.api().expect("an API error");
    assert_eq!((missing.status, missing.code.as_str()), (404, "pipeline_not_found"));
    let bad = bad.api().expect("an API error");
    assert_eq!((bad.status, bad.code.as_str()), (400, "bad_request"));
    assert!(bad.message.contains("level") && bad.message.contains("loud"), "{}", bad.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_logs_follow_prints_a_line_the_function_writes_after_it_started() {
    let world = World::start().await;
    world.produce(&["log info before following".to_string()]).await;
    world.logs_until(LogsQuery::default(), "the first line", |list| find(list, "before following").is_some()).await;

    let mut follower = Command::new(sluice_binary())
        .args(["logs", &world.name, "--follow", "--json", "--level", "info"])
        .env("SLUICE_URL", world.serve.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines, received) = mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let next_entry = |received: &mpsc::Receiver<String>| -> LogEntry {
        let line = received.recv_timeout(WAIT).expect("a line from sluice logs --follow");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    };
    // The kept entries first, then what comes.
    assert!(next_entry(&received).message.contains("before following"));
    world.produce(&["log debug below the level".to_string(), "log warn written while following".to_string()]).await;
    let entry = next_entry(&received);
    assert_eq!((entry.level, entry.source), (LogLevel::Warn, LogSource::Log));
    assert_eq!(entry.message, "written while following", "the debug line is filtered out");
    follower.kill().unwrap();
    follower.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelines_log_keeps_its_latest_entries_and_counts_the_older_ones_it_dropped() {
    let world = World::start().await;
    let over = 150;
    let values: Vec<String> = (0..FUNCTION_LOG_CAPACITY + over).map(|n| format!("log info line {n}")).collect();
    world.produce(&values).await;
    let last = format!("line {}", FUNCTION_LOG_CAPACITY + over - 1);
    let list = world.logs_until(LogsQuery::default(), "the last line", |list| find(list, &last).is_some()).await;
    assert_eq!(list.entries.len(), FUNCTION_LOG_CAPACITY);
    assert_eq!(list.dropped, over as u64);
    assert_eq!(list.entries[0].message, format!("line {over}"), "the oldest kept");
    assert_eq!(list.entries[0].seq, over as u64 + 1);

    let query = LogsQuery { limit: Some(3), ..LogsQuery::default() };
    let (client, name) = (world.client(), world.name.clone());
    let latest = tokio::task::spawn_blocking(move || client.logs(&name, &query)).await.unwrap().unwrap();
    let messages: Vec<&str> = latest.entries.iter().map(|e| e.message.as_str()).collect();
    let n = FUNCTION_LOG_CAPACITY + over;
    assert_eq!(messages, [format!("line {}", n - 3), format!("line {}", n - 2), format!("line {}", n - 1)]);
}
