//! `sluice serve`'s `[engine]` table reaches the engine: a memory limit set there stops a
//! memory-hungry guest with that limit named, end to end through a real broker, and a value
//! out of its range stops the runtime at start with the key named.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice_tests::guests;
use sluice_tests::kafka::{ConsumedRecord, TansuBroker, consume_all, produce, unique_suffix};
use sluice_tests::process::ServeProcess;

/// How long a test waits for outputs, or for a refused runtime to exit.
const WAIT: Duration = Duration::from_secs(90);

/// Writes a config with `engine` as its `[engine]` table and one pipeline of the hostile guest
/// from `input` to `output`, its dead letters to `dead_letters`.
fn config(dir: &Path, brokers: &str, engine: &str, topics: [&str; 3]) -> PathBuf {
    let [input, output, dead_letters] = topics;
    let path = dir.join("sluice.toml");
    let text = format!(
        r#"data_dir = "{data}"

[kafka]
brokers = "{brokers}"

[engine]
{engine}

[[pipeline]]
name = "memory-{id}"
inputs = ["{input}"]
outputs = {{ default = "{output}" }}
module = "{module}"
processing = {{ dead_letter_topic = "{dead_letters}", batch_size = 10, linger_ms = 5 }}
"#,
        data = dir.join("data").display(),
        id = unique_suffix(),
        module = guests::component("hostile").display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_limit_from_the_engine_table_stops_a_memory_eater_naming_that_limit() {
    let broker = TansuBroker::start();
    let id = unique_suffix();
    let (input, output, dead_letters) = (format!("in-{id}"), format!("out-{id}"), format!("dlq-{id}"));
    for topic in [&input, &output, &dead_letters] {
        broker.create_topic(topic, 1);
    }
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &broker.bootstrap(), "max_memory_mib = 24", [&input, &output, &dead_letters]);
    let mut serve = ServeProcess::spawn(&["--config".as_ref(), config.as_ref()], dir.path().join("serve.log"));

    let records: Vec<_> = ["a", "grow", "b"].iter().map(|v| (0, None, v.as_bytes(), &[][..])).collect();
    let written = produce(&broker.bootstrap(), &input, &records).await;

    let passed: Vec<String> =
        consume_all(&broker.bootstrap(), &output, 2, WAIT).await.iter().map(ConsumedRecord::value_text).collect();
    assert_eq!(passed, ["a", "b"]);
    let dead = consume_all(&broker.bootstrap(), &dead_letters, 1, WAIT).await;
    let header = |name: &str| String::from_utf8_lossy(dead[0].header(name).unwrap_or_default()).into_owned();
    assert_eq!(dead[0].value_text(), "grow");
    assert_eq!(header("sluice.source.offset"), written[1].1.to_string());
    assert_eq!(header("sluice.error.kind"), "memory-limit");
    let limit = (24 * 1024 * 1024).to_string();
    assert!(
        header("sluice.error.message").contains(&format!("over the {limit} byte limit")),
        "the message names the configured limit, not the default: {}",
        header("sluice.error.message")
    );
    serve.terminate();
}

#[test]
fn engine_limits_out_of_range_stop_sluice_serve_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (table, named) in [
        ("max_memory_mib = 0", "[engine] max_memory_mib = 0 is out of range: use a whole number from 1 to 4096"),
        ("call_timeout_ms = 5", "[engine] call_timeout_ms = 5 is out of range: use a whole number from 10 to 3600000"),
        ("max_instances = 4001", "[engine] max_instances = 4001 is out of range: use a whole number from 1 to 4000"),
    ] {
        let config = config(dir.path(), "127.0.0.1:9", table, ["in", "out", "dlq"]);
        let log = dir.path().join(format!("{}.log", table.split(' ').next().unwrap()));
        let mut serve = ServeProcess::spawn_unready(&["--config".as_ref(), config.as_ref()], log);
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = serve.try_wait() {
                break status;
            }
            assert!(Instant::now() < deadline, "sluice serve did not refuse {table}:\n{}", serve.log());
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(!status.success(), "{table}: exited with {status}");
        assert!(serve.log().contains(named), "{table}: the error does not name the key and range:\n{}", serve.log());
        assert!(!dir.path().join("data").exists(), "{table}: nothing is opened before the config is checked");
    }
}
