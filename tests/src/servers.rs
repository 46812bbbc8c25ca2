//! Real cache servers on loopback for the tests and benchmarks: `redis-server` and `memcached`
//! processes started on a free port of 127.0.0.1, checked to answer, and killed by their PID
//! when dropped. [`RedisServer::stop`] / [`RedisServer::restart`] (and the same on
//! [`MemcachedServer`]) make outages; `pause` / `resume` freeze the process (SIGSTOP / SIGCONT)
//! so that calls time out instead of being refused.
//!
//! The binaries come from the distribution's packages: `make setup` installs them.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer after it was spawned.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How many free ports to try when another process takes the one picked first.
const PORT_ATTEMPTS: usize = 5;

/// A `redis-server` on 127.0.0.1, without persistence.
#[derive(Debug)]
pub struct RedisServer(ServerProcess);

/// A `memcached` on 127.0.0.1, TCP only.
#[derive(Debug)]
pub struct MemcachedServer(ServerProcess);

impl RedisServer {
    /// Starts a server on a free port and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra configuration, e.g. `["--requirepass", "secret"]`.
    pub fn start_with(args: &[&str]) -> Self {
        RedisServer(ServerProcess::start(Kind::Redis, args))
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.0.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.0.port)
    }

    /// Kills the server (its data is gone) and waits for it to exit.
    pub fn stop(&mut self) {
        self.0.stop();
    }

    /// Starts it again on the same port, empty, and waits until it answers.
    pub fn restart(&mut self) {
        self.0.restart();
    }

    /// Freezes the process: connections stay open but nothing is answered.
    pub fn pause(&self) {
        self.0.signal("STOP");
    }

    /// Lets a paused process run again.
    pub fn resume(&self) {
        self.0.signal("CONT");
    }
}

impl MemcachedServer {
    /// Starts a server on a free port and waits until it answers.
    pub fn start() -> Self {
        MemcachedServer(ServerProcess::start(Kind::Memcached, &[]))
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.0.port
    }

    /// `127.0.0.1:PORT`, as listed in a `memcache://` URL.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.0.port)
    }

    /// `memcache://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("memcache://{}", self.address())
    }

    /// Kills the server (its data is gone) and waits for it to exit.
    pub fn stop(&mut self) {
        self.0.stop();
    }

    /// Starts it again on the same port, empty, and waits until it answers.
    pub fn restart(&mut self) {
        self.0.restart();
    }

    /// Freezes the process: connections stay open but nothing is answered.
    pub fn pause(&self) {
        self.0.signal("STOP");
    }

    /// Lets a paused process run again.
    pub fn resume(&self) {
        self.0.signal("CONT");
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Redis,
    Memcached,
}

impl Kind {
    fn program(self) -> &'static str {
        match self {
            Kind::Redis => "redis-server",
            Kind::Memcached => "memcached",
        }
    }

    fn command(self, port: u16) -> Command {
        let mut command = Command::new(self.program());
        let port = port.to_string();
        match self {
            Kind::Redis => {
                command.args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
                command.args(["--protected-mode", "yes", "--logfile", ""]);
            }
            Kind::Memcached => {
                command.args(["-l", "127.0.0.1", "-p", &port, "-U", "0"]);
                // memcached refuses to run as root unless told which user to be.
                if running_as_root() {
                    command.args(["-u", "root"]);
                }
            }
        }
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        command
    }

    /// A request, and the line of its answer that shows that process `pid` is the one serving:
    /// another test's server that won a race for the same port must not pass for ours.
    fn probe(self, pid: u32, password: Option<&str>) -> (String, String) {
        match self {
            Kind::Redis => {
                let auth = password.map(|p| format!("AUTH {p}\r\n")).unwrap_or_default();
                (format!("{auth}INFO server\r\n"), format!("process_id:{pid}\r\n"))
            }
            Kind::Memcached => ("stats\r\n".into(), format!("STAT pid {pid}\r\n")),
        }
    }
}

#[derive(Debug)]
struct ServerProcess {
    kind: Kind,
    port: u16,
    /// Arguments after the standard ones.
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl ServerProcess {
    fn start(kind: Kind, extra_args: &[&str]) -> Self {
        let mut last_failure = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let extra_args = extra_args.iter().map(|arg| arg.to_string()).collect();
            let mut server = ServerProcess { kind, port, extra_args, child: None };
            match server.spawn() {
                Ok(()) => return server,
                // Most likely another process took the port between our check and the bind.
                Err(failure) => last_failure = failure,
            }
        }
        panic!("{} did not start after {PORT_ATTEMPTS} attempts: {last_failure}", kind.program());
    }

    fn spawn(&mut self) -> Result<(), String> {
        let program = self.kind.program();
        let child = self.kind.command(self.port).args(&self.extra_args).spawn().unwrap_or_else(|e| {
            panic!(
                "cannot run {program}: {e}. The cache tests need memcached and redis-server: run `make setup` \
                 (it installs the memcached, redis-server and redis-tools packages)"
            )
        });
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(format!("{program} on port {} exited at startup ({status})", self.port));
            }
            let password = self.extra_args.iter().skip_while(|arg| *arg != "--requirepass").nth(1);
            let (request, expected) =
                self.kind.probe(self.child.as_ref().map_or(0, Child::id), password.map(String::as_str));
            if answers(self.port, &request, &expected) {
                return Ok(());
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                self.stop();
                return Err(format!("{program} on port {} did not answer within {STARTUP_TIMEOUT:?}", self.port));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A paused process still dies of SIGKILL; kill() sends it to this PID only.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self) {
        self.stop();
        let port = self.port;
        let started = Instant::now();
        // The port may linger for a moment after the old process died.
        while let Err(failure) = self.spawn() {
            assert!(started.elapsed() < STARTUP_TIMEOUT, "restart on port {port}: {failure}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` (`STOP` or `CONT`) to the process, by PID, and waits until every thread of
    /// it has stopped or runs again: `kill` returns before the signal has taken effect, and a
    /// worker thread that has not stopped yet would still answer.
    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().unwrap_or_else(|| panic!("{} is not running", self.kind.program()));
        let pid = child.id();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .unwrap_or_else(|e| panic!("kill -{signal}: {e}"));
        assert!(status.success(), "kill -{signal} {pid} failed: {status}");
        let want_stopped = signal == "STOP";
        let started = Instant::now();
        while threads_stopped(pid) != Some(want_stopped) {
            assert!(started.elapsed() < STARTUP_TIMEOUT, "{} did not take SIG{signal}", self.kind.program());
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Whether every thread of process `pid` is stopped (`Some(true)`), none is (`Some(false)`), or
/// some are (`None`).
fn threads_stopped(pid: u32) -> Option<bool> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let states: Vec<bool> = tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("status")).ok())
        .filter_map(|status| {
            let state = status.lines().find(|line| line.starts_with("State:"))?;
            Some(state.split_whitespace().nth(1) == Some("T"))
        })
        .collect();
    if states.iter().all(|&stopped| stopped) {
        Some(true)
    } else if states.iter().all(|&stopped| !stopped) {
        Some(false)
    } else {
        None
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port of 127.0.0.1 that nothing listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free loopback port");
    listener.local_addr().expect("local address").port()
}

/// Whether the server on `port` answers `request` with `expected` somewhere in its answer.
fn answers(port: u16, request: &str, expected: &str) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while answer.len() < 64 * 1024 {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
        }
        if answer.windows(expected.len()).any(|w| w == expected.as_bytes()) {
            return true;
        }
    }
    false
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status.lines().any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(1) == Some("0"))
    })
}
