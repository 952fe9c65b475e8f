//! Shared helpers for Bunsan's cross-crate integration tests.
//!
//! Every test starts real nodes (child processes of the `bunsan-test-node` binary, which is the
//! `bunsan-node` daemon built into this package) on 127.0.0.1 with free ports and a temporary
//! directory, and talks to them through the real client SDK.

use std::future::Future;
pub mod garage;
pub mod proxy;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bunsan_client::{Client, ClientOptions, Identity};
use bunsan_cluster::init::InitOptions;
use bunsan_cluster::local::{LocalCluster, LocalOptions};
use bunsan_protocol::{Purpose, RecordKey};

/// Starts an n-node, k-of-n cluster on free loopback ports in a temporary directory, running
/// `node_binary` (pass `env!("CARGO_BIN_EXE_bunsan-test-node")`).
pub async fn start_cluster(node_binary: &str, nodes: usize, threshold: u8) -> LocalCluster {
    start_cluster_with_quorum(node_binary, nodes, threshold, None).await
}

/// Like [`start_cluster`], with write quorum W (`None`: W = n).
pub async fn start_cluster_with_quorum(
    node_binary: &str,
    nodes: usize,
    threshold: u8,
    write_quorum: Option<u8>,
) -> LocalCluster {
    let init = InitOptions {
        name: "bunsan-test".to_owned(),
        nodes,
        threshold,
        write_quorum,
        base_port: 0,
    };
    let options = LocalOptions {
        node_binary: Some(PathBuf::from(node_binary)),
        ..LocalOptions::default()
    };
    LocalCluster::start_temporary(&init, options)
        .await
        .expect("the test cluster starts")
}

/// A client of `cluster` under the identity `name` with a short deadline, so a test about a
/// failing node fails fast.
pub fn client(cluster: &LocalCluster, name: &str) -> Client {
    client_with_timeout(cluster, name, std::time::Duration::from_secs(5))
}

/// A client of `cluster` under the identity `name` whose operations end after `timeout`.
pub fn client_with_timeout(
    cluster: &LocalCluster,
    name: &str,
    timeout: std::time::Duration,
) -> Client {
    let options = ClientOptions {
        timeout,
        connect_timeout: timeout.min(std::time::Duration::from_secs(3)),
        ..ClientOptions::default()
    };
    cluster
        .client_for(name, options)
        .expect("the standard identities exist")
}

/// A client of `cluster` under the identity in `dir` (any identity directory: a client's, a
/// node's, or one from another cluster), with the same short deadline as [`client`].
pub fn client_from_dir(cluster: &LocalCluster, dir: &Path) -> Client {
    let identity = Identity::load(dir).expect("a readable identity");
    let options = ClientOptions {
        timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    };
    Client::new(cluster.manifest().clone(), identity, options).expect("a client")
}

/// Runs `check` every 100 ms until it returns `Some`, and returns that; panics naming `what`
/// once `limit` has passed. For effects that nodes apply asynchronously (a CRL reload).
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < limit,
            "{what}: not within {} ms",
            limit.as_millis()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A record key from a literal.
pub fn key(text: &str) -> RecordKey {
    RecordKey::new(text).expect("test keys are valid")
}

/// The purpose every test read states.
pub fn purpose() -> Purpose {
    Purpose::new("drill", "integration test").expect("valid purpose")
}

/// `len` bytes that differ for every `seed` and do not repeat within a record, so that a
/// misplaced or shifted byte shows.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            // xorshift64*: cheap and good enough to make every byte position distinct.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|window| window == needle)
}
