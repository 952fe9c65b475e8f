//! Repair on a node: as a helper, compute and send a masked contribution; as the target, sum
//! the k contributions, check the result, and store it.
//!
//! ```text
//!  admin ──Repair{plan}──▶ helper i ──Contribute{c_i}──▶ target t ── Σ c_i = y_t ── check ── put
//!        ◀─Repaired(outcome)──────── ◀─Repaired(outcome)── (every helper gets the same answer)
//! ```
//!
//! The target keeps one running XOR per repair (one share length of memory), bounded in number
//! and bytes, and answers every helper once the last contribution is in, or after
//! [`CONTRIBUTION_WAIT`] with a timeout. The helpers' masks come from pairwise ECDH agreements
//! (see `bunsan_protocol::repair`), so the admin never sees share bytes and the target sees
//! only masked pieces.
//!
//! Checking the result: the header's writer signature (and a refresh seal) must verify, and the
//! share must match its commitment c_t with nonce_t, which the target opens from the sealed
//! nonce in the envelope with its own key. A node rebuilt under a new key cannot open it: it
//! stores the share only once two different helper sets gave the same result, without a nonce
//! (so it does not release it until a refresh commits it anew). Until then the target keeps
//! only a keyed fingerprint of the candidate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bunsan_protocol::audit::Outcome;
use bunsan_protocol::batch::{BatchProof, BATCH_FORMAT};
use bunsan_protocol::envelope::{RecordHeader, ShareEnvelope, ENVELOPE_FORMAT};
use bunsan_protocol::integrity::WriterSignature;
use bunsan_protocol::message::PutOutcome;
use bunsan_protocol::message::{
    Contribution, ErrorCode, RemoteError, RepairOutcome, Request, Response,
};
use bunsan_protocol::refresh::RefreshSeal;
use bunsan_protocol::repair::{self, Accumulator, RepairPlan, SessionId};
use bunsan_protocol::{RecordKey, RequestId, ShareIndex, Version};
use rustls_pki_types::UnixTime;
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::audit::{AuditEvent, AuditLog};
use crate::checks::Checks;
use crate::handler::{failure, refuse};
use crate::peers::Peers;
use crate::store::ShareStore;

/// How long a target waits, from the first contribution of a repair, for the others. The
/// helpers compute in parallel, so the spread is one round trip plus one share's arithmetic.
pub(crate) const CONTRIBUTION_WAIT: Duration = Duration::from_secs(10);

/// Repairs a target collects at once; more are refused with `Busy` (the admin retries).
const PENDING_MAX: usize = 64;

/// Bytes of running sums held at once: a few of the largest shares.
const PENDING_BYTES_MAX: u64 = 512 << 20;

/// Unconfirmed candidates kept, and for how long: the admin runs the confirming repair right
/// after the first, so minutes are plenty.
const CANDIDATES_MAX: usize = 10_000;
const CANDIDATE_TTL: Duration = Duration::from_secs(600);

/// One node's repair state: what it helps with, what it collects.
pub(crate) struct Repairs {
    index: ShareIndex,
    store: Arc<dyn ShareStore>,
    checks: Arc<Checks>,
    peers: Option<Arc<Peers>>,
    sessions: Mutex<Sessions>,
    /// Keys the candidate fingerprints, so a node never keeps a plain hash of a share.
    fingerprint_key: [u8; 32],
}

#[derive(Default)]
struct Sessions {
    pending: HashMap<SessionId, Pending>,
    pending_bytes: u64,
    candidates: HashMap<(RecordKey, Version, u32), Candidate>,
}

struct Pending {
    plan: RepairPlan,
    request_id: RequestId,
    dealing: Dealing,
    acc: Accumulator,
    deadline: Instant,
    done: watch::Sender<Option<Response>>,
}

struct Candidate {
    helpers: Vec<ShareIndex>,
    fingerprint: [u8; 32],
    seen: Instant,
}

/// The public part of the envelope every contribution of one repair must carry identically.
#[derive(Clone, PartialEq, Eq)]
struct Dealing {
    header: RecordHeader,
    signature: WriterSignature,
    batch: Option<BatchProof>,
    refresh: Option<Box<RefreshSeal>>,
}

/// Whether a regenerated share could be checked against its commitment.
enum Check {
    /// It matches c_t.
    Verified,
    /// There is nothing this node can check it against.
    Unverifiable,
    /// It does not match: at least one helper's share is bad.
    Failed(String),
}

impl Repairs {
    pub(crate) fn new(
        index: ShareIndex,
        store: Arc<dyn ShareStore>,
        checks: Arc<Checks>,
        peers: Option<Arc<Peers>>,
    ) -> Self {
        let mut fingerprint_key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut fingerprint_key);
        Self {
            index,
            store,
            checks,
            peers,
            sessions: Mutex::new(Sessions::default()),
            fingerprint_key,
        }
    }

    fn peers(&self) -> Result<&Peers, RemoteError> {
        self.peers.as_deref().ok_or_else(|| RemoteError {
            code: ErrorCode::Unavailable,
            message: "this node has no cluster manifest (node.toml key `cluster`), so it \
                          cannot take part in repairs"
                .to_owned(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Sessions> {
        // Every mutation leaves the maps consistent between statements, so a poisoned lock is
        // still safe to use.
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Helper side of [`Request::Repair`]: compute this node's masked contribution and send it
    /// to the target, answering with the target's answer.
    pub(crate) async fn help(
        &self,
        audit: &AuditLog,
        request_id: RequestId,
        plan: RepairPlan,
    ) -> Response {
        let peers = match self.peers() {
            Ok(peers) => peers,
            Err(refusal) => return Response::Error(refusal),
        };
        if !plan.helpers().contains(&self.index) {
            return refuse(
                ErrorCode::BadRequest,
                format!("share {} is not a helper of this repair", self.index),
            );
        }
        let Some(target_id) = peers.node_id(plan.target()).map(str::to_owned) else {
            return refuse(
                ErrorCode::BadRequest,
                format!("the manifest has no node at index {}", plan.target()),
            );
        };
        let envelope = match self.store.get(&plan.key).await {
            Ok(Some(envelope)) => envelope,
            Ok(None) => {
                return refuse(
                    ErrorCode::Conflict,
                    format!("this node holds nothing for {}", plan.key),
                )
            }
            Err(e) => return failure(&e),
        };
        let header = &envelope.header;
        if header.tombstone {
            return refuse(
                ErrorCode::BadRequest,
                "tombstones carry no secret: re-send them, do not repair them",
            );
        }
        if envelope.generation() != (plan.version, plan.epoch) {
            return refuse(
                ErrorCode::Conflict,
                format!(
                    "this node holds version {} epoch {}, the plan wants version {} epoch {}",
                    header.version,
                    envelope.epoch(),
                    plan.version,
                    plan.epoch
                ),
            );
        }
        if header.scheme.threshold().as_usize() != plan.helpers().len()
            || plan.target().get() > header.scheme.shares()
        {
            return refuse(
                ErrorCode::BadRequest,
                format!(
                    "a {}-of-{} record needs exactly {} helpers and a target within 1..={}",
                    header.scheme.threshold(),
                    header.scheme.shares(),
                    header.scheme.threshold(),
                    header.scheme.shares()
                ),
            );
        }
        // A damaged share (or one without its nonce) is never contributed: it would poison the
        // target's share, and the target could only tell by its commitment check.
        if let Err(refusal) = Checks::release(&envelope) {
            return Response::Error(refusal);
        }
        let mut secrets = Vec::with_capacity(plan.helpers().len() - 1);
        for &other in plan.helpers().iter().filter(|&&x| x != self.index) {
            match peers.pair_secret(other).await {
                Ok(secret) => secrets.push((other, secret)),
                Err(reason) => {
                    return refuse(
                        ErrorCode::Unavailable,
                        format!("cannot agree a mask with share {other}: {reason}"),
                    )
                }
            }
        }
        let ShareEnvelope {
            header,
            signature,
            batch,
            refresh,
            payload,
            ..
        } = envelope;
        let payload = Zeroizing::new(payload);
        let data = match repair::contribution(&plan, self.index, &payload, &secrets) {
            Ok(data) => data,
            Err(e) => return refuse(ErrorCode::BadRequest, e.to_string()),
        };
        drop(payload);
        // Fail closed: the release is durably in the audit log before the piece leaves.
        let release = AuditEvent::maintenance(
            "repair-release",
            &plan.key,
            plan.version,
            request_id,
            Outcome::Released,
        );
        if let Err(e) = audit.append(release).await {
            tracing::error!(error = %e, "cannot audit a repair release: nothing is sent");
            return refuse(
                ErrorCode::Unavailable,
                "audit log unavailable; nothing was released",
            );
        }
        tracing::info!(
            repair_id = %plan.repair_id,
            key = %plan.key,
            target = %target_id,
            bytes = data.len(),
            data_blake3 = %blake3::hash(&data).to_hex(),
            "repair contribution released to the target (masked)"
        );
        let target = plan.target();
        let request = Request::Contribute {
            request_id,
            contribution: Contribution {
                plan,
                from: self.index,
                header,
                signature,
                refresh,
                batch,
                data,
            },
        };
        match peers.call(target, &request).await {
            Ok(Response::Repaired(outcome)) => Response::Repaired(outcome),
            Ok(Response::Error(error)) => {
                refuse(error.code, format!("target {target_id}: {}", error.message))
            }
            Ok(_) => refuse(
                ErrorCode::Unavailable,
                format!("target {target_id} answered a contribution unexpectedly"),
            ),
            Err(reason) => refuse(ErrorCode::Unavailable, format!("target {reason}")),
        }
    }

    /// Target side of [`Request::Contribute`]: add the piece to the repair's running sum; the
    /// piece that completes it finishes the repair, and every helper gets the same answer.
    pub(crate) async fn receive(
        &self,
        audit: &AuditLog,
        peer: &bunsan_protocol::role::PeerIdentity,
        request_id: RequestId,
        contribution: Contribution,
    ) -> Response {
        let peers = match self.peers() {
            Ok(peers) => peers,
            Err(refusal) => return Response::Error(refusal),
        };
        let Contribution {
            plan,
            from,
            header,
            signature,
            refresh,
            batch,
            data,
        } = contribution;
        let epoch = refresh.as_ref().map_or(0, |seal| seal.epoch);
        if plan.target() != self.index {
            return refuse(
                ErrorCode::WrongNode,
                format!(
                    "this node holds share {}, not {}",
                    self.index,
                    plan.target()
                ),
            );
        }
        if let Err(reason) = peers.check_sender(peer, from) {
            return refuse(ErrorCode::Forbidden, reason);
        }
        let consistent = header.key == plan.key
            && (header.version, epoch) == (plan.version, plan.epoch)
            && !header.tombstone
            && header.scheme.threshold().as_usize() == plan.helpers().len()
            && self.index.get() <= header.scheme.shares()
            && data.len() as u64 == header.share_len();
        if !consistent {
            return refuse(
                ErrorCode::BadRequest,
                "the contribution's header does not match its plan or its length",
            );
        }
        let dealing = Dealing {
            header,
            signature,
            batch,
            refresh,
        };
        tracing::info!(
            repair_id = %plan.repair_id,
            key = %plan.key,
            from = %from,
            bytes = data.len(),
            data_blake3 = %blake3::hash(&data).to_hex(),
            "repair contribution received (masked)"
        );
        let waiting = {
            let mut sessions = self.lock();
            sessions.sweep(Instant::now());
            let id = plan.repair_id;
            if !sessions.pending.contains_key(&id) {
                if sessions.pending.len() >= PENDING_MAX
                    || sessions.pending_bytes + data.len() as u64 > PENDING_BYTES_MAX
                {
                    return refuse(
                        ErrorCode::Busy,
                        "too many repairs in progress at this target",
                    );
                }
                sessions.pending_bytes += data.len() as u64;
                let pending = Pending {
                    acc: Accumulator::new(plan.helpers(), data.len()),
                    plan: plan.clone(),
                    request_id,
                    dealing: dealing.clone(),
                    deadline: Instant::now() + CONTRIBUTION_WAIT,
                    done: watch::channel(None).0,
                };
                sessions.pending.insert(id, pending);
            }
            let Some(pending) = sessions.pending.get_mut(&id) else {
                return refuse(ErrorCode::Unavailable, "repair session vanished");
            };
            if pending.plan != plan || pending.dealing != dealing {
                return refuse(
                    ErrorCode::Conflict,
                    "this contribution disagrees with earlier ones of the same repair",
                );
            }
            let complete = match pending.acc.add(from, &data) {
                Err(e) => return refuse(ErrorCode::BadRequest, e.to_string()),
                Ok(complete) => complete,
            };
            if complete {
                Err(sessions.take(&id))
            } else {
                Ok((pending.done.subscribe(), pending.deadline))
            }
        };
        match waiting {
            Err(Some(pending)) => {
                let response = self
                    .finish(
                        audit,
                        pending.request_id,
                        pending.plan,
                        pending.dealing,
                        pending.acc,
                    )
                    .await;
                pending.done.send_replace(Some(response.clone()));
                response
            }
            Err(None) => refuse(ErrorCode::Unavailable, "repair session vanished"),
            Ok((mut done, deadline)) => {
                let wait = done.wait_for(Option::is_some);
                match tokio::time::timeout_at(deadline.into(), wait).await {
                    Ok(Ok(answer)) => answer.clone().unwrap_or_else(|| {
                        refuse(ErrorCode::Unavailable, "repair ended without an answer")
                    }),
                    _ => {
                        let taken = self.lock().take(&plan.repair_id);
                        let reason = match taken {
                            Some(pending) => format!(
                                "only {} of {} contributions arrived within {} s",
                                pending.acc.received().len(),
                                plan.helpers().len(),
                                CONTRIBUTION_WAIT.as_secs()
                            ),
                            None => "the repair did not finish in time".to_owned(),
                        };
                        refuse(ErrorCode::Unavailable, reason)
                    }
                }
            }
        }
    }

    /// Turns a complete sum into this node's share, checks it, and stores it.
    async fn finish(
        &self,
        audit: &AuditLog,
        request_id: RequestId,
        plan: RepairPlan,
        dealing: Dealing,
        acc: Accumulator,
    ) -> Response {
        let payload = match acc.finish() {
            Ok(payload) => payload,
            Err(e) => return refuse(ErrorCode::Unavailable, e.to_string()),
        };
        let mut envelope = ShareEnvelope {
            format: match dealing.batch {
                Some(_) => BATCH_FORMAT,
                None => ENVELOPE_FORMAT,
            },
            header: dealing.header,
            signature: dealing.signature,
            batch: dealing.batch,
            refresh: dealing.refresh,
            index: self.index,
            nonce: None,
            payload: payload.to_vec(),
        };
        if let Err(e) = envelope.validate() {
            return refuse(ErrorCode::BadRequest, e.to_string());
        }
        // The writer's header (and a refresher's seal) must be genuine: a helper cannot make
        // the target store a forged dealing.
        if let Err(refusal) = self.checks.verify_signatures(&envelope, UnixTime::now()) {
            return Response::Error(refusal);
        }
        envelope.nonce = self.checks.open_own(&envelope, self.index);
        match self.check(&envelope) {
            Check::Verified => {}
            Check::Failed(reason) => {
                return refuse(
                    ErrorCode::Corrupt,
                    format!("the regenerated share fails its check: {reason}"),
                )
            }
            Check::Unverifiable => {
                let fingerprint = *blake3::keyed_hash(&self.fingerprint_key, &payload).as_bytes();
                let slot = (plan.key.clone(), plan.version, plan.epoch);
                let mut sessions = self.lock();
                let now = Instant::now();
                sessions
                    .candidates
                    .retain(|_, c| now.duration_since(c.seen) < CANDIDATE_TTL);
                match sessions.candidates.get(&slot) {
                    Some(earlier) if earlier.helpers != plan.helpers() => {
                        let agree = earlier.fingerprint == fingerprint;
                        sessions.candidates.remove(&slot);
                        if !agree {
                            return refuse(
                                ErrorCode::Corrupt,
                                "two helper sets regenerated different shares: at least one \
                                 helper holds a damaged share",
                            );
                        }
                    }
                    _ => {
                        if sessions.candidates.len() >= CANDIDATES_MAX {
                            return refuse(ErrorCode::Busy, "too many unconfirmed repairs");
                        }
                        sessions.candidates.insert(
                            slot,
                            Candidate {
                                helpers: plan.helpers().to_vec(),
                                fingerprint,
                                seen: now,
                            },
                        );
                        return Response::Repaired(RepairOutcome::Unconfirmed);
                    }
                }
            }
        }
        match self.store.put_over_damage(&envelope).await {
            Ok(outcome) => {
                let logged = match outcome {
                    PutOutcome::Stored | PutOutcome::StoredKeepingOlder { .. } => Outcome::Stored,
                    PutOutcome::AlreadyStored => Outcome::AlreadyStored,
                    PutOutcome::Superseded { .. } => Outcome::Superseded,
                };
                let entry = AuditEvent::maintenance(
                    "repair-store",
                    &plan.key,
                    plan.version,
                    request_id,
                    logged,
                );
                if let Err(e) = audit.append(entry).await {
                    tracing::error!(error = %e, "cannot audit a repaired share");
                    return refuse(ErrorCode::Unavailable, "audit log unavailable");
                }
                // A repaired version is complete by construction (k helpers held it), so what
                // this node kept under it for a failed write's sake can go.
                if let PutOutcome::StoredKeepingOlder { .. } = outcome {
                    if let Err(e) = self.store.commit(&plan.key, plan.version).await {
                        tracing::warn!(error = %e, key = %plan.key, "older versions kept after repair");
                    }
                }
                tracing::info!(
                    repair_id = %plan.repair_id,
                    key = %plan.key,
                    ?outcome,
                    "regenerated share stored"
                );
                Response::Repaired(RepairOutcome::Stored(outcome))
            }
            Err(e) => failure(&e),
        }
    }

    /// Checks a regenerated share against its commitment c_t, if the node could open its
    /// nonce (`open_own` filled it in).
    fn check(&self, envelope: &ShareEnvelope) -> Check {
        match &envelope.nonce {
            None => Check::Unverifiable,
            Some(_) => match envelope.check_commitment() {
                Ok(()) => Check::Verified,
                Err(e) => Check::Failed(e.to_string()),
            },
        }
    }
}

impl Sessions {
    /// Drops repairs whose wait is over (their waiters answer with a timeout).
    fn sweep(&mut self, now: Instant) {
        let expired: Vec<SessionId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.take(&id);
        }
    }

    fn take(&mut self, id: &SessionId) -> Option<Pending> {
        let pending = self.pending.remove(id)?;
        self.pending_bytes = self
            .pending_bytes
            .saturating_sub(pending.dealing.header.share_len());
        Some(pending)
    }
}
