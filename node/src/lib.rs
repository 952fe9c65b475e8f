//! # bunsan-node: the storage daemon of a Bunsan cluster
//!
//! A node holds one share (one x-coordinate) of every record in the cluster and serves it over
//! QUIC with mutual TLS. It never sees a record: a single share is uniformly random. What it
//! does is keep, per record key, the highest version envelope durably, and decide from each
//! peer's certificate alone whether that peer may store, release, delete or list shares.
//!
//! ```text
//!  QUIC connection (mTLS, ALPN bunsan/1) ── peer certificate ──▶ PeerIdentity (role, name)
//!    └─ bidi stream ─▶ server: u32 length ─▶ ≤ FRAME_MAX_BYTES? ─▶ body ─▶ Request
//!         └─▶ Handler::handle: role allows action? ─▶ checks (index, tombstone, purpose)
//!               └─▶ ShareStore (sled | memory): put-if-newer, durable before the answer
//!         ◀── Response frame, stream finished
//! ```
//!
//! - [`config`]: `node.toml` ([`NodeConfig`]), with every limit documented.
//! - [`store`]: the [`ShareStore`](store::ShareStore) trait, its sled and memory backends, and
//!   the conformance suite every backend passes.
//! - [`handler`]: request → response, without sockets; where authorisation and auditing sit.
//! - [`audit`]: the audit log (durable before every answer), its checkpoints, and the witness
//!   that cosigns the other nodes' logs.
//! - `server`: the quinn shell: accept, identify, frame, time out, shut down gracefully.
//!
//! Not here: splitting and combining (that is the client's job; a node only ever holds one
//! share), the wire formats (in `bunsan-protocol`) and the TLS policy (in
//! `bunsan_client::tls`, shared by every endpoint).

pub mod audit;
pub mod cli;
pub mod config;
pub mod error;
pub mod handler;
mod server;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tracing::Instrument;

pub use config::{Limits, NodeConfig, StoreBackend};
pub use error::{Error, Result};

/// How long [`Node::shutdown`] waits for closed connections to drain before giving up on
/// telling stragglers: the shares are already durable, this only spares peers a timeout.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// A running node: a bound QUIC endpoint serving one share store.
///
/// Dropping a `Node` without [`Node::shutdown`] stops it accepting connections but does not
/// wait for in-flight requests.
pub struct Node {
    id: String,
    local_addr: SocketAddr,
    endpoint: quinn::Endpoint,
    store: Arc<dyn store::ShareStore>,
    audit: Arc<audit::AuditLog>,
    stop: watch::Sender<bool>,
    accept_loop: Option<JoinHandle<()>>,
    witness_loop: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Checks the configuration, loads the identity, opens the store, binds the endpoint and
    /// starts serving. Every failure (bad config, identity, data directory of another index,
    /// port in use) is returned before anything is served.
    pub async fn start(config: NodeConfig) -> Result<Node> {
        config.validate()?;
        let audit_store = audit::open_store(&config).await?;
        Self::start_with_audit(config, audit_store).await
    }

    /// As [`Node::start`], with the audit log kept in `audit_store` instead of the configured
    /// one: tests inject a store that fails, to see that the node then releases nothing.
    pub async fn start_with_audit(
        config: NodeConfig,
        audit_store: Arc<dyn audit::AuditStore>,
    ) -> Result<Node> {
        config.validate()?;
        // Cheapest and most often wrong first: identity and TLS, then the stores (the share
        // store refuses a data directory of another index), and only then the socket.
        let server_config = server::server_config(&config)?;
        let signing = audit::load_signing(&config)?;
        let options = audit::AuditOptions {
            checkpoint_interval: Duration::from_millis(config.audit.checkpoint_interval_ms),
            checkpoint_entries: config.audit.checkpoint_entries,
        };
        let store = store::open(config.store.backend, &config.data_dir, config.index).await?;
        let audit = audit::AuditLog::open(&config.id, audit_store, Some(signing), options).await?;
        let started = async {
            let witness = match &config.cluster {
                Some(path) => Some(Arc::new(witness_for(&config, path, audit.clone())?)),
                None => None,
            };
            let endpoint =
                quinn::Endpoint::server(server_config, config.listen).map_err(|source| {
                    Error::Bind {
                        addr: config.listen,
                        source,
                    }
                })?;
            let local_addr = endpoint.local_addr().map_err(|source| Error::Bind {
                addr: config.listen,
                source,
            })?;
            Ok::<_, Error>((witness, endpoint, local_addr))
        }
        .await;
        let (witness, endpoint, local_addr) = match started {
            Ok(started) => started,
            Err(e) => {
                // Releases the audit store (and its file lock) before reporting.
                audit.close().await;
                return Err(e);
            }
        };
        let shared = Arc::new(server::Shared {
            handler: handler::Handler::new(config.id.clone(), config.index, store.clone())
                .with_audit(audit.clone(), witness.clone()),
            inflight_bytes: Semaphore::new(
                usize::try_from(config.limits.max_inflight_request_bytes)
                    .unwrap_or(usize::MAX)
                    .min(Semaphore::MAX_PERMITS),
            ),
            limits: config.limits.clone(),
        });
        let (stop, stopped) = watch::channel(false);
        let span = tracing::info_span!("node", id = %config.id, index = %config.index);
        let witness_loop = witness.map(|witness| {
            let period = Duration::from_millis(config.audit.cosign_interval_ms);
            tokio::spawn(witness_loop(witness, period, stopped.clone()).instrument(span.clone()))
        });
        let accept_loop = tokio::spawn(
            server::accept_loop(endpoint.clone(), shared, stopped).instrument(span.clone()),
        );
        span.in_scope(
            || tracing::info!(%local_addr, backend = ?config.store.backend, "node listening"),
        );
        Ok(Node {
            id: config.id,
            local_addr,
            endpoint,
            store,
            audit,
            stop,
            accept_loop: Some(accept_loop),
            witness_loop,
        })
    }

    /// The node's audit log.
    pub fn audit(&self) -> &Arc<audit::AuditLog> {
        &self.audit
    }

    /// The address the endpoint is bound to (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops gracefully: stops accepting connections and streams, lets in-flight requests
    /// finish (each is bounded by `request_timeout_ms`), closes connections, and flushes the
    /// store. Failures on the way are logged; acknowledged puts were durable already.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(accept_loop) = self.accept_loop.take() {
            if let Err(e) = accept_loop.await {
                tracing::error!(error = %e, "the accept loop failed");
            }
        }
        if let Some(witness_loop) = self.witness_loop.take() {
            let _ = witness_loop.await;
        }
        self.endpoint
            .close(quinn::VarInt::from_u32(0), b"node shut down");
        if tokio::time::timeout(DRAIN_TIMEOUT, self.endpoint.wait_idle())
            .await
            .is_err()
        {
            tracing::debug!("connections still draining at shutdown");
        }
        if let Err(e) = self.store.flush().await {
            tracing::error!(error = %e, "final store flush failed");
        }
        // Every entry was durable before its answer; this releases the audit store.
        self.audit.close().await;
        tracing::info!(id = %self.id, "node stopped");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Ends the accept loop if `shutdown` was never called; harmless after it.
        let _ = self.stop.send(true);
    }
}

/// The witness of the node configured by `config`, talking to the peers of the manifest at
/// `manifest_path` with the node's own identity.
fn witness_for(
    config: &NodeConfig,
    manifest_path: &std::path::Path,
    log: Arc<audit::AuditLog>,
) -> Result<audit::Witness> {
    let text = std::fs::read_to_string(manifest_path).map_err(|source| Error::Io {
        action: "read",
        path: manifest_path.to_owned(),
        source,
    })?;
    let manifest =
        bunsan_protocol::manifest::Manifest::from_toml(&text).map_err(|e| Error::Config {
            path: manifest_path.to_owned(),
            reason: e.to_string(),
        })?;
    if manifest.node(&config.id).is_none() {
        return Err(Error::Config {
            path: manifest_path.to_owned(),
            reason: format!("the manifest has no node {}", config.id),
        });
    }
    let identity = bunsan_client::Identity::from_files(&config.cert, &config.key, &config.ca)?;
    audit::Witness::new(log, manifest, identity)
}

/// Cosigns the other nodes' logs every `period` until shutdown. The first round waits one
/// period, so that a cluster starting up is not asked before its nodes listen.
async fn witness_loop(
    witness: Arc<audit::Witness>,
    period: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|&stop| stop) => return,
            _ = tokio::time::sleep(period) => {}
        }
        tokio::select! {
            _ = stop.wait_for(|&stop| stop) => return,
            reports = witness.round() => {
                for report in reports.iter().filter(|r| r.problem.is_some()) {
                    tracing::debug!(log = %report.log, problem = ?report.problem, "witness round");
                }
            }
        }
    }
}
