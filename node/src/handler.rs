//! Request handling: one decoded [`Request`] from one authenticated peer in, one [`Response`] out.
//!
//! No sockets here: the server hands over the request and the peer read from its verified
//! certificate, and writes back whatever this returns. That keeps the rules (who may do what,
//! which envelope belongs on this node) testable with a memory store and no network.
//!
//! [`Handler::handle`] is the one place every request passes, allowed or refused, in this
//! order: authorise, dispatch, audit. Every answer, refusals included, is appended to the audit
//! log and returned only once that entry is durable; if the entry cannot be written the answer
//! is withheld (a share is never released unaudited) and the peer gets `Unavailable`.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bunsan_protocol::envelope::ShareEnvelope;
use bunsan_protocol::message::{
    ErrorCode, NodeHealth, NodeStatus, PutOutcome, RemoteError, RepairOutcome, Request, Response,
    COMMIT_BATCH_MAX, INVENTORY_LIMIT_MAX, LIST_LIMIT_MAX, PUT_BATCH_MAX,
};
use bunsan_protocol::role::{Action, PeerIdentity};
use bunsan_protocol::seal::Openers;
use bunsan_protocol::types::RECORD_KEY_MAX_BYTES;
use bunsan_protocol::{RecordKey, ShareIndex, Version};
use rustls_pki_types::UnixTime;
use tracing::Span;

use crate::audit::{service, AuditEvent, AuditLog, Witness};
use crate::checks::Checks;
use crate::compaction::Compaction;
use crate::error::Error;
use crate::peers::Peers;
use crate::refresh::Refreshes;
use crate::repair::Repairs;
use crate::store::ShareStore;

/// The software version nodes report in health and status answers.
pub const SOFTWARE: &str = concat!("bunsan-node ", env!("CARGO_PKG_VERSION"));

/// At most this many stored entries are read to answer one list request, tombstones that are
/// filtered out included. Bounds the work of a listing over a prefix full of tombstones; the
/// answer then carries fewer entries and a `next` key to resume from.
const LIST_SCAN_MAX: usize = 4 * LIST_LIMIT_MAX as usize;

/// At most this many stored bytes are read and checked for one inventory page: the page must
/// be answered well within a request timeout even on a slow disk (64 MiB at ~20 MB/s is 3 s).
const INVENTORY_PAGE_BYTES: u64 = 64 << 20;

/// Answers requests for one node: its identity, and the store holding its shares.
pub struct Handler {
    node_id: String,
    index: ShareIndex,
    store: Arc<dyn ShareStore>,
    checks: Arc<Checks>,
    started: Instant,
    repairs: Repairs,
    refreshes: Refreshes,
    audit: Arc<AuditLog>,
    witness: Option<Arc<Witness>>,
    /// While tombstones are compacted, writes older than their retention are refused.
    compaction: Option<Compaction>,
}

impl Handler {
    /// A handler for node `node_id` holding share `index` in `store`, checking envelopes
    /// with `checks` (see [`crate::checks`]) and auditing into a fresh in-memory log without a
    /// signing key (replace it with [`Handler::with_audit`]). Must be called inside a tokio
    /// runtime (the log starts its writer task).
    pub fn new(
        node_id: impl Into<String>,
        index: ShareIndex,
        store: Arc<dyn ShareStore>,
        checks: Checks,
    ) -> Self {
        let node_id = node_id.into();
        let checks = Arc::new(checks);
        Self {
            audit: AuditLog::memory(&node_id),
            node_id,
            index,
            repairs: Repairs::new(index, store.clone(), checks.clone(), None),
            refreshes: Refreshes::new(index, store.clone(), checks.clone(), None),
            store,
            checks,
            started: Instant::now(),
            witness: None,
            compaction: None,
        }
    }

    /// Refuses puts and deletes older than `rule`'s retention: tombstones that old may have
    /// been compacted (see [`crate::compaction`]).
    pub fn with_compaction(mut self, rule: Option<Compaction>) -> Self {
        self.compaction = rule;
        self
    }

    /// Lets the handler take part in repairs and refreshes, talking to `peers`.
    pub(crate) fn with_peers(mut self, peers: Arc<Peers>) -> Self {
        let (store, checks) = (&self.store, &self.checks);
        self.repairs = Repairs::new(
            self.index,
            store.clone(),
            checks.clone(),
            Some(peers.clone()),
        );
        self.refreshes = Refreshes::new(self.index, store.clone(), checks.clone(), Some(peers));
        self
    }

    /// Audits into `audit`, and answers on-demand cosigning with `witness`.
    pub fn with_audit(mut self, audit: Arc<AuditLog>, witness: Option<Arc<Witness>>) -> Self {
        self.audit = audit;
        self.witness = witness;
        self
    }

    /// The audit log every answer goes through.
    pub fn audit(&self) -> &Arc<AuditLog> {
        &self.audit
    }

    /// Authorises `request` for `peer` and answers it. Never fails: refusals and failures are
    /// [`Response::Error`] answers, and no share is released unless every check passed.
    pub async fn handle(&self, peer: &PeerIdentity, request: Request) -> Response {
        // Refusals are logged with their key too: an attempt matters as much as an access.
        if let Some(key) = key(&request) {
            Span::current().record("key", key.as_str());
        }
        let event = AuditEvent::of_request(peer, &request);
        match request {
            Request::PutBatch { envelopes, .. }
                if peer.role.allows(Action::Put)
                    && (1..=PUT_BATCH_MAX).contains(&envelopes.len()) =>
            {
                self.put_batch(event, envelopes).await
            }
            request => {
                let response = self.decide(peer, request).await;
                self.audited(event, response).await
            }
        }
    }

    /// Audits a request that could not be read (too large, truncated, undecodable) and returns
    /// the refusal to send.
    pub async fn audit_unreadable(&self, peer: &PeerIdentity, response: Response) -> Response {
        self.audited(AuditEvent::unreadable(peer, &response), response)
            .await
    }

    /// Audits a connection refused before the peer proved an identity. Rate-limited: anyone can
    /// fail a handshake, so the excess is counted into the next entry instead of logged.
    pub async fn audit_refused_connection(&self, remote: std::net::SocketAddr, reason: &str) {
        let Some(dropped) = self.audit.refusals.take() else {
            return;
        };
        let reason = match dropped {
            0 => reason.to_owned(),
            n => format!("{reason} ({n} more refused connections not logged)"),
        };
        let event = AuditEvent::refused_connection(&remote.to_string(), &reason);
        if let Err(e) = self.audit.append(event).await {
            tracing::error!(error = %e, "cannot audit a refused connection");
        }
    }

    /// The answer, once its audit entry is durable; `Unavailable` instead if it cannot be.
    async fn audited(&self, event: AuditEvent, response: Response) -> Response {
        match self.audit.append(event.answered(&response)).await {
            Ok(_) => response,
            Err(e) => {
                tracing::error!(error = %e, "audit append failed: the answer is withheld");
                refuse(
                    ErrorCode::Unavailable,
                    "audit log unavailable; nothing was released",
                )
            }
        }
    }

    async fn decide(&self, peer: &PeerIdentity, request: Request) -> Response {
        let action = action(&request);
        if !peer.role.allows(action) {
            return refuse(
                ErrorCode::Forbidden,
                format!(
                    "role {} may not {} (certificate {:?})",
                    peer.role,
                    request.action(),
                    peer.name
                ),
            );
        }
        self.dispatch(peer, request).await
    }

    async fn dispatch(&self, peer: &PeerIdentity, request: Request) -> Response {
        match request {
            Request::Audit { query, .. } => {
                service::answer(&self.audit, self.witness.as_deref(), peer, query).await
            }
            Request::Health => Response::Health(NodeHealth {
                node_id: self.node_id.clone(),
                index: self.index,
                software: SOFTWARE.to_owned(),
            }),
            Request::Put { envelope, .. } => {
                if envelope.header.tombstone {
                    return bad_request("a put carries a share, not a tombstone; use delete");
                }
                self.store_envelope(&envelope).await
            }
            Request::PutBatch { envelopes, .. } => refuse(
                ErrorCode::BadRequest,
                format!(
                    "a put batch holds 1..={PUT_BATCH_MAX} envelopes, not {}",
                    envelopes.len()
                ),
            ),
            Request::Delete { tombstone, .. } => {
                if !tombstone.header.tombstone {
                    return bad_request("a delete carries a tombstone envelope, not a share");
                }
                self.store_envelope(&tombstone).await
            }
            Request::Get {
                key,
                purpose,
                version,
                ..
            } => {
                if purpose.is_none() {
                    return bad_request("a purpose is required to release a share");
                }
                self.release(&key, version).await
            }
            Request::Head { key, .. } => match self.store.head(&key).await {
                Ok(Some(entry)) => Response::Head(entry),
                Ok(None) => Response::NotFound,
                Err(e) => failure(&e),
            },
            Request::Commit { commits, .. } => {
                if commits.len() > COMMIT_BATCH_MAX {
                    return bad_request("a commit batch is larger than COMMIT_BATCH_MAX");
                }
                match self.store.commit_many(&commits).await {
                    Ok(dropped) => Response::Committed {
                        dropped: u32::try_from(dropped).unwrap_or(u32::MAX),
                    },
                    Err(e) => failure(&e),
                }
            }
            Request::List {
                prefix,
                start_after,
                limit,
                include_tombstones,
                ..
            } => {
                self.list(&prefix, start_after, limit, include_tombstones)
                    .await
            }
            Request::Status => match self.store.stats().await {
                Ok(stats) => Response::Status(NodeStatus {
                    node_id: self.node_id.clone(),
                    index: self.index,
                    software: SOFTWARE.to_owned(),
                    records: stats.records,
                    tombstones: stats.tombstones,
                    bytes: stats.bytes,
                    uptime_secs: self.started.elapsed().as_secs(),
                    audit_entries: self.audit.size(),
                }),
                Err(e) => failure(&e),
            },
            Request::Inventory {
                start_after, limit, ..
            } => {
                if limit == 0 {
                    return bad_request("an inventory limit must be at least 1");
                }
                let limit = limit.min(INVENTORY_LIMIT_MAX) as usize;
                match self
                    .store
                    .inventory(start_after.as_ref(), limit, INVENTORY_PAGE_BYTES)
                    .await
                {
                    Ok(page) => Response::Inventory {
                        next: match page.exhausted {
                            true => None,
                            false => page.entries.last().map(|e| e.key.clone()),
                        },
                        entries: page.entries,
                    },
                    Err(e) => failure(&e),
                }
            }
            Request::Repair { request_id, plan } => {
                self.repairs.help(&self.audit, request_id, plan).await
            }
            Request::Contribute {
                request_id,
                contribution,
            } => {
                self.repairs
                    .receive(&self.audit, peer, request_id, contribution)
                    .await
            }
            Request::RefreshStage { request_id, plan } => {
                self.refreshes.stage(request_id, plan).await
            }
            Request::RefreshDeal {
                plan, from, delta, ..
            } => self.refreshes.deal(peer, plan, from, delta),
            Request::RefreshCommit {
                refresh_id,
                key,
                seal,
                ..
            } => self.refreshes.commit(refresh_id, &key, seal).await,
            Request::RefreshAbort {
                refresh_id, key, ..
            } => self.refreshes.abort(refresh_id, &key).await,
        }
    }

    /// The answer to a get: the head with the versions kept under it, or exactly `version`.
    /// Only the envelope asked for leaves the node; older versions are named, not sent.
    async fn release(&self, key: &RecordKey, version: Option<Version>) -> Response {
        let held = match version {
            None => self.store.get_held(key).await,
            Some(version) => self
                .store
                .get_version(key, version)
                .await
                .map(|found| found.map(|envelope| (envelope, Vec::new()))),
        };
        match held {
            Ok(Some((envelope, _))) if envelope.index != self.index => refuse(
                ErrorCode::Corrupt,
                format!(
                    "stored share for {key} has index {} but this node holds index {}",
                    envelope.index, self.index
                ),
            ),
            Ok(Some((envelope, older))) => match Checks::release(&envelope) {
                Ok(()) if older.is_empty() => Response::Share(envelope),
                Ok(()) => Response::ShareWithOlder { envelope, older },
                Err(refusal) => Response::Error(refusal),
            },
            Ok(None) => Response::NotFound,
            Err(e) => failure(&e),
        }
    }

    async fn store_envelope(&self, envelope: &ShareEnvelope) -> Response {
        if let Some(refusal) = self.refusal(envelope, UnixTime::now(), &mut Openers::default()) {
            return refusal;
        }
        match self.store.put(envelope).await {
            Ok(outcome) => Response::Stored(outcome),
            Err(e) => failure(&e),
        }
    }

    /// Why `envelope` may not be stored at `now`, if it may not: addressed to another node, too
    /// old for the tombstone retention, or failing its checks ([`Checks::admit`]).
    fn refusal(
        &self,
        envelope: &ShareEnvelope,
        now: UnixTime,
        openers: &mut Openers,
    ) -> Option<Response> {
        if envelope.index != self.index {
            return Some(refuse(
                ErrorCode::WrongNode,
                format!(
                    "this is {} holding share index {}, but the envelope is for index {}",
                    self.node_id, self.index, envelope.index
                ),
            ));
        }
        if let Some(rule) = &self.compaction {
            if !rule.admits(envelope.header.version, SystemTime::now()) {
                return Some(refuse(
                    ErrorCode::BadRequest,
                    format!(
                        "version {} is older than the tombstone retention ({} s): a write this \
                         late could bring back a record whose tombstone was compacted",
                        envelope.header.version,
                        rule.retention.as_secs()
                    ),
                ));
            }
        }
        // The node reads the clock (its caller does), not the protocol core: certificates must
        // be valid now for a write to be accepted.
        self.checks
            .admit(envelope, self.index, now, openers)
            .err()
            .map(Response::Error)
    }

    /// One page of the inventory. Reads the store in chunks until `limit` entries passed the
    /// tombstone filter, the prefix is exhausted, or [`LIST_SCAN_MAX`] entries were read.
    async fn list(
        &self,
        prefix: &str,
        mut start_after: Option<RecordKey>,
        limit: u32,
        include_tombstones: bool,
    ) -> Response {
        if prefix.len() > RECORD_KEY_MAX_BYTES {
            return bad_request("the prefix is longer than a record key may be");
        }
        if limit == 0 {
            return bad_request("a list limit must be at least 1");
        }
        let limit = limit.min(LIST_LIMIT_MAX) as usize;
        let mut entries = Vec::new();
        let mut scanned = 0;
        loop {
            // One more than needed, to tell whether another page follows.
            let want = limit + 1 - entries.len();
            let chunk = match self.store.list(prefix, start_after.as_ref(), want).await {
                Ok(chunk) => chunk,
                Err(e) => return failure(&e),
            };
            let exhausted = chunk.len() < want;
            scanned += chunk.len();
            start_after = chunk.last().map(|e| e.key.clone()).or(start_after);
            entries.extend(
                chunk
                    .into_iter()
                    .filter(|e| include_tombstones || !e.tombstone),
            );
            if entries.len() > limit {
                entries.truncate(limit);
                let next = entries.last().map(|e| e.key.clone());
                return Response::Listing { entries, next };
            }
            if exhausted {
                return Response::Listing {
                    entries,
                    next: None,
                };
            }
            if scanned >= LIST_SCAN_MAX {
                return Response::Listing {
                    entries,
                    next: start_after,
                };
            }
        }
    }
}

/// The authorisation action a request asks for.
pub fn action(request: &Request) -> Action {
    match request {
        Request::Health => Action::Health,
        Request::Put { .. } | Request::PutBatch { .. } => Action::Put,
        // A version probe tells what a reader may read: the same right as the read itself.
        Request::Get { .. } | Request::Head { .. } => Action::Get,
        Request::Delete { .. } => Action::Delete,
        Request::Commit { .. } => Action::Commit,
        Request::List { .. } => Action::List,
        Request::Status => Action::Status,
        Request::Inventory { .. } => Action::Inventory,
        Request::Repair { .. }
        | Request::RefreshStage { .. }
        | Request::RefreshCommit { .. }
        | Request::RefreshAbort { .. } => Action::Maintain,
        Request::Contribute { .. } | Request::RefreshDeal { .. } => Action::Contribute,
        Request::Audit { query, .. } => query.action(),
    }
}

/// A short label of a response for logs: `stored`, `released`, `forbidden`, ...
pub fn outcome(response: &Response) -> &'static str {
    match response {
        Response::Health(_) => "health",
        Response::StoredBatch(_) => "stored-batch",
        Response::Stored(PutOutcome::Stored) => "stored",
        Response::Stored(PutOutcome::StoredKeepingOlder { .. }) => "stored-keeping-older",
        Response::Stored(PutOutcome::AlreadyStored) => "already-stored",
        Response::Stored(PutOutcome::Superseded { .. }) => "superseded",
        Response::Share(envelope) if envelope.header.tombstone => "tombstone",
        Response::Share(_) | Response::ShareWithOlder { .. } => "released",
        Response::Committed { .. } => "committed",
        Response::NotFound => "not-found",
        Response::Listing { .. } => "listed",
        Response::Status(_) => "status",
        Response::Inventory { .. } => "inventory",
        Response::Repaired(RepairOutcome::Stored(_)) => "repaired",
        Response::Repaired(RepairOutcome::Unconfirmed) => "repair-unconfirmed",
        Response::Staged { .. } => "staged",
        Response::DealAccepted => "deal-accepted",
        Response::Aborted => "aborted",
        Response::Audit(_) => "audit",
        Response::Head(_) => "head",
        Response::Error(error) => match error.code {
            ErrorCode::BadRequest => "bad-request",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TooLarge => "too-large",
            ErrorCode::WrongNode => "wrong-node",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Busy => "busy",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Corrupt => "corrupt",
            ErrorCode::BadSignature => "bad-signature",
            ErrorCode::BadCommitment => "bad-commitment",
        },
    }
}

/// The record a request is about, if any.
fn key(request: &Request) -> Option<&RecordKey> {
    match request {
        Request::Put { envelope, .. } => Some(&envelope.header.key),
        Request::Delete { tombstone, .. } => Some(&tombstone.header.key),
        Request::Get { key, .. } | Request::Head { key, .. } => Some(key),
        Request::Commit { commits, .. } => match commits.as_slice() {
            [(key, _)] => Some(key),
            _ => None,
        },
        Request::Repair { plan, .. } => Some(&plan.key),
        Request::Contribute { contribution, .. } => Some(&contribution.plan.key),
        Request::RefreshStage { plan, .. } | Request::RefreshDeal { plan, .. } => Some(&plan.key),
        Request::RefreshCommit { key, .. } | Request::RefreshAbort { key, .. } => Some(key),
        Request::Health
        | Request::PutBatch { .. }
        | Request::List { .. }
        | Request::Status
        | Request::Inventory { .. }
        | Request::Audit { .. } => None,
    }
}

/// An error answer.
pub(crate) fn refuse(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error(RemoteError {
        code,
        message: message.into(),
    })
}

fn bad_request(message: &str) -> Response {
    refuse(ErrorCode::BadRequest, message)
}

/// Maps a store failure to an answer; storage internals go to the log, not to the peer.
pub(crate) fn failure(error: &Error) -> Response {
    match error {
        Error::Conflict { .. } => refuse(ErrorCode::Conflict, error.to_string()),
        Error::Corrupt { .. } => refuse(ErrorCode::Corrupt, error.to_string()),
        Error::Protocol(e) => refuse(ErrorCode::BadRequest, e.to_string()),
        other => {
            tracing::error!(error = %other, "storage failure");
            refuse(
                ErrorCode::Unavailable,
                "storage failure; nothing was released",
            )
        }
    }
}

#[cfg(test)]
#[path = "handler_tests.rs"]
pub(crate) mod tests;

#[path = "handler_batch.rs"]
mod batch;
