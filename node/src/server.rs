//! The QUIC shell around [`Handler`]: accept connections, identify peers, frame requests.
//!
//! One connection per peer; its verified certificate decides its role for every request on
//! it. One bidirectional stream per request: a length-prefixed [`Request`] frame in, one
//! [`Response`] frame out, then the stream is finished. Whatever a peer sends, the answer is a
//! response or a closed stream, never a panic, and other streams and connections carry on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bunsan_client::tls::quic_server_config;
use bunsan_protocol::frame::{self, FRAME_MAX_BYTES, PREFIX_BYTES};
use bunsan_protocol::message::{ErrorCode, Request, Response};
use bunsan_protocol::role::PeerIdentity;
use quinn::{Connection, Endpoint, Incoming, ReadExactError, RecvStream, SendStream, VarInt};
use rustls_pki_types::CertificateDer;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{field, Instrument};

use crate::config::Limits;
use crate::error::{Error, Result};
use crate::handler::{outcome, refuse, Handler};
use crate::revocation::{Revocation, CLOSE_REVOKED};

/// Connection close code: the node is shutting down.
const CLOSE_SHUTDOWN: VarInt = VarInt::from_u32(0);
/// Connection close code: the peer's certificate carries no usable role.
const CLOSE_NO_ROLE: VarInt = VarInt::from_u32(1);
/// Stream error code: the request took longer than `request_timeout_ms`.
const STREAM_TIMEOUT: VarInt = VarInt::from_u32(1);
/// Stream error code: the request frame is too large, so the node stopped reading it.
const STREAM_TOO_LARGE: VarInt = VarInt::from_u32(2);

/// Builds the QUIC server configuration: Bunsan's TLS policy (`tls`, from
/// `bunsan_client::tls` with the node's CRL) and the configured limits.
pub(crate) fn server_config(
    limits: &Limits,
    tls: rustls::ServerConfig,
) -> Result<quinn::ServerConfig> {
    let mut server = quic_server_config(tls)?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(limits.max_concurrent_streams))
        // Requests are bidirectional; a uni stream would be state a peer could pile up.
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .max_idle_timeout(Some(
            Duration::from_millis(limits.idle_timeout_ms)
                .try_into()
                .map_err(|_| Error::Config {
                    path: "<config>".into(),
                    reason: "limits.idle_timeout_ms is out of range".to_owned(),
                })?,
        ));
    server.transport_config(Arc::new(transport));
    // Handshakes in progress count against the same budget as established connections.
    server.max_incoming(limits.max_connections as usize);
    Ok(server)
}

/// What every connection task shares.
pub(crate) struct Shared {
    pub(crate) handler: Handler,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    pub(crate) limits: Limits,
    /// Permits are bytes of request bodies being buffered (see `max_inflight_request_bytes`).
    pub(crate) inflight_bytes: Semaphore,
    /// The CRL in force, and the live connections it is applied to on every reload.
    pub(crate) revocation: Arc<Revocation>,
}

/// Accepts connections until `shutdown` turns true, then stops accepting, lets every
/// connection finish its in-flight requests, and returns.
pub(crate) async fn accept_loop(
    endpoint: Endpoint,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    let mut stopped = shutdown.clone();
    let slots = Arc::new(Semaphore::new(shared.limits.max_connections as usize));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.wait_for(|&stop| stop) => break,
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(remote = %incoming.remote_address(), "connection refused: at max_connections");
                    incoming.refuse();
                    continue;
                };
                let span = tracing::info_span!("connection", remote = %incoming.remote_address(),
                    peer = field::Empty, role = field::Empty);
                let (shared, shutdown) = (shared.clone(), shutdown.clone());
                connections.spawn(
                    async move {
                        serve_connection(incoming, shared, shutdown).await;
                        drop(slot);
                    }
                    .instrument(span),
                );
            }
            Some(done) = connections.join_next(), if !connections.is_empty() => log_panic(done),
        }
    }
    // Refuse new handshakes at once instead of leaving them queued unanswered.
    endpoint.set_server_config(None);
    while let Some(done) = connections.join_next().await {
        log_panic(done);
    }
}

fn log_panic(done: std::result::Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        tracing::error!(error = %e, "a connection or request task failed");
    }
}

async fn serve_connection(
    incoming: Incoming,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let remote = incoming.remote_address();
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(e) => {
            tracing::info!(error = %e, "handshake failed");
            let reason = format!("handshake failed: {e}");
            shared
                .handler
                .audit_refused_connection(remote, &reason)
                .await;
            return;
        }
    };
    let peer = match peer_identity(&connection) {
        Ok(peer) => Arc::new(peer),
        Err(reason) => {
            tracing::warn!(%reason, "connection refused: no usable role");
            let audited = format!("no usable role: {reason}");
            shared
                .handler
                .audit_refused_connection(remote, &audited)
                .await;
            connection.close(CLOSE_NO_ROLE, format!("refused: {reason}").as_bytes());
            return;
        }
    };
    let _open = shared.metrics.connection_opened();
    let span = tracing::Span::current();
    span.record("peer", peer.name.as_str());
    span.record("role", peer.role.as_str());
    // Held until the connection ends: a CRL reload closes it if its certificate is revoked.
    let _admitted = match shared.revocation.admit(&connection, &peer) {
        Ok(admitted) => admitted,
        Err(reason) => {
            tracing::warn!(%reason, "connection refused: certificate no longer accepted");
            connection.close(CLOSE_REVOKED, reason.as_bytes());
            return;
        }
    };
    tracing::debug!("connection established");
    let mut requests = JoinSet::new();
    let shutting_down = loop {
        tokio::select! {
            _ = shutdown.wait_for(|&stop| stop) => break true,
            stream = connection.accept_bi() => match stream {
                Ok((send, recv)) => {
                    let span = tracing::info_span!("request", stream = send.id().index(),
                        action = field::Empty, key = field::Empty);
                    requests.spawn(serve_stream(send, recv, peer.clone(), shared.clone()).instrument(span));
                }
                Err(e) => {
                    tracing::debug!(reason = %e, "connection ended");
                    break false;
                }
            },
            Some(done) = requests.join_next(), if !requests.is_empty() => log_panic(done),
        }
    };
    // In-flight requests finish (each within request_timeout_ms) before the connection closes.
    while let Some(done) = requests.join_next().await {
        log_panic(done);
    }
    if shutting_down {
        connection.close(CLOSE_SHUTDOWN, b"node shutting down");
    }
}

/// The verified peer's identity; the TLS layer already checked the chain to the cluster CA.
fn peer_identity(connection: &Connection) -> std::result::Result<PeerIdentity, String> {
    let certificates = connection
        .peer_identity()
        .ok_or("no client certificate")?
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| "unexpected peer identity type")?;
    let leaf = certificates.first().ok_or("empty certificate chain")?;
    PeerIdentity::from_certificate(leaf).map_err(|e| e.to_string())
}

/// Why a stream ended without a complete answer (transport failures; nothing to answer).
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("read: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("write: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("stream already closed")]
    Closed(#[from] quinn::ClosedStream),
    #[error("the node is shutting down")]
    ShuttingDown,
    #[error("cannot encode the response: {0}")]
    Encode(bunsan_protocol::Error),
}

async fn serve_stream(
    mut send: SendStream,
    mut recv: RecvStream,
    peer: Arc<PeerIdentity>,
    shared: Arc<Shared>,
) {
    let started = Instant::now();
    let timeout = Duration::from_millis(shared.limits.request_timeout_ms);
    // Set by `exchange` once the frame decoded; metrics label requests that never did so.
    let mut action = "undecoded";
    let exchange = exchange(&mut send, &mut recv, &peer, &shared, &mut action);
    let result = tokio::time::timeout(timeout, exchange).await;
    let outcome = match &result {
        Ok(Ok(outcome)) => *outcome,
        Ok(Err(_)) => "stream-failed",
        Err(_) => "timeout",
    };
    shared
        .metrics
        .observe_request(action, peer.role, outcome, started.elapsed());
    match result {
        Ok(Ok(outcome)) => {
            let duration_ms = started.elapsed().as_millis() as u64;
            tracing::info!(outcome, duration_ms, "request served");
            // Keep the stream until the peer has the whole answer, so a shutdown right after
            // does not cut it off; a peer that vanished gets one more request timeout.
            let _ = tokio::time::timeout(timeout, send.stopped()).await;
        }
        Ok(Err(e)) => tracing::info!(error = %e, "stream failed"),
        Err(_) => {
            tracing::warn!(
                timeout_ms = shared.limits.request_timeout_ms,
                "request timed out"
            );
            let _ = send.reset(STREAM_TIMEOUT);
            let _ = recv.stop(STREAM_TIMEOUT);
        }
    }
}

/// Reads one request frame, answers it, and returns the outcome label.
async fn exchange(
    send: &mut SendStream,
    recv: &mut RecvStream,
    peer: &PeerIdentity,
    shared: &Shared,
    action: &mut &'static str,
) -> std::result::Result<&'static str, StreamError> {
    // Requests that cannot be read are refused, and audited like any other refusal.
    let unreadable = |response| shared.handler.audit_unreadable(peer, response);
    let mut prefix = [0u8; PREFIX_BYTES];
    if let Some(early) = read_frame_part(recv, &mut prefix).await? {
        return respond(send, &unreadable(early).await).await;
    }
    let len = match frame::body_len(prefix, FRAME_MAX_BYTES) {
        Ok(len) => len,
        Err(e) => {
            // Tell the peer to stop sending the body we will not read.
            let _ = recv.stop(STREAM_TOO_LARGE);
            let refusal = unreadable(refuse(ErrorCode::TooLarge, e.to_string())).await;
            return respond(send, &refusal).await;
        }
    };
    // Wait for room before buffering the body. The frame limit fits u32, and the config check
    // keeps the semaphore at least one frame large, so this cannot wait forever.
    let _permit = shared
        .inflight_bytes
        .acquire_many(len as u32)
        .await
        .map_err(|_| StreamError::ShuttingDown)?;
    let mut body = vec![0u8; len];
    if let Some(early) = read_frame_part(recv, &mut body).await? {
        return respond(send, &unreadable(early).await).await;
    }
    let response = match frame::decode_body::<Request>(&body, "request") {
        Ok(request) => {
            drop(body);
            *action = request.action();
            tracing::Span::current().record("action", request.action());
            let response = shared.handler.handle(peer, request).await;
            if let Response::StoredBatch(outcomes) = &response {
                // Operators count puts whether or not they came batched: each envelope is
                // counted as the put it is (the request itself is counted as `put-batch`).
                for answer in outcomes {
                    let answer = match answer {
                        Ok(stored) => Response::Stored(*stored),
                        Err(error) => Response::Error(error.clone()),
                    };
                    shared
                        .metrics
                        .count_request("put", peer.role, outcome(&answer));
                }
            }
            response
        }
        Err(e) => {
            unreadable(refuse(
                ErrorCode::BadRequest,
                format!("cannot decode the request: {e}"),
            ))
            .await
        }
    };
    respond(send, &response).await
}

/// Fills `buf` from the stream; a stream finished too early gets a BadRequest answer.
async fn read_frame_part(
    recv: &mut RecvStream,
    buf: &mut [u8],
) -> std::result::Result<Option<Response>, StreamError> {
    match recv.read_exact(buf).await {
        Ok(()) => Ok(None),
        Err(ReadExactError::FinishedEarly(got)) => Ok(Some(refuse(
            ErrorCode::BadRequest,
            format!(
                "truncated frame: the stream ended after {got} of {} bytes",
                buf.len()
            ),
        ))),
        Err(ReadExactError::ReadError(e)) => Err(e.into()),
    }
}

/// Writes one response frame and finishes the stream.
async fn respond(
    send: &mut SendStream,
    response: &Response,
) -> std::result::Result<&'static str, StreamError> {
    let bytes = match frame::encode(response, "response") {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a response");
            let fallback = refuse(
                ErrorCode::Unavailable,
                "the node could not encode its answer",
            );
            frame::encode(&fallback, "response").map_err(StreamError::Encode)?
        }
    };
    // `write_chunk` hands the frame to quinn as it is; `write_all` would copy a whole share.
    send.write_chunk(bytes.into()).await?;
    send.finish()?;
    Ok(outcome(response))
}
