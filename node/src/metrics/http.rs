//! The metrics endpoint: plain HTTP/1.1 on the configured address, `GET /metrics` only.
//!
//! It is deliberately small: no TLS and no authentication (it shows counts, never keys or
//! shares), so it must listen on loopback or a management network only, which is what
//! `[metrics] listen` says (see docs/CONFIGURATION.md). Every connection is bounded in
//! number and time, so a scraper that hangs or a local process that opens sockets in a loop
//! cannot tie the node up; the QUIC service does not depend on this task at all.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::Metrics;
use crate::audit::AuditLog;
use crate::store::ShareStore;

/// What a scrape reads besides the counters kept in [`Metrics`].
pub(crate) struct Sources {
    /// The share store, for its record and byte counts.
    pub(crate) store: Arc<dyn ShareStore>,
    /// The audit log, for its head and the age of its last checkpoint.
    pub(crate) audit: Arc<AuditLog>,
}

/// Scrapes served at once. Prometheus scrapes each target once per interval; a handful of
/// slots covers a second scraper and a curl, and caps what a local process can hold open.
const MAX_CONNECTIONS: usize = 8;

/// The longest one HTTP connection may live (one request each: keep-alive is off). A scrape
/// answers in microseconds; this only bounds a client that connects and sends nothing.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The pause after a failed `accept` (out of file descriptors, usually) before the next.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The OpenMetrics text content type, which Prometheus negotiates and parses natively.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` on `listener` until `stop` turns true. The store's counters and the
/// audit head are read at every scrape, so the gauges are never staler than the scrape itself.
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    sources: Arc<Sources>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            // The watch guard is dropped inside, so the select output holds no lock.
            () = async { let _ = stop.wait_for(|&stop| stop).await; } => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _remote)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics endpoint: accept failed");
                        tokio::time::sleep(ACCEPT_RETRY).await;
                        continue;
                    }
                };
                // Over the limit: close at once, the scraper retries at its next interval.
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else { continue };
                let (metrics, sources) = (Arc::clone(&metrics), Arc::clone(&sources));
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        answer(request, Arc::clone(&metrics), Arc::clone(&sources))
                    });
                    let mut builder = http1::Builder::new();
                    builder.keep_alive(false);
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::debug!(error = %e, "metrics connection failed"),
                        Err(_) => tracing::debug!("metrics connection timed out"),
                    }
                    drop(slot);
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.abort_all();
}

async fn answer(
    request: Request<Incoming>,
    metrics: Arc<Metrics>,
    sources: Arc<Sources>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = request.method();
    if request.uri().path() != "/metrics" {
        return Ok(plain(
            StatusCode::NOT_FOUND,
            "bunsan-node serves its metrics at /metrics\n",
        ));
    }
    if method != Method::GET && method != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(response);
    }
    // The newest entry's sequence number; an empty log publishes nothing (0 would claim an
    // entry).
    if let Some(newest) = sources.audit.size().checked_sub(1) {
        metrics.set_audit_head(newest, sources.audit.last_checkpoint());
    }
    match sources.store.stats().await {
        Ok(stats) => metrics.set_store_stats(&stats),
        // The request metrics are still worth serving; the store gauges keep their last value
        // and the error is in the log.
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read the store counters"),
    }
    let mut response = Response::new(Full::new(Bytes::from(metrics.encode())));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
    Ok(response)
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
