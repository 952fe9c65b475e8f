//! The real `bunsan-node` binary: clean exit on SIGTERM, clear failure on a bad config.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bunsan_protocol::message::{Request, Response};
use bunsan_protocol::role::Role;
use common::{call, connect, Pki};

const BINARY: &str = env!("CARGO_BIN_EXE_bunsan-node");

fn write_config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("node.toml");
    let text = format!(
        "id = \"node-1\"\nindex = 1\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
         cert = \"cert.pem\"\nkey = \"key.pem\"\nca = \"ca.pem\"\n{extra}"
    );
    std::fs::write(&path, text).expect("write config");
    path
}

#[tokio::test]
async fn serves_until_sigterm_then_exits_zero() {
    let pki = Pki::new();
    let dir = pki.issue("node-1", Some(Role::Node));
    let config = write_config(&dir, "");
    let mut child = Command::new(BINARY)
        .args(["--config".as_ref(), config.as_os_str()])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bunsan-node");
    let stderr = child.stderr.take().expect("stderr");
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let addr = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(10))
            .expect("the node logs where it listens");
        if let Some(rest) = line.split("local_addr=").nth(1) {
            let addr = rest.split_whitespace().next().unwrap_or_default();
            break addr.parse::<SocketAddr>().expect("listen address");
        }
    };
    let conn = connect(&pki.issue("ops", Some(Role::Auditor)), addr, "node-1").await;
    assert!(matches!(
        call(&conn, &Request::Health).await,
        Response::Health(_)
    ));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "bunsan-node did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(exit.code(), Some(0));
}

#[test]
fn a_bad_config_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "[limits]\nmax_conections = 5\n");
    let output = Command::new(BINARY)
        .args(["--config".as_ref(), config.as_os_str()])
        .output()
        .expect("run bunsan-node");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("max_conections"), "{stderr}");
    assert!(stderr.contains("node.toml"), "{stderr}");

    let valid = write_config(dir.path(), "");
    let output = Command::new(BINARY)
        .args(["--config".as_ref(), valid.as_os_str()])
        .output()
        .expect("run bunsan-node");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cert.pem"),
        "missing identity not named: {stderr}"
    );
}
