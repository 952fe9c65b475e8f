//! One request, one QUIC stream: the client's connection cache and request/response call.
//!
//! Each node gets one long-lived connection, opened on first use and reopened when it closes,
//! so a burst of requests pays one handshake per node, not one per request.
//!
//! A node (a site) may be served by several processes, listed as several addresses in the
//! manifest. The link remembers which address answered last and starts there; a request that
//! fails on one address is tried once more on the next, so losing one process of a site costs
//! the requests in flight to it one retry, not an error. Retrying is safe because every
//! request is idempotent: a put of the same envelope is `AlreadyStored`, a tombstone the same.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bunsan_protocol::frame::{self, FRAME_MAX_BYTES, PREFIX_BYTES};
use bunsan_protocol::manifest::{Manifest, NodeEntry};
use bunsan_protocol::message::{Request, Response};
use bytes::Bytes;
use rustls_pki_types::CertificateDer;
use tokio::sync::Mutex;

use crate::error::{Error, NodeFailure, Result};
use crate::tls::{self, Identity};

/// Connections to every node of one manifest.
pub(crate) struct Transport {
    endpoint: quinn::Endpoint,
    links: Vec<Link>,
    connect_timeout: Duration,
}

struct Link {
    node: NodeEntry,
    connection: Mutex<Option<quinn::Connection>>,
    /// The address to try first: the one that last connected.
    preferred: AtomicUsize,
    /// Whether the last call answered (any answer, a refusal included) rather than failed in
    /// transport: a get asks answering nodes for shares first.
    answering: AtomicBool,
}

impl Transport {
    /// Opens a client endpoint with `identity`; no connection is made until a call needs it.
    pub(crate) fn new(
        manifest: &Manifest,
        identity: &Identity,
        connect_timeout: Duration,
    ) -> Result<Self> {
        let all_v6 = manifest
            .nodes
            .iter()
            .flat_map(|node| &node.addresses)
            .all(SocketAddr::is_ipv6);
        let bind = if all_v6 {
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
        } else {
            SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0))
        };
        // As `quinn::Endpoint::client`, but with the larger socket buffers of `socket`.
        let socket = crate::socket::bind_udp(bind).map_err(Error::Endpoint)?;
        let mut endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            None,
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(Error::Endpoint)?;
        let mut config = tls::client_config(identity)?;
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(Duration::from_secs(5)));
        transport.max_concurrent_uni_streams(0u8.into());
        config.transport_config(Arc::new(transport));
        endpoint.set_default_client_config(config);
        let links = manifest
            .nodes
            .iter()
            .map(|node| Link {
                node: node.clone(),
                connection: Mutex::new(None),
                preferred: AtomicUsize::new(0),
                answering: AtomicBool::new(true),
            })
            .collect();
        Ok(Self {
            endpoint,
            links,
            connect_timeout,
        })
    }

    /// The manifest entry of node number `position` (0-based, index order).
    pub(crate) fn node(&self, position: usize) -> &NodeEntry {
        &self.links[position].node
    }

    /// Every node position, the nodes whose last call answered (and whose connection the node
    /// has not closed, as a stopping node does) first, each group in turn from `turn` (mod n),
    /// so that successive gets spread their share reads over the nodes.
    pub(crate) fn by_preference(&self, turn: usize) -> Vec<usize> {
        let n = self.links.len();
        let mut positions: Vec<usize> = (0..n).map(|i| (turn + i) % n).collect();
        positions.sort_by_key(|&p| {
            let link = &self.links[p];
            let closed = link.connection.try_lock().is_ok_and(|cached| {
                cached
                    .as_ref()
                    .is_some_and(|connection| connection.close_reason().is_some())
            });
            closed || !link.answering.load(Ordering::Relaxed)
        });
        positions
    }

    /// Notes that the node at `position` did not answer in time (a get widened past it): later
    /// gets ask it last until one of its calls answers again.
    pub(crate) fn suspect(&self, position: usize) {
        self.links[position]
            .answering
            .store(false, Ordering::Relaxed);
    }

    /// Sends `request` to the node at `position` and waits for its one response, failing after
    /// `timeout`. Network and decoding failures come back as a [`NodeFailure`].
    pub(crate) async fn call(
        &self,
        position: usize,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, NodeFailure> {
        let frame = self.encode(position, request)?;
        self.call_frame(position, frame, timeout).await
    }

    /// Encodes `request` as one frame for the node at `position`. Callers that own a large
    /// request encode it and drop it before the call, so a share is held once (as its frame),
    /// not twice; the frame then moves into QUIC's send buffer without another copy.
    pub(crate) fn encode(&self, position: usize, request: &Request) -> Result<Bytes, NodeFailure> {
        frame::encode(request, "request")
            .map(Bytes::from)
            .map_err(|e| NodeFailure {
                node: self.links[position].node.id.clone(),
                reason: e.to_string(),
                code: None,
            })
    }

    /// [`Transport::call`] with a frame made by [`Transport::encode`]. On a node with several
    /// addresses, a failed attempt is retried once on the next address.
    pub(crate) async fn call_frame(
        &self,
        position: usize,
        frame: Bytes,
        timeout: Duration,
    ) -> Result<Response, NodeFailure> {
        let link = &self.links[position];
        let attempts = link.node.addresses.len().min(2);
        let mut outcome = self.attempt(position, frame.clone(), timeout).await;
        for _ in 1..attempts {
            if outcome.is_ok() {
                break;
            }
            // The failed attempt dropped its connection; the next one starts at the next
            // address of the site.
            let failed = link.preferred.load(Ordering::Relaxed);
            link.preferred
                .store((failed + 1) % link.node.addresses.len(), Ordering::Relaxed);
            outcome = self.attempt(position, frame.clone(), timeout).await;
        }
        link.answering.store(outcome.is_ok(), Ordering::Relaxed);
        outcome
    }

    async fn attempt(
        &self,
        position: usize,
        frame: Bytes,
        timeout: Duration,
    ) -> Result<Response, NodeFailure> {
        let node = &self.links[position].node;
        let fail = |reason: String| NodeFailure {
            node: node.id.clone(),
            reason,
            code: None,
        };
        let connection = match tokio::time::timeout(timeout, self.connection(position)).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(reason)) => return Err(fail(reason)),
            Err(_) => {
                return Err(fail(format!(
                    "no connection within {} ms",
                    timeout.as_millis()
                )))
            }
        };
        let outcome = match tokio::time::timeout(timeout, exchange(&connection, frame)).await {
            // Stream errors only say "connection lost"; the connection knows why (the node
            // refused this identity's certificate as revoked, say), and that is what a person
            // must read.
            Ok(outcome) => outcome.map_err(|reason| match connection.close_reason() {
                Some(close) => describe_close(&close),
                None => reason,
            }),
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        };
        if outcome.is_err() {
            // A node that was killed and restarted never tells us the old connection is gone,
            // and a frozen one never answers on it: drop it so the next call connects afresh
            // instead of waiting on a dead connection until its idle timeout.
            self.forget(position, &connection).await;
        }
        outcome.map_err(fail)
    }

    async fn forget(&self, position: usize, connection: &quinn::Connection) {
        let mut cached = self.links[position].connection.lock().await;
        if cached
            .as_ref()
            .is_some_and(|current| current.stable_id() == connection.stable_id())
        {
            *cached = None;
            connection.close(0u32.into(), b"request failed");
        }
    }

    /// The leaf certificate (DER) node `position` presented in its TLS handshake, which
    /// verified it against the cluster CA for the node's id; connects if needed.
    pub(crate) async fn peer_certificate(&self, position: usize) -> Result<Vec<u8>, NodeFailure> {
        let fail = |reason: String| NodeFailure {
            node: self.links[position].node.id.clone(),
            reason,
            code: None,
        };
        let connection = tokio::time::timeout(
            self.connect_timeout + self.connect_timeout,
            self.connection(position),
        )
        .await
        .map_err(|_| fail("no connection in time".to_owned()))?
        .map_err(fail)?;
        let certificates = connection
            .peer_identity()
            .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
            .ok_or_else(|| fail("no peer certificate".to_owned()))?;
        certificates
            .first()
            .map(|leaf| leaf.to_vec())
            .ok_or_else(|| fail("empty certificate chain".to_owned()))
    }

    async fn connection(&self, position: usize) -> Result<quinn::Connection, String> {
        let link = &self.links[position];
        let mut cached = link.connection.lock().await;
        if let Some(connection) = cached.as_ref() {
            if connection.close_reason().is_none() {
                return Ok(connection.clone());
            }
        }
        let mut last_error = String::from("no address");
        let count = link.node.addresses.len();
        let first = link.preferred.load(Ordering::Relaxed);
        for offset in 0..count {
            let at = (first + offset) % count;
            let address = link.node.addresses[at];
            match self.connect(address, &link.node.id).await {
                Ok(connection) => {
                    link.preferred.store(at, Ordering::Relaxed);
                    *cached = Some(connection.clone());
                    return Ok(connection);
                }
                Err(e) => last_error = format!("{address}: {e}"),
            }
        }
        Err(format!("cannot connect: {last_error}"))
    }

    async fn connect(
        &self,
        address: SocketAddr,
        server_name: &str,
    ) -> Result<quinn::Connection, String> {
        let connecting = self
            .endpoint
            .connect(address, server_name)
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "handshake timed out after {} ms",
                self.connect_timeout.as_millis()
            )),
        }
    }

    /// Closes every connection and waits briefly for the peers to learn of it.
    pub(crate) async fn close(&self) {
        self.endpoint.close(0u32.into(), b"client closed");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

/// One request/response exchange on a fresh stream of `connection`.
async fn exchange(connection: &quinn::Connection, frame: Bytes) -> Result<Response, String> {
    let (mut send, mut recv) = connection
        .open_bi()
        .await
        .map_err(|e| format!("cannot open a stream: {e}"))?;
    // `write_chunk` hands the frame to quinn as it is; `write_all` would copy it.
    send.write_chunk(frame)
        .await
        .map_err(|e| format!("cannot send the request: {e}"))?;
    send.finish()
        .map_err(|e| format!("cannot finish the request: {e}"))?;
    let mut prefix = [0u8; PREFIX_BYTES];
    recv.read_exact(&mut prefix)
        .await
        .map_err(|e| format!("no response: {e}"))?;
    let len = frame::body_len(prefix, FRAME_MAX_BYTES).map_err(|e| e.to_string())?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| format!("truncated response: {e}"))?;
    frame::decode_body(&body, "response").map_err(|e| e.to_string())
}

/// Why a connection ended, in words an operator can act on: a refused handshake (TLS alerts
/// travel as QUIC crypto errors 0x100 + alert) or the node's own close reason.
fn describe_close(close: &quinn::ConnectionError) -> String {
    match close {
        quinn::ConnectionError::ConnectionClosed(closed)
            if (0x100..0x200).contains(&u64::from(closed.error_code)) =>
        {
            format!(
                "the node refused this identity's TLS handshake: {} (alert {})",
                String::from_utf8_lossy(&closed.reason),
                u64::from(closed.error_code) & 0xff
            )
        }
        quinn::ConnectionError::ApplicationClosed(closed) => format!(
            "the node closed the connection: {}",
            String::from_utf8_lossy(&closed.reason)
        ),
        other => format!("connection lost: {other}"),
    }
}
