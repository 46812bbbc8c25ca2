//! `sluice serve` as a process of its own, as an operator runs it: started on a data
//! directory, its admin API on a free loopback port, stopped with SIGTERM or killed.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice::client::AdminClient;

use crate::guests;

/// How long a starting runtime may take to serve its admin API.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A `sluice serve` process.
pub struct ServeProcess {
    child: Child,
    log: PathBuf,
    url: String,
    /// Where this process's lines begin in `log`.
    started_at: usize,
}

/// The `sluice` binary built by `make build`, or the one `SLUICE_BINARY` names.
pub fn sluice_binary() -> PathBuf {
    let binary = std::env::var_os("SLUICE_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| guests::workspace_root().join("target/release/sluice"));
    assert!(binary.exists(), "{} is missing: run `cargo build --release -p sluice`", binary.display());
    binary
}

impl ServeProcess {
    /// Starts `sluice serve` for the cluster at `brokers` on `data_dir`, with the extra
    /// `args`, logging to `<data_dir>.log`; waits until its admin API answers.
    pub fn start(brokers: &str, data_dir: &Path, args: &[&str]) -> ServeProcess {
        let mut process = ServeProcess::start_unready(brokers, data_dir, args);
        process.wait_ready();
        process
    }

    /// Like [`ServeProcess::start`], with the environment variables `env` set as well (the
    /// runtime's tokens, say, which are best not given on the command line).
    pub fn start_with_env(brokers: &str, data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> ServeProcess {
        let mut process = ServeProcess::start_unready_with_env(brokers, data_dir, args, env);
        process.wait_ready();
        process
    }

    /// Starts `sluice serve` like [`ServeProcess::start`] without waiting for its admin API
    /// (see [`ServeProcess::wait_ready`]).
    pub fn start_unready(brokers: &str, data_dir: &Path, args: &[&str]) -> ServeProcess {
        ServeProcess::start_unready_with_env(brokers, data_dir, args, &[])
    }

    fn start_unready_with_env(brokers: &str, data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> ServeProcess {
        let mut all: Vec<&OsStr> =
            vec!["--brokers".as_ref(), brokers.as_ref(), "--data-dir".as_ref(), data_dir.as_ref()];
        all.extend(["--status-every", "0"].map(OsStr::new));
        all.extend(args.iter().map(OsStr::new));
        ServeProcess::spawn_with_env(&all, env, data_dir.with_extension("log"))
    }

    /// Starts `sluice serve <args>` with its admin API on a free loopback port, logging to
    /// `log` (appended to); waits until the API answers.
    pub fn spawn(args: &[&OsStr], log: PathBuf) -> ServeProcess {
        let mut process = ServeProcess::spawn_unready(args, log);
        process.wait_ready();
        process
    }

    /// Waits until a process started with [`ServeProcess::spawn_unready`] serves its admin API
    /// (at most [`START_TIMEOUT`]); panics naming its log if it exits or does not in time.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = self.log();
            let start = self.started_at.min(text.len());
            if let Some(at) = text[start..].find("admin API on http://") {
                let rest = &text[start + at + "admin API on ".len()..];
                self.url = rest.split_whitespace().next().unwrap_or_default().to_string();
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sluice serve exited with {status} before serving its API:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "sluice serve did not serve its API in time:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts `sluice serve <args>` like [`ServeProcess::spawn`] without waiting for anything.
    pub fn spawn_unready(args: &[&OsStr], log: PathBuf) -> ServeProcess {
        ServeProcess::spawn_with_env(args, &[], log)
    }

    /// Like [`ServeProcess::spawn_unready`], with the environment variables `env` set as well.
    fn spawn_with_env(args: &[&OsStr], env: &[(&str, &str)], log: PathBuf) -> ServeProcess {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let started_at = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) as usize;
        let child = Command::new(sluice_binary())
            .args(["serve", "--admin-listen", "127.0.0.1:0"])
            .args(args)
            .env("SLUICE_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("spawn sluice serve");
        ServeProcess { child, log, url: String::new(), started_at }
    }

    /// The admin API's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A client of its admin API, with `token`.
    pub fn client(&self, token: Option<&str>) -> AdminClient {
        AdminClient::new(&self.url, token.map(str::to_string))
    }

    /// Asks the process to stop (SIGTERM) and waits for it.
    pub fn terminate(&mut self) {
        self.signal_term();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM without waiting.
    pub fn signal_term(&self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
    }

    /// The exit status, once the process has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Kills the process at once.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything logged to its log file, by this process and any before it on the same file.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What this process logged.
    pub fn own_log(&self) -> String {
        let text = self.log();
        text[self.started_at.min(text.len())..].to_string()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.kill_9();
    }
}
