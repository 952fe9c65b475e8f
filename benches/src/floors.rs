//! The floors: what moving the same bytes over quinn, and writing the same share to sled,
//! costs with nothing of Bunsan in between.
//!
//! - [`EchoFloor`]: five QUIC endpoints with Bunsan's TLS policy (`bunsan_client::tls`: TLS 1.3,
//!   X25519MLKEM768, mutual TLS, ALPN `bunsan/1`), each on its own port, served by a separate
//!   runtime. A request is a 4-byte reply length and a body; the endpoint reads the body,
//!   discards it, and answers with that many bytes from a buffer it made once. A floor
//!   operation sends one request per endpoint at once, one stream each, exactly like a Bunsan
//!   put (a share up, a short answer down) or get (a short request up, a share down), and waits
//!   for as many answers as Bunsan waits for.
//! - [`sled_floor`]: sled 0.34 insert of a share-sized value and `flush` in five databases at
//!   once, as the five nodes do for a put; with a batch of c inserts per flush, the ideal group
//!   commit at concurrency c.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bunsan_client::{tls, Identity};
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::measure::Sample;

/// The largest request an echo endpoint reads: one maximal Bunsan frame.
const ECHO_REQUEST_MAX_BYTES: usize = 80 << 20;

/// Five (or n) echo endpoints and a client connected to each.
pub struct EchoFloor {
    runtime: Option<tokio::runtime::Runtime>,
    client: quinn::Endpoint,
    connections: Vec<quinn::Connection>,
}

impl EchoFloor {
    /// Starts one echo endpoint per node identity in the cluster directory `pki` (only its
    /// certificates are used: `nodes/node-I/` and `clients/collector/`) and connects to each.
    pub async fn start(pki: &Path, nodes: u8) -> anyhow::Result<Self> {
        // The endpoints get their own threads, as nodes have their own processes.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("echo-floor")
            .build()?;
        let reply = Bytes::from(vec![0x5a; ECHO_REQUEST_MAX_BYTES]);
        let mut addresses: Vec<(String, SocketAddr)> = Vec::new();
        for index in 1..=nodes {
            let node = format!("node-{index}");
            let identity = Identity::load(&pki.join("nodes").join(&node))
                .with_context(|| format!("identity of {node}"))?;
            let mut server = tls::quic_server_config(tls::server_tls_config(&identity, vec![])?)?;
            let mut transport = quinn::TransportConfig::default();
            transport
                .max_concurrent_bidi_streams(256u32.into())
                .max_concurrent_uni_streams(0u8.into());
            server.transport_config(Arc::new(transport));
            // The same socket setup as a node's.
            let socket = bunsan_client::socket::bind_udp(SocketAddr::from(([127, 0, 0, 1], 0)))?;
            let endpoint = {
                let _inside = runtime.enter();
                quinn::Endpoint::new(
                    quinn::EndpointConfig::default(),
                    Some(server),
                    socket,
                    Arc::new(quinn::TokioRuntime),
                )?
            };
            addresses.push((node, endpoint.local_addr()?));
            runtime.spawn(serve(endpoint, reply.clone()));
        }
        let identity = Identity::load(&pki.join("clients").join("collector"))?;
        let socket = bunsan_client::socket::bind_udp(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let mut client = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            None,
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        client.set_default_client_config(tls::client_config(&identity)?);
        let mut connections = Vec::new();
        for (name, address) in addresses {
            connections.push(client.connect(address, &name)?.await?);
        }
        Ok(Self {
            runtime: Some(runtime),
            client,
            connections,
        })
    }

    /// One floor operation: `request` (whose first 4 bytes are the reply length, big-endian)
    /// to every endpoint at once on a fresh stream each; returns once `wait_for` answers
    /// arrived. The rest finish in the background, as a Bunsan get's stragglers do.
    pub async fn round_trip(&self, request: &Bytes, wait_for: usize) -> anyhow::Result<()> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        for connection in &self.connections {
            let (connection, request, tx) = (connection.clone(), request.clone(), tx.clone());
            tokio::spawn(async move {
                let _ = tx.send(exchange(&connection, request).await);
            });
        }
        drop(tx);
        for _ in 0..wait_for {
            rx.recv().await.context("an echo task vanished")??;
        }
        Ok(())
    }

    /// Closes the client side.
    pub async fn close(&self) {
        self.client.close(0u32.into(), b"done");
    }
}

impl Drop for EchoFloor {
    fn drop(&mut self) {
        // A runtime may not be dropped from async code; this leaves its threads to end alone.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A floor request: the reply length, then `body_len` bytes.
pub fn echo_request(body_len: usize, reply_len: usize) -> Bytes {
    let mut request = vec![0xa5; 4 + body_len];
    request[..4].copy_from_slice(&(reply_len as u32).to_be_bytes());
    Bytes::from(request)
}

async fn exchange(connection: &quinn::Connection, request: Bytes) -> anyhow::Result<()> {
    let (mut send, mut recv) = connection.open_bi().await?;
    send.write_chunk(request).await?;
    send.finish()?;
    while recv.read_chunk(usize::MAX, true).await?.is_some() {}
    Ok(())
}

async fn serve(endpoint: quinn::Endpoint, reply: Bytes) {
    while let Some(incoming) = endpoint.accept().await {
        let reply = reply.clone();
        tokio::spawn(async move {
            let Ok(connection) = incoming.await else {
                return;
            };
            while let Ok((send, recv)) = connection.accept_bi().await {
                tokio::spawn(answer(send, recv, reply.clone()));
            }
        });
    }
}

async fn answer(mut send: quinn::SendStream, mut recv: quinn::RecvStream, reply: Bytes) {
    let mut prefix = [0u8; 4];
    if recv.read_exact(&mut prefix).await.is_err() {
        return;
    }
    let reply_len = (u32::from_be_bytes(prefix) as usize).min(reply.len());
    // Read and drop the body a chunk at a time: no copy, as little work as a receiver can do.
    let mut read = 0;
    while let Ok(Some(chunk)) = recv.read_chunk(usize::MAX, true).await {
        read += chunk.bytes.len();
        if read > ECHO_REQUEST_MAX_BYTES {
            return;
        }
    }
    if send.write_chunk(reply.slice(..reply_len)).await.is_ok() {
        let _ = send.finish();
        let _ = send.stopped().await;
    }
}

/// sled insert of a `value_len`-byte value then a flush, in `nodes` databases at once (one
/// thread each, as every node of the cluster writes its share), `batch` inserts per flush (1: a
/// lone put; c: the ideal group commit at concurrency c), for `budget`. An operation is durable
/// when every database flushed it, so its latency is its round's slowest flush.
pub async fn sled_floor(
    dir: &Path,
    nodes: usize,
    value_len: usize,
    batch: usize,
    budget: Duration,
) -> anyhow::Result<Sample> {
    let dir = dir.to_owned();
    // sled's API is synchronous: the rounds run on blocking threads.
    tokio::task::spawn_blocking(move || {
        let dbs = (0..nodes)
            .map(|node| sled::Config::new().path(dir.join(node.to_string())).open())
            .collect::<Result<Vec<_>, _>>()?;
        let trees = dbs
            .iter()
            .map(|db| db.open_tree("shares"))
            .collect::<Result<Vec<_>, _>>()?;
        let started = Instant::now();
        let mut latencies_us = Vec::new();
        let mut round = 0u64;
        while started.elapsed() < budget {
            let t = Instant::now();
            std::thread::scope(|scope| {
                let writers: Vec<_> = dbs
                    .iter()
                    .zip(&trees)
                    .map(|(db, tree)| {
                        scope.spawn(move || write_round(db, tree, round, batch, value_len))
                    })
                    .collect();
                writers.into_iter().try_for_each(|writer| {
                    writer.join().unwrap_or_else(|_| {
                        Err(sled::Error::ReportableBug("writer panicked".to_owned()))
                    })
                })
            })?;
            let us = t.elapsed().as_micros() as u64;
            latencies_us.extend(std::iter::repeat_n(us, batch));
            round += 1;
        }
        let wall = started.elapsed();
        drop(trees);
        drop(dbs);
        std::fs::remove_dir_all(&dir)?;
        latencies_us.sort_unstable();
        Ok(Sample { latencies_us, wall })
    })
    .await?
}

/// One node's part of a floor round: `batch` inserts and a flush.
fn write_round(
    db: &sled::Db,
    tree: &sled::Tree,
    round: u64,
    batch: usize,
    value_len: usize,
) -> sled::Result<()> {
    let mut value = vec![0x5a; value_len.max(8)];
    for i in 0..batch as u64 {
        // A bounded key space, as the cluster bench overwrites its keys too, and a new value
        // every time, as every put writes a new version: sled skips rewriting a key with the
        // value it already holds, and its flush then has nothing to do.
        let n = round * batch as u64 + i;
        value[..8].copy_from_slice(&n.to_le_bytes());
        let key = format!("floor/{:05}", n % 4096);
        tree.insert(key.as_bytes(), value.as_slice())?;
    }
    db.flush()?;
    Ok(())
}

/// sled read of a `value_len`-byte value that was written before (the node side of a get).
pub async fn sled_read_floor(
    dir: &Path,
    value_len: usize,
    budget: Duration,
) -> anyhow::Result<Sample> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let db = sled::Config::new().path(&dir).open()?;
        let tree = db.open_tree("shares")?;
        for i in 0..16u64 {
            tree.insert(format!("floor/{i:05}").as_bytes(), vec![0x5a; value_len])?;
        }
        db.flush()?;
        let started = Instant::now();
        let mut latencies_us = Vec::new();
        let mut i = 0u64;
        while started.elapsed() < budget {
            let t = Instant::now();
            let value = tree.get(format!("floor/{:05}", i % 16).as_bytes())?;
            std::hint::black_box(value);
            latencies_us.push(t.elapsed().as_micros() as u64);
            i += 1;
        }
        let wall = started.elapsed();
        drop(tree);
        drop(db);
        std::fs::remove_dir_all(&dir)?;
        latencies_us.sort_unstable();
        Ok(Sample { latencies_us, wall })
    })
    .await?
}
