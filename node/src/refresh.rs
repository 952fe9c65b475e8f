//! Share refresh on a node: deal a sharing of zero to the other participants, sum theirs,
//! stage the new share (next epoch) beside the current one, and switch on commit.
//!
//! ```text
//!  admin ──RefreshStage{plan}──▶ node j: δ_j ← deal_zero; ──RefreshDeal{δ_j(x_m)}──▶ node m (all m ≠ j)
//!                                        wait for every δ_m(x_j); stage y_j ⊕ Σ δ(x_j)  ──▶ Staged
//!  admin ──RefreshCommit{seal}──▶ every node: staged becomes current (put-if-newer: same
//!                                       version, higher epoch), then the staged copy is dropped
//! ```
//!
//! With integrity: when it stages, each node draws a fresh nonce'_j for its new share, seals it
//! to its own key, and answers with c'_j and the sealed nonce'_j; the coordinator (admin) signs
//! the seal over every node's c'_j and sealed nonce'_j and sends it with the commit; each node
//! checks the seal's signature and that its own slot is what it staged before switching. A
//! refresh needs every node of the record: a seal commits to all n shares.
//!
//! Deals travel node to node over mTLS and are accepted at once (a deal may arrive before the
//! stage request that expects it); the stage request waits, bounded by [`DEAL_WAIT`], until
//! every other participant's deal is in. The coordinator sees no share, no deal and no sum.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bunsan_protocol::envelope::ShareEnvelope;
use bunsan_protocol::integrity::{commit, CommitNonce};
use bunsan_protocol::message::{ErrorCode, PutOutcome, RemoteError, Request, Response};
use bunsan_protocol::refresh::{self, RefreshPlan, RefreshSeal};
use bunsan_protocol::repair::{Accumulator, SessionId};
use bunsan_protocol::role::PeerIdentity;
use bunsan_protocol::{RecordKey, RequestId, ShareIndex};
use rustls_pki_types::UnixTime;
use tokio::sync::watch;
use tokio::task::JoinSet;
use zeroize::Zeroizing;

use crate::checks::Checks;
use crate::handler::{failure, refuse};
use crate::peers::Peers;
use crate::store::ShareStore;

/// How long a stage waits, from its own deals, for the other participants' deals.
pub(crate) const DEAL_WAIT: Duration = Duration::from_secs(15);

/// Refreshes collected at once, and bytes of running sums: as for repair.
const PENDING_MAX: usize = 64;
const PENDING_BYTES_MAX: u64 = 512 << 20;

/// One node's refresh state.
pub(crate) struct Refreshes {
    index: ShareIndex,
    store: Arc<dyn ShareStore>,
    checks: Arc<Checks>,
    peers: Option<Arc<Peers>>,
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    sessions: HashMap<SessionId, Deals>,
    bytes: u64,
}

/// The deals received for one refresh.
struct Deals {
    plan: RefreshPlan,
    acc: Accumulator,
    len: usize,
    expires: Instant,
    complete: watch::Sender<bool>,
}

impl Refreshes {
    pub(crate) fn new(
        index: ShareIndex,
        store: Arc<dyn ShareStore>,
        checks: Arc<Checks>,
        peers: Option<Arc<Peers>>,
    ) -> Self {
        Self {
            index,
            store,
            checks,
            peers,
            pending: Mutex::new(Pending::default()),
        }
    }

    fn peers(&self) -> Result<&Arc<Peers>, RemoteError> {
        self.peers.as_ref().ok_or_else(|| RemoteError {
            code: ErrorCode::Unavailable,
            message: "this node has no cluster manifest (node.toml key `cluster`), so it \
                          cannot take part in refreshes"
                .to_owned(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// [`Request::RefreshStage`]: deal, collect, stage.
    pub(crate) async fn stage(&self, request_id: RequestId, plan: RefreshPlan) -> Response {
        let peers = match self.peers() {
            Ok(peers) => Arc::clone(peers),
            Err(refusal) => return Response::Error(refusal),
        };
        if !plan.participants().contains(&self.index) {
            return refuse(
                ErrorCode::BadRequest,
                format!("share {} is not a participant of this refresh", self.index),
            );
        }
        let current = match self.store.get(&plan.key).await {
            Ok(Some(envelope)) => envelope,
            Ok(None) => {
                return refuse(
                    ErrorCode::Conflict,
                    format!("this node holds nothing for {}", plan.key),
                )
            }
            Err(e) => return failure(&e),
        };
        let scheme = current.header.scheme;
        if current.header.tombstone || current.generation() != (plan.version, plan.epoch) {
            return refuse(
                ErrorCode::Conflict,
                format!(
                    "this node holds version {} epoch {}{}, the refresh is of version {} epoch {}",
                    current.header.version,
                    current.epoch(),
                    if current.header.tombstone {
                        " (a tombstone)"
                    } else {
                        ""
                    },
                    plan.version,
                    plan.epoch
                ),
            );
        }
        if let Err(e) = plan.check_threshold(scheme.threshold()) {
            return refuse(ErrorCode::BadRequest, e.to_string());
        }
        if plan.participants().len() != usize::from(scheme.shares()) {
            return refuse(
                ErrorCode::BadRequest,
                "a refresh seal commits to every share: every node must take part",
            );
        }
        // A damaged share is not refreshed: its damage would carry into the new epoch. A share
        // without its nonce (regenerated by repair where no nonce was sealed to this node, and
        // confirmed by two helper sets) is what a refresh exists to commit anew.
        if current.nonce.is_some() {
            if let Err(refusal) = Checks::release(&current) {
                return Response::Error(refusal);
            }
        }
        if plan
            .participants()
            .iter()
            .any(|x| x.get() > scheme.shares())
        {
            return refuse(
                ErrorCode::BadRequest,
                "a participant is beyond the share count",
            );
        }
        match self.store.staged(&plan.key).await {
            // A retried stage: the share is staged already, and dealing again would mix deals.
            Ok(Some((id, staged))) if id == plan.refresh_id => return self.staged_answer(&staged),
            Ok(_) => {}
            Err(e) => return failure(&e),
        }
        let len = current.payload.len();
        let mut complete = match self.session(&plan, len) {
            Ok(complete) => complete,
            Err(refusal) => return Response::Error(refusal),
        };
        let deals = match refresh::deal_zero(
            scheme.threshold(),
            plan.participants(),
            len,
            &mut rand::rng(),
        ) {
            Ok(deals) => deals,
            Err(e) => return refuse(ErrorCode::BadRequest, e.to_string()),
        };
        let mut own = None;
        let mut sends = JoinSet::new();
        for deal in deals {
            let to = deal.index();
            if to == self.index {
                own = Some(deal.into_data());
                continue;
            }
            let request = Request::RefreshDeal {
                request_id,
                plan: plan.clone(),
                from: self.index,
                delta: deal.into_data().to_vec(),
            };
            let peers = Arc::clone(&peers);
            sends.spawn(async move { (to, peers.call(to, &request).await) });
        }
        while let Some(sent) = sends.join_next().await {
            let failed = match sent {
                Ok((_, Ok(Response::DealAccepted))) => None,
                Ok((to, Ok(Response::Error(error)))) => Some(format!("share {to}: {error}")),
                Ok((to, Ok(_))) => Some(format!("share {to} answered a deal unexpectedly")),
                Ok((to, Err(reason))) => Some(format!("share {to}: {reason}")),
                Err(e) => Some(format!("a deal task failed: {e}")),
            };
            if let Some(reason) = failed {
                self.forget(plan.refresh_id);
                return refuse(
                    ErrorCode::Unavailable,
                    format!("deal not delivered: {reason}"),
                );
            }
        }
        let wait = complete.wait_for(|&done| done);
        if tokio::time::timeout(DEAL_WAIT, wait).await.is_err() {
            self.forget(plan.refresh_id);
            return refuse(
                ErrorCode::Unavailable,
                format!(
                    "not every participant's deal arrived within {} s",
                    DEAL_WAIT.as_secs()
                ),
            );
        }
        let Some(deals) = self.forget(plan.refresh_id) else {
            return refuse(ErrorCode::Unavailable, "refresh session vanished");
        };
        let sum = match deals.acc.finish() {
            Ok(sum) => sum,
            Err(e) => return refuse(ErrorCode::Unavailable, e.to_string()),
        };
        let mut next = current;
        let mut payload = Zeroizing::new(std::mem::take(&mut next.payload));
        let own = own.unwrap_or_default();
        if let Err(e) = refresh::add_delta(&mut payload, &sum)
            .and_then(|()| refresh::add_delta(&mut payload, &own))
        {
            return refuse(ErrorCode::BadRequest, e.to_string());
        }
        next.payload = payload.to_vec();
        // A fresh nonce for the new share, sealed to this node's own key; the staged envelope
        // carries a provisional seal (this node's slot new, the others as before, the previous
        // signature) until the commit brings the refresher's.
        let nonce = CommitNonce::random(&mut rand::rng());
        let sealed = match self.checks.seal_own(&next, self.index, &nonce) {
            Ok(sealed) => sealed,
            Err(e) => return refuse(ErrorCode::Unavailable, e.to_string()),
        };
        let slot = usize::from(self.index.get()) - 1;
        let mut provisional = match &next.refresh {
            Some(seal) => (**seal).clone(),
            None => RefreshSeal {
                epoch: 0,
                signed_micros: 0,
                commitments: next.header.commitments.clone(),
                sealed_nonces: next.header.sealed_nonces.clone(),
                signature: next.signature.clone(),
            },
        };
        provisional.epoch = plan.next_epoch();
        provisional.commitments[slot] = commit(&nonce, self.index, &next.payload);
        provisional.sealed_nonces[slot] = Some(sealed);
        next.refresh = Some(Box::new(provisional));
        next.nonce = Some(nonce);
        match self.store.stage(plan.refresh_id, &next).await {
            Ok(()) => {
                tracing::info!(
                    refresh_id = %plan.refresh_id,
                    key = %plan.key,
                    epoch = next.epoch(),
                    "refreshed share staged"
                );
                self.staged_answer(&next)
            }
            Err(e) => failure(&e),
        }
    }

    /// The answer to a stage: the staged epoch and this node's new commitment and seal.
    fn staged_answer(&self, staged: &ShareEnvelope) -> Response {
        match (
            staged.commitment(self.index),
            staged.sealed_nonce(self.index),
        ) {
            (Some(commitment), Some(sealed)) => Response::Staged {
                epoch: staged.epoch(),
                commitment: *commitment,
                sealed_nonce: sealed.clone(),
                header: Box::new(staged.header.clone()),
                signature: staged.signature.clone(),
            },
            _ => refuse(ErrorCode::Corrupt, "the staged share lacks its commitment"),
        }
    }

    /// [`Request::RefreshDeal`]: add another participant's δ to this node's pending sum.
    pub(crate) fn deal(
        &self,
        peer: &PeerIdentity,
        plan: RefreshPlan,
        from: ShareIndex,
        delta: Vec<u8>,
    ) -> Response {
        let peers = match self.peers() {
            Ok(peers) => peers,
            Err(refusal) => return Response::Error(refusal),
        };
        if let Err(reason) = peers.check_sender(peer, from) {
            return refuse(ErrorCode::Forbidden, reason);
        }
        if from == self.index || !plan.participants().contains(&self.index) {
            return refuse(
                ErrorCode::BadRequest,
                "a deal comes from another participant to a participant",
            );
        }
        let delta = Zeroizing::new(delta);
        if let Err(refusal) = self.session(&plan, delta.len()) {
            return Response::Error(refusal);
        }
        let mut pending = self.lock();
        let Some(deals) = pending.sessions.get_mut(&plan.refresh_id) else {
            return refuse(ErrorCode::Unavailable, "refresh session vanished");
        };
        match deals.acc.add(from, &delta) {
            Ok(true) => {
                deals.complete.send_replace(true);
                Response::DealAccepted
            }
            Ok(false) => Response::DealAccepted,
            Err(e) => refuse(ErrorCode::BadRequest, e.to_string()),
        }
    }

    /// [`Request::RefreshCommit`]: the staged share becomes current.
    pub(crate) async fn commit(
        &self,
        refresh_id: SessionId,
        key: &RecordKey,
        seal: RefreshSeal,
    ) -> Response {
        let epoch = seal.epoch;
        match self.store.staged(key).await {
            Ok(Some((id, mut staged))) if id == refresh_id => {
                let slot = usize::from(self.index.get()) - 1;
                let ours = staged.epoch() == seal.epoch
                    && staged.commitment(self.index) == seal.commitments.get(slot)
                    && staged.sealed_nonce(self.index)
                        == seal.sealed_nonces.get(slot).and_then(Option::as_ref);
                if !ours {
                    return refuse(
                        ErrorCode::BadRequest,
                        "the seal does not carry the commitment this node staged",
                    );
                }
                if let Err(refusal) = self.checks.verify_seal(&staged, &seal, UnixTime::now()) {
                    return Response::Error(refusal);
                }
                staged.refresh = Some(Box::new(seal));
                if let Err(refusal) = Checks::release(&staged) {
                    return Response::Error(refusal);
                }
                let outcome = match self.store.put(&staged).await {
                    Ok(outcome) => outcome,
                    Err(e) => return failure(&e),
                };
                if let Err(e) = self.store.unstage(key, refresh_id).await {
                    return failure(&e);
                }
                tracing::info!(%refresh_id, %key, epoch, ?outcome, "refresh committed");
                Response::Stored(outcome)
            }
            Ok(Some(_)) => refuse(
                ErrorCode::Conflict,
                "another refresh of this record is staged",
            ),
            Ok(None) => match self.store.get(key).await {
                // Committed already: a retried commit.
                Ok(Some(current)) if current.epoch() >= epoch => {
                    Response::Stored(PutOutcome::AlreadyStored)
                }
                Ok(_) => refuse(ErrorCode::Conflict, "nothing is staged for this refresh"),
                Err(e) => failure(&e),
            },
            Err(e) => failure(&e),
        }
    }

    /// [`Request::RefreshAbort`]: drop the staged share and any pending deals.
    pub(crate) async fn abort(&self, refresh_id: SessionId, key: &RecordKey) -> Response {
        self.forget(refresh_id);
        match self.store.unstage(key, refresh_id).await {
            Ok(_) => Response::Aborted,
            Err(e) => failure(&e),
        }
    }

    /// Finds or opens the deal collection of `plan` (expecting one deal of `len` bytes from
    /// every other participant) and returns a watch that turns true once all are in.
    fn session(
        &self,
        plan: &RefreshPlan,
        len: usize,
    ) -> Result<watch::Receiver<bool>, RemoteError> {
        let mut pending = self.lock();
        let now = Instant::now();
        let expired: Vec<SessionId> = pending
            .sessions
            .iter()
            .filter(|(_, deals)| deals.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            pending.remove(&id);
        }
        if let Some(deals) = pending.sessions.get(&plan.refresh_id) {
            if deals.plan != *plan || deals.len != len {
                return Err(RemoteError {
                    code: ErrorCode::Conflict,
                    message: "this deal disagrees with earlier ones of the same refresh".to_owned(),
                });
            }
            return Ok(deals.complete.subscribe());
        }
        if pending.sessions.len() >= PENDING_MAX || pending.bytes + len as u64 > PENDING_BYTES_MAX {
            return Err(RemoteError {
                code: ErrorCode::Busy,
                message: "too many refreshes in progress".to_owned(),
            });
        }
        let others: Vec<ShareIndex> = plan
            .participants()
            .iter()
            .copied()
            .filter(|&x| x != self.index)
            .collect();
        let (complete, receiver) = watch::channel(false);
        pending.bytes += len as u64;
        pending.sessions.insert(
            plan.refresh_id,
            Deals {
                plan: plan.clone(),
                acc: Accumulator::new(&others, len),
                len,
                // Deals may arrive before the stage request; both wait at most this long.
                expires: now + 2 * DEAL_WAIT,
                complete,
            },
        );
        Ok(receiver)
    }

    fn forget(&self, id: SessionId) -> Option<Deals> {
        self.lock().remove(&id)
    }
}

impl Pending {
    fn remove(&mut self, id: &SessionId) -> Option<Deals> {
        let deals = self.sessions.remove(id)?;
        self.bytes = self.bytes.saturating_sub(deals.len as u64);
        Some(deals)
    }
}
