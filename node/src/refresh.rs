//! Share refresh on a node: deal a sharing of zero to the other participants, sum theirs,
//! stage the new share (next epoch) beside the current one, and switch on commit.
//!
//! ```text
//!  admin ──RefreshStage{plan}──▶ node j: δ_j ← deal_zero; ──RefreshDeal{δ_j(x_m)}──▶ node m (all m ≠ j)
//!                                        wait for every δ_m(x_j); stage y_j ⊕ Σ δ(x_j)  ──▶ Staged
//!  admin ──RefreshCommit──▶ every node: staged becomes current (put-if-newer: same version,
//!                                       higher epoch), then the staged copy is dropped
//! ```
//!
//! Deals travel node to node over mTLS and are accepted at once (a deal may arrive before the
//! stage request that expects it); the stage request waits, bounded by [`DEAL_WAIT`], until
//! every other participant's deal is in. The coordinator sees no share, no deal and no sum.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bunsan_protocol::message::{ErrorCode, PutOutcome, Request, Response};
use bunsan_protocol::refresh::{self, RefreshPlan};
use bunsan_protocol::repair::{Accumulator, SessionId};
use bunsan_protocol::role::PeerIdentity;
use bunsan_protocol::{RecordKey, RequestId, ShareIndex};
use tokio::sync::watch;
use tokio::task::JoinSet;
use zeroize::Zeroizing;

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
        peers: Option<Arc<Peers>>,
    ) -> Self {
        Self {
            index,
            store,
            peers,
            pending: Mutex::new(Pending::default()),
        }
    }

    fn peers(&self) -> Result<&Arc<Peers>, Response> {
        self.peers.as_ref().ok_or_else(|| {
            refuse(
                ErrorCode::Unavailable,
                "this node has no cluster manifest (node.toml key `cluster`), so it cannot \
                 take part in refreshes",
            )
        })
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// [`Request::RefreshStage`]: deal, collect, stage.
    pub(crate) async fn stage(&self, request_id: RequestId, plan: RefreshPlan) -> Response {
        let peers = match self.peers() {
            Ok(peers) => Arc::clone(peers),
            Err(refusal) => return refusal,
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
        if current.header.tombstone || current.header.generation() != (plan.version, plan.epoch) {
            return refuse(
                ErrorCode::Conflict,
                format!(
                    "this node holds version {} epoch {}{}, the refresh is of version {} epoch {}",
                    current.header.version,
                    current.header.epoch,
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
            Ok(Some((id, staged))) if id == plan.refresh_id => {
                return Response::Staged {
                    epoch: staged.header.epoch,
                }
            }
            Ok(_) => {}
            Err(e) => return failure(&e),
        }
        let len = current.payload.len();
        let mut complete = match self.session(&plan, len) {
            Ok(complete) => complete,
            Err(refusal) => return refusal,
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
        next.header.epoch = plan.next_epoch();
        // Integrity seam: a fresh commitment nonce for the new share, sealed to this node, and
        // c'_j returned to the coordinator, belong here.
        match self.store.stage(plan.refresh_id, &next).await {
            Ok(()) => {
                tracing::info!(
                    refresh_id = %plan.refresh_id,
                    key = %plan.key,
                    epoch = next.header.epoch,
                    "refreshed share staged"
                );
                Response::Staged {
                    epoch: next.header.epoch,
                }
            }
            Err(e) => failure(&e),
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
            Err(refusal) => return refusal,
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
            return refusal;
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
        epoch: u32,
    ) -> Response {
        match self.store.staged(key).await {
            Ok(Some((id, staged))) if id == refresh_id => {
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
                Ok(Some(current)) if current.header.epoch >= epoch => {
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
    fn session(&self, plan: &RefreshPlan, len: usize) -> Result<watch::Receiver<bool>, Response> {
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
                return Err(refuse(
                    ErrorCode::Conflict,
                    "this deal disagrees with earlier ones of the same refresh",
                ));
            }
            return Ok(deals.complete.subscribe());
        }
        if pending.sessions.len() >= PENDING_MAX || pending.bytes + len as u64 > PENDING_BYTES_MAX {
            return Err(refuse(ErrorCode::Busy, "too many refreshes in progress"));
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
