//! Redis over TLS (`rediss://`): the server's certificate is verified, against the CA named by
//! `ca_file` or the system's roots. Certificates are made at test time.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice::cache::{Cache, Namespace, connect};

/// A `redis-server` with only a TLS port, killed by its PID on drop.
struct TlsRedis {
    child: Child,
    port: u16,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let status =
        Command::new("openssl").current_dir(dir).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(status.is_ok_and(|s| s.success()), "openssl {args:?} failed");
}

/// A CA, and a server certificate it signed for 127.0.0.1.
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=sluice-test-ca",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-extfile",
            "san.ext",
        ],
    );
}

fn start(dir: &Path) -> TlsRedis {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let file = |name: &str| dir.join(name).display().to_string();
    let child = Command::new("redis-server")
        .args(["--port", "0", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--tls-auth-clients", "no"])
        .args(["--tls-port", &port.to_string()])
        .args(["--tls-cert-file", &file("server.pem"), "--tls-key-file", &file("server.key")])
        .args(["--tls-ca-cert-file", &file("ca.pem")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed (make setup)");
    let server = TlsRedis { child, port };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server with TLS did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

#[tokio::test]
async fn rediss_urls_talk_tls_and_verify_the_server_certificate() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let server = start(dir.path());
    let ca = dir.path().join("ca.pem");

    let url = format!("rediss://127.0.0.1:{}?ca_file={}", server.port, ca.display());
    let backend = connect(&url).await.expect("TLS connection trusted through ca_file");
    let cache = Cache::new(backend, Namespace::new("tls").unwrap());
    cache.set("greeting", b"hello", None).await.unwrap();
    assert_eq!(cache.get("greeting").await.unwrap(), Some(b"hello".to_vec()));
    assert_eq!(cache.incr("n", 2, None).await.unwrap(), 2);

    // Without the CA, the self-signed chain is not trusted: the connection is refused.
    let untrusted = connect(&format!("rediss://127.0.0.1:{}", server.port)).await;
    assert!(untrusted.is_err(), "a certificate from an unknown CA must not be accepted");
    // Plain TCP to a TLS port does not work either.
    assert!(connect(&format!("redis://127.0.0.1:{}", server.port)).await.is_err());
}
