//! The `sluice` binary as an operator meets it: its log on stderr (`RUST_LOG`, text without
//! colour codes on a pipe, `--log-format json`), `--json` failures, `sluice version`,
//! `sluice completions`, and `sluice dev` answering what the README's walkthrough asks of it.

use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice::api::StartPosition;
use sluice::client::AdminClient;
use sluice_tests::process::sluice_binary;

const WAIT: Duration = Duration::from_secs(120);

/// A `sluice` command without any log or colour setting inherited from the test's environment.
fn sluice() -> Command {
    let mut command = Command::new(sluice_binary());
    for variable in ["RUST_LOG", "SLUICE_LOG", "SLUICE_LOG_FORMAT", "NO_COLOR", "SLUICE_URL", "SLUICE_TOKEN"] {
        command.env_remove(variable);
    }
    command
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `sluice dev` for `seconds` on a free port and its own data directory, run to its end.
fn dev_for(seconds: u64, configure: impl FnOnce(&mut Command)) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut command = sluice();
    command
        .args(["dev", "--rate", "200", "--seconds", &seconds.to_string()])
        .args(["--admin-listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(dir.path())
        .current_dir(sluice_tests::guests::workspace_root());
    configure(&mut command);
    let output = command.output().expect("sluice dev runs");
    assert!(output.status.success(), "sluice dev failed:\n{}", String::from_utf8_lossy(&output.stderr));
    output
}

/// A `sluice dev` left running; killed when dropped.
struct Dev {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Dev {
    fn start() -> Dev {
        let dir = tempfile::tempdir().unwrap();
        let listen = format!("127.0.0.1:{}", free_port());
        let child = sluice()
            .args(["dev", "--rate", "200", "--admin-listen", &listen])
            .arg("--data-dir")
            .arg(dir.path())
            .current_dir(sluice_tests::guests::workspace_root())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sluice dev starts");
        let dev = Dev { child, url: format!("http://{listen}"), _dir: dir };
        let client = AdminClient::new(&dev.url, None);
        let deadline = Instant::now() + WAIT;
        while !client.list_pipelines().is_ok_and(|pipelines| pipelines.iter().any(|p| p.name == "demo")) {
            assert!(Instant::now() < deadline, "sluice dev never served the demo pipeline");
            std::thread::sleep(Duration::from_millis(200));
        }
        dev
    }

    /// Runs a client command against this runtime.
    fn run(&self, args: &[&str]) -> Output {
        sluice().args(args).args(["--url", &self.url]).output().unwrap()
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_json_log_format_writes_one_object_per_line_with_stable_field_names() {
    let output = dev_for(3, |c| {
        c.args(["--log-format", "json"]);
    });
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}")))
        .collect();
    assert!(!lines.is_empty(), "the runtime logged nothing");
    for line in &lines {
        for field in ["timestamp", "level", "target", "message"] {
            assert!(line.get(field).is_some_and(Value::is_string), "no {field} in {line}");
        }
    }
    assert!(lines.iter().any(|l| l["pipeline"] == "demo"), "no line carries the pipeline field:\n{stderr}");
}

#[test]
fn the_log_format_is_also_read_from_sluice_log_format() {
    let output = dev_for(2, |c| {
        c.env("SLUICE_LOG_FORMAT", "json");
    });
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.lines().count() > 0 && stderr.lines().all(|l| l.starts_with('{')), "{stderr}");
}

#[test]
fn a_log_written_to_a_pipe_carries_no_colour_codes() {
    let output = dev_for(2, |_| {});
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains(" INFO "), "the runtime logged no info line:\n{stderr}");
    assert!(!stderr.contains('\u{1b}'), "escape codes in a piped log:\n{stderr:?}");
}

#[test]
fn rust_log_chooses_the_lines_and_sluice_log_overrides_it() {
    let quiet = dev_for(2, |c| {
        c.env("RUST_LOG", "warn");
    });
    let stderr = String::from_utf8(quiet.stderr).unwrap();
    assert!(!stderr.contains(" INFO "), "RUST_LOG=warn let info lines through:\n{stderr}");

    let both = dev_for(2, |c| {
        c.env("RUST_LOG", "warn").env("SLUICE_LOG", "info");
    });
    assert!(String::from_utf8(both.stderr).unwrap().contains(" INFO "), "SLUICE_LOG=info does not win");
}

#[test]
fn a_json_failure_is_one_object_on_stderr_with_the_apis_code_and_message() {
    let unreachable =
        sluice().args(["ls", "--json", "--url", &format!("http://127.0.0.1:{}", free_port())]).output().unwrap();
    assert!(!unreachable.status.success());
    assert!(unreachable.stdout.is_empty(), "nothing on stdout");
    let printed: Value = serde_json::from_slice(&unreachable.stderr).expect("stderr is one JSON object");
    assert_eq!(printed["error"]["code"], "unreachable", "{printed}");

    let dev = Dev::start();
    let missing = dev.run(&["pause", "no-such-pipeline", "--json"]);
    assert!(!missing.status.success());
    let printed: Value = serde_json::from_slice(&missing.stderr).expect("stderr is one JSON object");
    assert_eq!(printed["error"]["code"], "pipeline_not_found", "{printed}");
    assert_eq!(printed["error"]["status"], 404, "{printed}");
    assert!(printed["error"]["message"].as_str().unwrap().contains("no-such-pipeline"), "{printed}");
}

#[test]
fn offsets_are_reset_on_sluice_dev_as_the_readme_walkthrough_does() {
    let dev = Dev::start();
    let client = AdminClient::new(&dev.url, None);
    client.pause("demo").expect("pause");
    let reset = client.reset_offsets("demo", StartPosition::Earliest).expect("the reset succeeds on the mock cluster");
    assert!(!reset.is_empty() && reset.iter().all(|o| o.offset == 0), "{reset:?}");
    let resumed = dev.run(&["resume", "demo"]);
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
}

#[test]
fn sluice_version_names_the_runtime_the_wit_package_and_the_engine() {
    let output = sluice().arg("version").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let wit = std::fs::read_to_string(sluice_tests::guests::workspace_root().join("wit/sluice.wit")).unwrap();
    let package = wit.lines().find_map(|l| l.strip_prefix("package ")?.strip_suffix(';')).unwrap();
    assert!(text.starts_with(&format!("sluice {}\n", env!("CARGO_PKG_VERSION"))), "{text}");
    assert!(text.contains(&format!("WIT package {package}\n")), "{text}");
    assert!(text.contains("wasmtime 48."), "{text}");

    let json = sluice().args(["version", "--json"]).output().unwrap();
    let versions: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(versions["wit_package"], package);
}

#[test]
fn completions_are_printed_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let output = sluice().args(["completions", shell]).output().unwrap();
        assert!(output.status.success(), "{shell}");
        let script = String::from_utf8(output.stdout).unwrap();
        assert!(script.contains("sluice") && script.contains("offsets"), "{shell}: {script}");
    }
}

#[test]
fn the_help_names_the_token_variables() {
    let help = |args: &[&str]| String::from_utf8(sluice().args(args).output().unwrap().stdout).unwrap();
    let serve = help(&["serve", "--help"]);
    assert!(serve.contains("SLUICE_ADMIN_TOKEN") && serve.contains("SLUICE_READ_TOKEN"), "{serve}");
    for command in [&["ls", "--help"][..], &["pause", "--help"], &["deploy", "--help"], &["offsets", "--help"]] {
        let text = help(command);
        assert!(text.contains("SLUICE_TOKEN") && text.contains("SLUICE_ADMIN_TOKEN"), "{command:?}: {text}");
    }
    assert!(help(&["--help"]).contains("RUST_LOG"));
}

/// A pipe whose reader is already closed: every write to it fails with `EPIPE`.
fn closed_pipe() -> std::io::PipeWriter {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    writer
}

/// Runs `command` with its stdout on a pipe nobody reads and checks it ends quietly.
fn ends_quietly_on_a_closed_pipe(mut command: Command, what: &str) {
    let output = command.stdout(closed_pipe()).stderr(Stdio::piped()).output().expect("the command runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{what} panicked on a closed pipe: {stderr}");
    assert!(output.status.success(), "{what} failed on a closed pipe: {:?} {stderr}", output.status);
}

#[test]
fn no_command_panics_when_the_reader_of_its_output_goes_away() {
    let dev = Dev::start();
    let root = sluice_tests::guests::workspace_root();
    let input = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(input.path(), "{\"value\": \"a\"}\n".repeat(2000)).unwrap();
    let mut run = sluice();
    run.arg("run").arg("--module").arg(sluice_tests::guests::component("passthrough")).arg("--input").arg(input.path());
    run.arg("--no-artifact-cache");
    ends_quietly_on_a_closed_pipe(run, "sluice run");
    for args in [
        &["version"][..],
        &["completions", "bash"],
        &["ls"],
        &["status", "demo"],
        &["modules"],
        &["nodes"],
        &["logs", "demo"],
    ] {
        let mut command = sluice();
        command.args(args).args(["--url", &dev.url]).current_dir(&root);
        if args[0] == "version" || args[0] == "completions" {
            command = sluice();
            command.args(args);
        }
        ends_quietly_on_a_closed_pipe(command, &format!("sluice {}", args.join(" ")));
    }
    drop(dev);
    // The demo itself stops, cleanly, when nobody reads its live lines any more.
    let dir = tempfile::tempdir().unwrap();
    let mut demo = sluice();
    demo.args(["dev", "--rate", "200", "--seconds", "600"])
        .args(["--admin-listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(dir.path())
        .current_dir(&root);
    ends_quietly_on_a_closed_pipe(demo, "sluice dev");
}

#[test]
fn sluice_run_compiles_a_module_once_and_loads_it_from_the_artifact_cache_after() {
    let artifacts = tempfile::tempdir().unwrap();
    let input = tempfile::NamedTempFile::new().unwrap();
    // A value that is not UTF-8, given in base64, reaches the function as its bytes.
    std::fs::write(input.path(), "{\"key\": \"k\", \"value_b64\": \"/wCA\"}\n").unwrap();
    let run = || {
        let output = sluice()
            .arg("run")
            .arg("--module")
            .arg(sluice_tests::guests::component("passthrough"))
            .arg("--input")
            .arg(input.path())
            .arg("--artifact-dir")
            .arg(artifacts.path())
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        (String::from_utf8(output.stdout).unwrap(), String::from_utf8(output.stderr).unwrap())
    };
    let (first, first_log) = run();
    assert!(first_log.contains(" compiled in ") && first_log.contains(" ms"), "{first_log}");
    assert!(first.contains("value=\"hex:ff0080\""), "the bytes went through as they are: {first}");
    let (second, second_log) = run();
    assert!(second_log.contains("loaded from the artifact cache in "), "{second_log}");
    let report = |text: &str| text.lines().filter(|l| !l.contains(" in ")).map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(report(&first), report(&second), "the same report both times");
    let cached: Vec<_> = std::fs::read_dir(artifacts.path()).unwrap().collect();
    assert_eq!(cached.len(), 1, "one compiled artifact: {cached:?}");
}
