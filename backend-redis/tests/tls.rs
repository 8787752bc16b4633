//! `rediss://`: starts its OWN redis-server with TLS only (a test CA and server certificate
//! made with `openssl` in a temporary directory) and runs an append and a read over it.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test support may panic

use std::{
    net::TcpListener,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use backend_redis::{RedisBackend, RedisStoreOptions};
use cqrs_core::{ContentType, EventData, EventStore, ExpectedVersion, StreamId};

fn run(cmd: &mut Command) {
    let status = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl must be installed");
    assert!(status.success(), "{cmd:?} failed");
}

#[tokio::test]
async fn tls_rediss_url_appends_and_reads() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let dir = std::env::temp_dir().join(format!("cqrs-redis-tls-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A CA and a server certificate it signs (webpki refuses a CA as the end entity).
    let (ca_key, ca) = (dir.join("ca.key"), dir.join("ca.crt"));
    let (key, csr, cert) = (
        dir.join("server.key"),
        dir.join("server.csr"),
        dir.join("server.crt"),
    );
    let ext = dir.join("ext.cnf");
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=cqrs test CA",
        ])
        .arg("-keyout")
        .arg(&ca_key)
        .arg("-out")
        .arg(&ca));
    run(Command::new("openssl")
        .args(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr));
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "1", "-CAcreateserial"])
        .arg("-in")
        .arg(&csr)
        .arg("-CA")
        .arg(&ca)
        .arg("-CAkey")
        .arg(&ca_key)
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&cert));
    let mut server = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .arg("--tls-ca-cert-file")
        .arg(&ca)
        .args(["--tls-auth-clients", "no", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "TLS redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    // The test CA is the trusted root; a plain redis:// client on this port is refused
    // (checked below).
    let pem = std::fs::read(&ca).unwrap();
    let url = format!("rediss://127.0.0.1:{port}");
    let result = async {
        let options = RedisStoreOptions::new(url)
            .prefix("tls")
            .tls_root_certificate(pem);
        let store = RedisBackend::open(options).await?;
        let s = StreamId::new("tls-{1}")?;
        let e = EventData::new("Secured", ContentType::Json, "{}");
        store
            .append(&s, ExpectedVersion::NoStream, vec![e.clone()])
            .await?;
        let read = store.read_stream(&s, 1, 10).await?;
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].event_id(), e.event_id);
        let plain = RedisStoreOptions::new(format!("redis://127.0.0.1:{port}"))
            .prefix("tls")
            .connection_timeout(Duration::from_millis(500))
            .response_timeout(Duration::from_millis(500));
        assert!(
            RedisBackend::open(plain).await.is_err(),
            "plain TCP must not work on the TLS port"
        );
        Ok::<_, cqrs_core::Error>(())
    }
    .await;
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result.unwrap();
}
