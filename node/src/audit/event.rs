//! From a request and its answer to an audit event: who asked what, about which record and
//! version, why, and what the node did.

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use bunsan_protocol::audit::{bounded, Actor, Outcome, ACTION_CONNECT, ACTION_MALFORMED};
use bunsan_protocol::message::{ErrorCode, PutOutcome, RepairOutcome, Request, Response};
use bunsan_protocol::role::PeerIdentity;
use bunsan_protocol::{Purpose, RecordKey, RequestId, Version};

/// An audit entry before the log numbers and dates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Who asked.
    pub actor: Actor,
    /// What was asked (the request's action name).
    pub action: String,
    /// The record concerned.
    pub key: Option<RecordKey>,
    /// The version concerned.
    pub version: Option<Version>,
    /// The stated purpose (gets).
    pub purpose: Option<Purpose>,
    /// The client's operation id.
    pub request_id: Option<RequestId>,
    /// What the node did.
    pub outcome: Outcome,
}

impl AuditEvent {
    /// The facts of `request` from `peer`, before it is answered.
    pub fn of_request(peer: &PeerIdentity, request: &Request) -> Self {
        let mut event = AuditEvent {
            actor: Actor::of(peer),
            action: request.action().to_owned(),
            key: None,
            version: None,
            purpose: None,
            request_id: None,
            outcome: Outcome::Allowed,
        };
        match request {
            Request::Put {
                request_id,
                envelope,
            }
            | Request::Delete {
                request_id,
                tombstone: envelope,
            } => {
                event.key = Some(envelope.header.key.clone());
                event.version = Some(envelope.header.version);
                event.request_id = Some(*request_id);
            }
            Request::Get {
                request_id,
                key,
                purpose,
                version,
            } => {
                event.key = Some(key.clone());
                event.purpose = purpose.clone();
                event.version = *version;
                event.request_id = Some(*request_id);
            }
            Request::Head { request_id, key } => {
                event.key = Some(key.clone());
                event.request_id = Some(*request_id);
            }
            Request::Commit {
                request_id,
                commits,
            } => {
                // A batch of one names its record; a larger batch only its size in the action.
                if let [(key, version)] = commits.as_slice() {
                    event.key = Some(key.clone());
                    event.version = Some(*version);
                }
                event.request_id = Some(*request_id);
            }
            Request::List { request_id, .. }
            | Request::PutBatch { request_id, .. }
            | Request::Audit { request_id, .. }
            | Request::Inventory { request_id, .. } => {
                event.request_id = Some(*request_id);
            }
            Request::Repair { request_id, plan } => {
                event.key = Some(plan.key.clone());
                event.version = Some(plan.version);
                event.request_id = Some(*request_id);
            }
            Request::Contribute {
                request_id,
                contribution,
            } => {
                event.key = Some(contribution.plan.key.clone());
                event.version = Some(contribution.plan.version);
                event.request_id = Some(*request_id);
            }
            Request::RefreshStage { request_id, plan }
            | Request::RefreshDeal {
                request_id, plan, ..
            } => {
                event.key = Some(plan.key.clone());
                event.version = Some(plan.version);
                event.request_id = Some(*request_id);
            }
            Request::RefreshCommit {
                request_id, key, ..
            }
            | Request::RefreshAbort {
                request_id, key, ..
            } => {
                event.key = Some(key.clone());
                event.request_id = Some(*request_id);
            }
            Request::Health | Request::Status => {}
        }
        event
    }

    /// Sets the outcome (and the version released or found) from the answer.
    pub fn answered(mut self, response: &Response) -> Self {
        self.outcome = match response {
            Response::Share(envelope) | Response::ShareWithOlder { envelope, .. } => {
                self.version = Some(envelope.header.version);
                if envelope.header.tombstone {
                    Outcome::NotFound
                } else {
                    Outcome::Released
                }
            }
            Response::NotFound => Outcome::NotFound,
            Response::Head(entry) => {
                self.version = Some(entry.version);
                Outcome::Allowed
            }
            Response::Stored(PutOutcome::Stored | PutOutcome::StoredKeepingOlder { .. }) => {
                Outcome::Stored
            }
            Response::Stored(PutOutcome::AlreadyStored) => Outcome::AlreadyStored,
            Response::Stored(PutOutcome::Superseded { .. })
            | Response::Repaired(RepairOutcome::Stored(PutOutcome::Superseded { .. })) => {
                Outcome::Superseded
            }
            Response::Repaired(RepairOutcome::Stored(
                PutOutcome::Stored | PutOutcome::StoredKeepingOlder { .. },
            )) => Outcome::Stored,
            Response::Repaired(RepairOutcome::Stored(PutOutcome::AlreadyStored)) => {
                Outcome::AlreadyStored
            }
            Response::Error(error) => Outcome::error(error.code, &error.message),
            _ => Outcome::Allowed,
        };
        self
    }

    /// A node-to-node step of a repair or refresh that this node takes on its own behalf:
    /// `repair-release` (a helper sends its masked contribution, logged before it leaves),
    /// `repair-store` (a target stores a regenerated share).
    pub fn maintenance(
        action: &str,
        key: &RecordKey,
        version: Version,
        request_id: RequestId,
        outcome: Outcome,
    ) -> Self {
        AuditEvent {
            actor: Actor::Node,
            action: action.to_owned(),
            key: Some(key.clone()),
            version: Some(version),
            purpose: None,
            request_id: Some(request_id),
            outcome,
        }
    }

    /// A request that could not be read, from an authenticated peer.
    pub fn unreadable(peer: &PeerIdentity, response: &Response) -> Self {
        let outcome = match response {
            Response::Error(error) => Outcome::error(error.code, &error.message),
            _ => Outcome::error(ErrorCode::BadRequest, "unreadable request"),
        };
        AuditEvent {
            actor: Actor::of(peer),
            action: ACTION_MALFORMED.to_owned(),
            key: None,
            version: None,
            purpose: None,
            request_id: None,
            outcome,
        }
    }

    /// A connection refused before the peer proved an identity.
    pub fn refused_connection(remote: &str, reason: &str) -> Self {
        AuditEvent {
            actor: Actor::Unauthenticated {
                remote: bounded(remote),
            },
            action: ACTION_CONNECT.to_owned(),
            key: None,
            version: None,
            purpose: None,
            request_id: None,
            outcome: Outcome::error(ErrorCode::Forbidden, reason),
        }
    }
}

/// Unauthenticated refusals logged per second, sustained, and in a burst. Anyone on the network
/// can fail a handshake, so without a limit anyone could fill a node's audit log (and disk);
/// refusals over the budget are counted and the count is written into the next logged one.
const REFUSALS_PER_SEC: f64 = 20.0;
const REFUSAL_BURST: f64 = 200.0;

/// A token bucket for unauthenticated refusals.
pub(crate) struct RefusalBudget {
    state: Mutex<(f64, Instant, u64)>,
}

impl RefusalBudget {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new((REFUSAL_BURST, Instant::now(), 0)),
        }
    }

    /// `Some(n)` when this refusal may be logged (`n` refusals were dropped since the last one
    /// logged); `None` when it is over budget (and counted).
    pub(crate) fn take(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (tokens, last, suppressed) = &mut *state;
        let now = Instant::now();
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * REFUSALS_PER_SEC)
            .min(REFUSAL_BURST);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Some(std::mem::take(suppressed))
        } else {
            *suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_budget_counts_what_it_drops() {
        let budget = RefusalBudget::new();
        let logged = (0..1000).filter(|_| budget.take().is_some()).count();
        assert!(
            (REFUSAL_BURST as usize..REFUSAL_BURST as usize + 20).contains(&logged),
            "{logged}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
        let dropped = budget.take().expect("refilled");
        assert!(dropped >= 700, "{dropped}");
    }
}
