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
//! - [`handler`]: request → response, without sockets; where authorisation (and next, the
//!   audit log) sits.
//! - `server`: the quinn shell: accept, identify, frame, time out, shut down gracefully.
//!
//! Not here: splitting and combining (that is the client's job; a node only ever holds one
//! share), the wire formats (in `bunsan-protocol`) and the TLS policy (in
//! `bunsan_client::tls`, shared by every endpoint).

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
    stop: watch::Sender<bool>,
    accept_loop: Option<JoinHandle<()>>,
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
        // Cheapest and most often wrong first: identity and TLS, then the store (which refuses
        // a data directory of another index), and only then the socket.
        let server_config = server::server_config(&config)?;
        let store = store::open(config.store.backend, &config.data_dir, config.index).await?;
        let bind_error = |source| Error::Bind {
            addr: config.listen,
            source,
        };
        let socket = bunsan_client::socket::bind_udp(config.listen).map_err(bind_error)?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::new(stateless_reset_key(&config)?),
            Some(server_config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(bind_error)?;
        let local_addr = endpoint.local_addr().map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
        let shared = Arc::new(server::Shared {
            handler: handler::Handler::new(config.id.clone(), config.index, store.clone()),
            inflight_bytes: Semaphore::new(
                usize::try_from(config.limits.max_inflight_request_bytes)
                    .unwrap_or(usize::MAX)
                    .min(Semaphore::MAX_PERMITS),
            ),
            limits: config.limits.clone(),
        });
        let (stop, stopped) = watch::channel(false);
        let span = tracing::info_span!("node", id = %config.id, index = %config.index);
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
            stop,
            accept_loop: Some(accept_loop),
        })
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
        tracing::info!(id = %self.id, "node stopped");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Ends the accept loop if `shutdown` was never called; harmless after it.
        let _ = self.stop.send(true);
    }
}
