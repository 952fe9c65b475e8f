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
//!         └─▶ Handler::handle: role allows action? ─▶ checks (index, tombstone, purpose,
//!               signature + writer certificate, commitment, sealed nonce)
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
//! - [`revocation`]: the CRL every client certificate is checked against, reloaded on SIGHUP
//!   and when the file changes, applied to live connections too, failing closed when expired.
//! - [`checks`]: envelope signature and commitment checks on put, commitment re-check on
//!   every release (bitrot).
//! - [`export`]: reads one share straight from a stopped node's store into a file that the
//!   plain `sharks` crate can combine (docs/RECOVERY.md).
//! - `server`: the quinn shell: accept, identify, frame, time out, shut down gracefully.
//! - `repair`, `refresh`, `peers`: node-to-node work. A helper sends the target a masked
//!   contribution; the target sums k of them into its share (no node ever holds more than its
//!   own share); a refresh deals a sharing of zero between the nodes and switches epochs on
//!   commit. Peers come from the manifest (`node.toml` key `cluster`).
//! - [`metrics`]: Prometheus metrics and their HTTP endpoint (`[metrics] listen`).
//!
//! Not here: splitting and combining (that is the client's job; a node only ever holds one
//! share), the wire formats (in `bunsan-protocol`) and the TLS policy (in
//! `bunsan_client::tls`, shared by every endpoint).

pub mod audit;
pub mod checks;
pub mod cli;
pub mod compaction;
pub mod config;
pub mod error;
pub mod export;
#[doc(hidden)]
pub mod fuzzing;
pub mod handler;
pub mod metrics;
pub mod objstore;
mod peers;
mod refresh;
mod repair;
pub mod revocation;
mod server;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tracing::Instrument;

pub use config::{Limits, MetricsConfig, NodeConfig, StoreBackend, StoreConfig};
pub use error::{Error, Result};
pub use revocation::CrlStatus;

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
    stop: watch::Sender<bool>,
    accept_loop: Option<JoinHandle<()>>,
    metrics: Arc<metrics::Metrics>,
    metrics_addr: Option<SocketAddr>,
    metrics_server: Option<JoinHandle<()>>,
    revocation: Arc<revocation::Revocation>,
    audit: Arc<audit::AuditLog>,
    witness_loop: Option<JoinHandle<()>>,
}

/// The key that signs QUIC stateless resets, derived from the node's private key so that it
/// survives a restart: a client whose connection died with the old process then learns so
/// from the first packet the new process answers, instead of waiting for its idle timeout.
fn stateless_reset_key(config: &NodeConfig) -> Result<Arc<dyn quinn::crypto::HmacKey>> {
    let private_key = std::fs::read(&config.key).map_err(|source| Error::Io {
        action: "read",
        path: config.key.clone(),
        source,
    })?;
    let secret = blake3::derive_key("bunsan 2026-11 quic stateless reset key", &private_key);
    Ok(Arc::new(aws_lc_rs::hmac::Key::new(
        aws_lc_rs::hmac::HMAC_SHA256,
        &secret,
    )))
}

/// Binds the metrics endpoint's TCP socket now, so that a taken port fails the start like a
/// taken QUIC port does, instead of a node that runs without its metrics.
/// Returns the listener and the address it is bound to.
fn metrics_listener(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr)> {
    let bind_error = |source| Error::Bind { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
    listener.set_nonblocking(true).map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(bind_error)?;
    Ok((listener, bound))
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
        // Cheapest and most often wrong first: identity, CRL and TLS, then the stores (the
        // share store refuses a data directory of another index), and only then the sockets.
        let revocation = revocation::Initial::load(&config)?;
        let server_config = server::server_config(&config.limits, revocation.tls_config()?)?;
        let identity =
            bunsan_client::tls::Identity::from_files(&config.cert, &config.key, &config.ca)?;
        let checks = checks::Checks::from_identity(&identity)?;
        let signing = audit::load_signing(&config)?;
        let options = audit::AuditOptions {
            checkpoint_interval: Duration::from_millis(config.audit.checkpoint_interval_ms),
            checkpoint_entries: config.audit.checkpoint_entries,
        };
        let store = store::open(&config.store, &config.data_dir, config.index).await?;
        // Peers (repair, refresh) before the audit store opens, so a bad manifest fails fast.
        let peers = match &config.cluster {
            Some(manifest) => Some(Arc::new(peers::Peers::load(&config, manifest)?)),
            None => None,
        };
        let audit = audit::AuditLog::open(&config.id, audit_store, Some(signing), options).await?;
        let started = bind(&config, server_config.clone(), audit.clone()).await;
        let Bound {
            witness,
            endpoint,
            local_addr,
            metrics_listener,
            metrics_addr,
        } = match started {
            Ok(bound) => bound,
            Err(e) => {
                // Releases the audit store (and its file lock) before reporting.
                audit.close().await;
                return Err(e);
            }
        };
        let metrics = Arc::new(metrics::Metrics::new(&config.id, config.index));
        let (stop, stopped) = watch::channel(false);
        let compaction = config
            .store
            .tombstone_retention()
            .map(|retention| compaction::Compaction { retention });
        let revocation = Arc::new(revocation.serve(
            endpoint.clone(),
            server_config,
            checks.trust().clone(),
            stopped.clone(),
        ));
        let shared = Arc::new(server::Shared {
            metrics: Arc::clone(&metrics),
            handler: {
                let handler =
                    handler::Handler::new(config.id.clone(), config.index, store.clone(), checks)
                        .with_audit(audit.clone(), witness.clone())
                        .with_compaction(compaction);
                match peers {
                    Some(peers) => handler.with_peers(peers),
                    None => handler,
                }
            },
            inflight_bytes: Semaphore::new(
                usize::try_from(config.limits.max_inflight_request_bytes)
                    .unwrap_or(usize::MAX)
                    .min(Semaphore::MAX_PERMITS),
            ),
            limits: config.limits.clone(),
            revocation: revocation.clone(),
        });
        let span = tracing::info_span!("node", id = %config.id, index = %config.index);
        let metrics_server = metrics_listener.map(|listener| {
            let sources = metrics::Sources {
                store: store.clone(),
                audit: audit.clone(),
            };
            let serve = metrics::serve(
                listener,
                Arc::clone(&metrics),
                Arc::new(sources),
                stopped.clone(),
            );
            tokio::spawn(serve.instrument(span.clone()))
        });
        let witness_loop = witness.map(|witness| {
            let period = Duration::from_millis(config.audit.cosign_interval_ms);
            tokio::spawn(witness_loop(witness, period, stopped.clone()).instrument(span.clone()))
        });
        if let Some(rule) = compaction {
            let interval = Duration::from_millis(config.store.compaction_interval_ms);
            let pass = compaction::compaction_loop(
                store.clone(),
                audit.clone(),
                rule,
                interval,
                stopped.clone(),
            );
            tokio::spawn(pass.instrument(span.clone()));
        }
        let accept_loop = tokio::spawn(
            server::accept_loop(endpoint.clone(), shared, stopped).instrument(span.clone()),
        );
        let poll = (config.crl_poll_ms > 0).then(|| Duration::from_millis(config.crl_poll_ms));
        tokio::spawn(revocation.clone().watch(poll).instrument(span.clone()));
        span.in_scope(
            || tracing::info!(%local_addr, backend = ?config.store.backend, metrics = ?metrics_addr, "node listening"),
        );
        Ok(Node {
            id: config.id,
            local_addr,
            endpoint,
            store,
            stop,
            accept_loop: Some(accept_loop),
            metrics,
            metrics_addr,
            metrics_server,
            revocation,
            audit,
            witness_loop,
        })
    }

    /// The node's audit log.
    pub fn audit(&self) -> &Arc<audit::AuditLog> {
        &self.audit
    }

    /// Where the metrics endpoint listens (the real port when configured with port 0), if
    /// `[metrics]` is configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The node's metrics, for the subsystems that publish into them (the audit log's
    /// [`set_audit_head`](metrics::Metrics::set_audit_head), repair's backlog).
    pub fn metrics(&self) -> &Arc<metrics::Metrics> {
        &self.metrics
    }

    /// Reads the CRL file again and enforces it at once: new handshakes use it, and live
    /// connections whose certificate it refuses are closed (what SIGHUP does). An unusable file
    /// leaves the previous CRL in force and is returned as an error; `Ok(None)` means no CRL is
    /// configured.
    pub fn reload_crl(&self) -> Result<Option<CrlStatus>> {
        let _entered = tracing::info_span!("node", id = %self.id).entered();
        self.revocation.reload("reload requested")
    }

    /// How many writer certificates the node's checks remember as verified: for tests that a
    /// CRL reload makes the node forget them.
    #[doc(hidden)]
    pub fn writer_certificates_remembered(&self) -> usize {
        self.revocation.writers().verified_len()
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
        if let Some(metrics_server) = self.metrics_server.take() {
            if let Err(e) = metrics_server.await {
                tracing::error!(error = %e, "the metrics endpoint failed");
            }
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

/// What binding a node's sockets yields.
struct Bound {
    witness: Option<Arc<audit::Witness>>,
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    metrics_listener: Option<tokio::net::TcpListener>,
    metrics_addr: Option<SocketAddr>,
}

/// Prepares the witness and binds the QUIC and metrics sockets: the steps after which a
/// failure must release the already-open audit store.
async fn bind(
    config: &NodeConfig,
    server_config: quinn::ServerConfig,
    audit: Arc<audit::AuditLog>,
) -> Result<Bound> {
    let witness = match &config.cluster {
        Some(path) => Some(Arc::new(witness_for(config, path, audit)?)),
        None => None,
    };
    let bind_error = |source| Error::Bind {
        addr: config.listen,
        source,
    };
    let socket = bunsan_client::socket::bind_udp(config.listen).map_err(bind_error)?;
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::new(stateless_reset_key(config)?),
        Some(server_config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(bind_error)?;
    let local_addr = endpoint.local_addr().map_err(|source| Error::Bind {
        addr: config.listen,
        source,
    })?;
    let (metrics_listener, metrics_addr) = match &config.metrics {
        Some(metrics_config) => {
            let (listener, addr) = metrics_listener(metrics_config.listen)?;
            (Some(listener), Some(addr))
        }
        None => (None, None),
    };
    Ok(Bound {
        witness,
        endpoint,
        local_addr,
        metrics_listener,
        metrics_addr,
    })
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
