//! [`AuditLog`]: numbers, dates, chains and durably stores every audit event, keeps the Merkle
//! tree in memory, and signs checkpoints.
//!
//! One writer task owns every append (group commit): callers queue events, the writer takes all
//! that are queued, gives them consecutive sequence numbers, chains and hashes them, writes them
//! to the [`AuditStore`] in one durable append, and only then answers each caller. A burst of N
//! requests thus costs one flush, and the caller of a get learns its entry is durable before the
//! share is sent. If a write fails, the log is poisoned: every later append fails at once, so
//! every later request is refused, until the node restarts and re-reads what the store holds.
//! Checkpoints are signed by the same task (so size, root and chain head always agree), every
//! `checkpoint_interval` when there are new entries, every `checkpoint_entries` entries, and on
//! demand.
//!
//! Several writers on one store (the node processes of a site sharing its S3 log): an append
//! that finds the store longer than this log ([`Error::AuditConflict`], nothing written) is not
//! a failure. The writer catches up: it reads the other writers' entries, checks that each
//! chains on from the one before and sits at its place (if not, the log was tampered with and
//! is poisoned), adds them to its tree, then numbers and chains the batch again after them and
//! retries, up to [`APPEND_ATTEMPTS`] times. Callers are answered only after the append that
//! holds their entry succeeded, with the entry's final number. Before signing, the writer also
//! catches up, so a checkpoint always covers the store's real end at that moment: every
//! checkpoint any process signs is the root of a prefix of the one stored log, and any two are
//! consistent. An idle writer catches up every `checkpoint_interval`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bunsan_protocol::audit::{chain_next, AuditEntry, AuditRecord, CHAIN_GENESIS};
use bunsan_protocol::checkpoint::{log_origin, Checkpoint};
use bunsan_protocol::merkle::{Hash, MerkleTree};
use bunsan_protocol::node_key::NodeSigner;
use tokio::sync::{mpsc, oneshot};

use super::event::AuditEvent;
use super::store::{AuditStore, MemoryAuditStore};
use crate::error::{Error, Result};

/// The most events one group commit writes; more wait for the next round.
pub(crate) const BATCH_MAX: usize = 512;

/// Queued events at most; callers wait for room beyond that (backpressure, bounded memory).
const QUEUE_MAX: usize = 4096;

/// Entries read per page when the log is replayed at start or caught up.
const REPLAY_PAGE: usize = 4096;

/// Appends of one batch tried while other processes sharing the store keep appending first.
/// Each lost race means another writer made progress, so the log as a whole never stalls;
/// after this many the batch's requests are refused (not the log poisoned: contention is not
/// damage), which bounds how long a request waits. Generous, because a writer that just
/// lost catches up more slowly than the winner starts its next batch (object-store round
/// trips), so a busy winner can win many rounds in a row.
const APPEND_ATTEMPTS: u32 = 64;

/// When checkpoints are signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditOptions {
    /// Sign a checkpoint this often if entries were added since the last one.
    pub checkpoint_interval: Duration,
    /// Sign a checkpoint as soon as this many entries were added since the last one.
    pub checkpoint_entries: u64,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            checkpoint_interval: Duration::from_secs(10),
            checkpoint_entries: 1000,
        }
    }
}

/// The node's signing identity: its key, its certificate and the CA it chains to.
pub struct SigningIdentity {
    /// The node's private key, checked against its certificate.
    pub signer: NodeSigner,
    /// The node certificate (DER), sent with checkpoints so others can verify them.
    pub certificate: Vec<u8>,
    /// The cluster CA certificate (DER), to check other nodes' certificates.
    pub ca: Vec<u8>,
}

/// A node's audit log. Cheap to share (`Arc<AuditLog>`); the writer task stops when it is
/// dropped.
pub struct AuditLog {
    pub(crate) inner: Arc<Inner>,
    commands: mpsc::Sender<Command>,
    /// Serialises read-modify-write of stored checkpoints (adding cosignatures).
    pub(crate) cosign_lock: tokio::sync::Mutex<()>,
    pub(crate) refusals: super::event::RefusalBudget,
}

pub(crate) struct Inner {
    pub(crate) node_id: String,
    pub(crate) origin: String,
    pub(crate) store: Arc<dyn AuditStore>,
    pub(crate) signing: Option<SigningIdentity>,
    state: RwLock<State>,
    poisoned: AtomicBool,
    checkpoint_entries: u64,
}

#[derive(Default)]
struct State {
    tree: MerkleTree,
    head: Hash,
    last_time: u64,
    checkpoint_size: Option<u64>,
    /// When the latest checkpoint this process knows of was signed (µs since the epoch).
    checkpoint_micros: Option<u64>,
}

enum Command {
    // Boxed: events are large and most queue slots hold small commands.
    Append(Box<AuditEvent>, oneshot::Sender<Result<u64>>),
    Checkpoint(oneshot::Sender<Result<String>>),
    Stop(oneshot::Sender<()>),
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("node", &self.inner.node_id)
            .field("size", &self.size())
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens the log of `node_id` over `store`: replays every stored entry to rebuild the
    /// Merkle tree and chain head (reporting, not hiding, entries that no longer match their
    /// chain values or a stored checkpoint), then starts the writer task. Must be called inside
    /// a tokio runtime.
    pub async fn open(
        node_id: &str,
        store: Arc<dyn AuditStore>,
        signing: Option<SigningIdentity>,
        options: AuditOptions,
    ) -> Result<Arc<Self>> {
        let state = replay(node_id, store.as_ref()).await?;
        Ok(Self::start(node_id, store, signing, options, state))
    }

    /// A new, empty log in memory without a signing key (it signs no checkpoints): the default
    /// of a [`Handler`](crate::handler::Handler) built without one. Must be called inside a
    /// tokio runtime.
    pub fn memory(node_id: &str) -> Arc<Self> {
        Self::start(
            node_id,
            Arc::new(MemoryAuditStore::new()),
            None,
            AuditOptions::default(),
            State::default(),
        )
    }

    fn start(
        node_id: &str,
        store: Arc<dyn AuditStore>,
        signing: Option<SigningIdentity>,
        options: AuditOptions,
        state: State,
    ) -> Arc<Self> {
        let inner = Arc::new(Inner {
            node_id: node_id.to_owned(),
            origin: log_origin(node_id),
            store,
            signing,
            state: RwLock::new(state),
            poisoned: AtomicBool::new(false),
            checkpoint_entries: options.checkpoint_entries.max(1),
        });
        let (commands, queue) = mpsc::channel(QUEUE_MAX);
        tokio::spawn(writer(inner.clone(), queue, options.checkpoint_interval));
        Arc::new(Self {
            inner,
            commands,
            cosign_lock: tokio::sync::Mutex::new(()),
            refusals: super::event::RefusalBudget::new(),
        })
    }

    /// Appends `event` and returns its sequence number once it is durable. Fails, and keeps
    /// failing until restart, if the store could not be written.
    pub async fn append(&self, event: AuditEvent) -> Result<u64> {
        if self.inner.poisoned.load(Ordering::SeqCst) {
            return Err(poisoned());
        }
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Append(Box::new(event), reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Signs a checkpoint over every entry so far (unless the latest already covers them) and
    /// returns the latest signed checkpoint note.
    pub async fn checkpoint_now(&self) -> Result<String> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Checkpoint(reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Stops the writer after the queued appends and releases the store (a sled store's file
    /// lock with it, once the last handle is gone); later appends fail.
    pub async fn close(&self) {
        let (reply, done) = oneshot::channel();
        if self.commands.send(Command::Stop(reply)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// How many durable entries the log holds, as far as this process knows: entries other
    /// processes sharing the store appended count once this one next appends, signs a
    /// checkpoint, or every `checkpoint_interval`.
    pub fn size(&self) -> u64 {
        self.inner.read_state(|s| s.tree.size())
    }

    /// When the latest signed checkpoint this process knows of was made (`None`: none yet).
    pub fn last_checkpoint(&self) -> Option<std::time::SystemTime> {
        self.inner
            .read_state(|s| s.checkpoint_micros)
            .map(|micros| std::time::UNIX_EPOCH + std::time::Duration::from_micros(micros))
    }

    /// The node id whose log this is.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// The signing identity, if the node has one.
    pub fn signing(&self) -> Option<&SigningIdentity> {
        self.inner.signing.as_ref()
    }

    /// The store behind the log.
    pub fn store(&self) -> &Arc<dyn AuditStore> {
        &self.inner.store
    }

    /// Up to `limit` durable entries from `from`.
    pub async fn records(&self, from: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        let size = self.size();
        let wanted = usize::try_from(size.saturating_sub(from))
            .unwrap_or(usize::MAX)
            .min(limit);
        if wanted == 0 {
            return Ok(Vec::new());
        }
        self.inner.store.read(from, wanted).await
    }

    /// The RFC 6962 consistency proof between two sizes of this log.
    pub fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<Hash>> {
        self.inner
            .read_state(|s| s.tree.consistency_proof(from, to))
            .map_err(Error::from)
    }

    /// The RFC 6962 inclusion proof of entry `seq` in the tree of `size`.
    pub fn inclusion_proof(&self, seq: u64, size: u64) -> Result<Vec<Hash>> {
        self.inner
            .read_state(|s| s.tree.inclusion_proof(seq, size))
            .map_err(Error::from)
    }
}

impl Inner {
    fn read_state<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.read().unwrap_or_else(PoisonError::into_inner))
    }

    async fn write_batch(&self, events: Vec<(AuditEvent, oneshot::Sender<Result<u64>>)>) {
        let mut pending = events;
        for attempt in 0..APPEND_ATTEMPTS {
            if self.poisoned.load(Ordering::SeqCst) {
                return fail_all(pending, &poisoned());
            }
            let (first, head, last_time, records) = self.number(&mut pending);
            if records.is_empty() {
                return;
            }
            match self.store.append(first, &records).await {
                Ok(()) => {
                    self.commit(first, &records, head, last_time);
                    for (seq, (_, reply)) in (first..).zip(pending) {
                        let _ = reply.send(Ok(seq));
                    }
                    let (size, signed) =
                        self.read_state(|s| (s.tree.size(), s.checkpoint_size.unwrap_or(0)));
                    if size - signed >= self.checkpoint_entries {
                        if let Err(e) = self.sign_checkpoint().await {
                            tracing::warn!(error = %e, "could not sign an audit checkpoint");
                        }
                    }
                    return;
                }
                // Another process appended first: adopt its entries, renumber, try again.
                Err(Error::AuditConflict { .. }) => match self.catch_up().await {
                    Ok(0) => {
                        // The store said "taken" but shows nothing new yet (a listing that
                        // lags): wait a little, with jitter so racing writers fall apart.
                        let wait_ms = rand::random_range(1..=2u64 << attempt.min(5));
                        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                    }
                    Ok(_) => {}
                    Err(e) => return fail_all(pending, &e),
                },
                Err(e) => {
                    tracing::error!(error = %e, "audit append failed: refusing every request until restart");
                    self.poisoned.store(true, Ordering::SeqCst);
                    return fail_all(pending, &e);
                }
            }
        }
        // Only contention: these requests are refused, later ones try again.
        tracing::warn!(
            attempts = APPEND_ATTEMPTS,
            "other writers kept winning the audit append race: refusing a batch"
        );
        let busy = Error::AuditUnavailable {
            reason: format!("{APPEND_ATTEMPTS} audit appends lost the race to other writers"),
        };
        fail_all(pending, &busy);
    }

    /// Numbers, dates and chains `pending` from the current end of the log; returns where the
    /// batch starts, the chain head and time after it, and its records (one per event left in
    /// `pending`; an event that cannot be encoded is answered with its error and removed).
    fn number(
        &self,
        pending: &mut Vec<(AuditEvent, oneshot::Sender<Result<u64>>)>,
    ) -> (u64, Hash, u64, Vec<AuditRecord>) {
        let (first, mut head, mut last_time) =
            self.read_state(|s| (s.tree.size(), s.head, s.last_time));
        let mut records = Vec::with_capacity(pending.len());
        let mut kept = Vec::with_capacity(pending.len());
        for (event, reply) in pending.drain(..) {
            let seq = first + records.len() as u64;
            // Time never goes back along the log, even if the clock does.
            let time_micros = now_micros().max(last_time);
            let entry = AuditEntry {
                seq,
                time_micros,
                node_id: self.node_id.clone(),
                actor: event.actor.clone(),
                action: event.action.clone(),
                key: event.key.clone(),
                version: event.version,
                purpose: event.purpose.clone(),
                request_id: event.request_id,
                outcome: event.outcome.clone(),
            };
            match AuditRecord::new(&entry, &head) {
                Ok(record) => {
                    head = record.chain;
                    last_time = time_micros;
                    records.push(record);
                    kept.push((event, reply));
                }
                // Every field is bounded, so this cannot happen for events built here; if it
                // does, that request is refused rather than logged wrongly.
                Err(e) => {
                    let _ = reply.send(Err(Error::Protocol(e)));
                }
            }
        }
        *pending = kept;
        (first, head, last_time, records)
    }

    /// Adds durable `records` (from `first`, this log's end) to the tree, head and time.
    fn commit(&self, first: u64, records: &[AuditRecord], head: Hash, last_time: u64) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        debug_assert_eq!(
            state.tree.size(),
            first,
            "only the writer task moves the end"
        );
        for record in records {
            state.tree.push(record.leaf_hash());
        }
        state.head = head;
        state.last_time = state.last_time.max(last_time);
    }

    /// Adopts the entries other processes sharing the store appended after this log's end,
    /// checking that each chains on from the one before and sits at its place; returns how
    /// many. Entries that do not chain, or a damaged store, are tampering: the log is
    /// poisoned. Only the writer task calls this (and the writer task alone moves the end).
    async fn catch_up(&self) -> Result<u64> {
        let end = self.store.size().await?;
        let (start, mut head, mut last_time) =
            self.read_state(|s| (s.tree.size(), s.head, s.last_time));
        let mut adopted = Vec::new();
        let mut seq = start;
        while seq < end {
            let wanted = usize::try_from(end - seq)
                .unwrap_or(usize::MAX)
                .min(REPLAY_PAGE);
            let page = match self.store.read(seq, wanted).await {
                Ok(page) if page.is_empty() => Err(Error::AuditCorrupt {
                    seq,
                    reason: format!("the store holds {end} entries but none from {seq} on"),
                }),
                other => other,
            };
            let page = page.map_err(|e| self.poison_if_damage(e))?;
            for record in page {
                let chain = chain_next(&head, &record.entry);
                let problem = match AuditEntry::decode(&record.entry) {
                    _ if chain != record.chain => Some("does not chain from the entry before"),
                    Ok(entry) if entry.seq != seq => Some("is out of place"),
                    Ok(entry) if entry.node_id != self.node_id => Some("is another node's"),
                    Ok(entry) => {
                        last_time = last_time.max(entry.time_micros);
                        None
                    }
                    Err(_) => Some("cannot be decoded"),
                };
                if let Some(problem) = problem {
                    return Err(self.poison_if_damage(Error::AuditCorrupt {
                        seq,
                        reason: format!("an entry another writer appended {problem}"),
                    }));
                }
                head = chain;
                adopted.push(record);
                seq += 1;
            }
        }
        if !adopted.is_empty() {
            self.commit(start, &adopted, head, last_time);
        }
        Ok(seq - start)
    }

    /// Poisons the log if `error` says the stored log is damaged; passes it on.
    fn poison_if_damage(&self, error: Error) -> Error {
        if let Error::AuditCorrupt { seq, reason } = &error {
            tracing::error!(
                seq,
                reason,
                node = self.node_id,
                "the shared audit log was altered: refusing every request until restart"
            );
            self.poisoned.store(true, Ordering::SeqCst);
        }
        error
    }

    /// Signs a checkpoint of the current log unless the latest already covers it; returns the
    /// latest checkpoint note.
    async fn sign_checkpoint(&self) -> Result<String> {
        let signing = self
            .signing
            .as_ref()
            .ok_or_else(|| Error::AuditUnavailable {
                reason: "this node has no signing key, so it signs no checkpoints".to_owned(),
            })?;
        // A checkpoint covers only entries really in the store, up to its real end: then the
        // checkpoints every process sharing the store signs are prefixes of one log.
        self.catch_up().await?;
        let (size, root, head, signed) = self.read_state(|s| {
            let size = s.tree.size();
            (size, s.tree.root(size), s.head, s.checkpoint_size)
        });
        if signed == Some(size) {
            if let Some(note) = self.store.checkpoint(size).await? {
                return Ok(note);
            }
        }
        let checkpoint = Checkpoint {
            origin: self.origin.clone(),
            size,
            root: root?,
            chain: head,
            time_micros: now_micros(),
        };
        let note = checkpoint.sign(&signing.signer)?;
        self.store.put_checkpoint(size, &note).await?;
        self.state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .checkpoint_size = Some(size);
        self.state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .checkpoint_micros = Some(checkpoint.time_micros);
        Ok(note)
    }
}

/// The writer task: group-commits appends and signs checkpoints, until the log is dropped.
async fn writer(inner: Arc<Inner>, mut queue: mpsc::Receiver<Command>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            command = queue.recv() => {
                let Some(command) = command else { return };
                let mut commands = vec![command];
                while commands.len() < BATCH_MAX {
                    match queue.try_recv() {
                        Ok(command) => commands.push(command),
                        Err(_) => break,
                    }
                }
                let mut appends = Vec::new();
                let mut checkpoints = Vec::new();
                let mut stop = None;
                for command in commands {
                    match command {
                        Command::Append(event, reply) => appends.push((*event, reply)),
                        Command::Checkpoint(reply) => checkpoints.push(reply),
                        Command::Stop(reply) => stop = Some(reply),
                    }
                }
                inner.write_batch(appends).await;
                // After the appends, so an on-demand checkpoint covers them.
                for reply in checkpoints {
                    let _ = reply.send(inner.sign_checkpoint().await);
                }
                if let Some(reply) = stop {
                    queue.close();
                    drop(inner);
                    let _ = reply.send(());
                    return;
                }
            }
            _ = ticker.tick() => {
                // Adopt what other processes appended, even when this one is idle.
                if !inner.poisoned.load(Ordering::SeqCst) {
                    if let Err(e) = inner.catch_up().await {
                        tracing::warn!(error = %e, "could not read the audit store's new entries");
                    }
                }
                let (size, signed) = inner.read_state(|s| (s.tree.size(), s.checkpoint_size));
                if size > 0 && signed != Some(size) && inner.signing.is_some() {
                    if let Err(e) = inner.sign_checkpoint().await {
                        tracing::warn!(error = %e, "could not sign an audit checkpoint");
                    }
                }
            }
        }
    }
}

/// Rebuilds the tree and chain head from the store, reporting damage it finds.
async fn replay(node_id: &str, store: &dyn AuditStore) -> Result<State> {
    let len = store.size().await?;
    let mut state = State {
        head: CHAIN_GENESIS,
        ..State::default()
    };
    while state.tree.size() < len {
        let from = state.tree.size();
        let page = store.read(from, REPLAY_PAGE).await?;
        if page.is_empty() {
            return Err(Error::AuditCorrupt {
                seq: from,
                reason: format!("the store holds {len} entries but none from {from} on"),
            });
        }
        for record in page {
            let seq = state.tree.size();
            // The chain continues from the recomputed value, so that entries appended from now
            // on are consistent with what an auditor recomputes; the damage stays visible.
            let chain = chain_next(&state.head, &record.entry);
            if chain != record.chain {
                tracing::error!(seq, node = node_id, "audit entry does not match its recorded chain value: the log was altered on disk");
            }
            match AuditEntry::decode(&record.entry) {
                Ok(entry) if entry.seq == seq => {
                    state.last_time = state.last_time.max(entry.time_micros)
                }
                Ok(entry) => tracing::error!(seq, found = entry.seq, "audit entry is out of place"),
                Err(e) => tracing::error!(seq, error = %e, "audit entry cannot be decoded"),
            }
            state.tree.push(record.leaf_hash());
            state.head = chain;
        }
    }
    if let Some(note) = store.latest_checkpoint().await? {
        let parsed = bunsan_protocol::note::SignedNote::parse(&note)
            .and_then(|n| Checkpoint::parse_text(&n.text));
        match parsed {
            Ok(checkpoint) if checkpoint.size <= state.tree.size() => {
                if state.tree.root(checkpoint.size).ok() != Some(checkpoint.root) {
                    tracing::error!(
                        size = checkpoint.size,
                        "the latest signed audit checkpoint does not match the stored entries"
                    );
                }
                state.checkpoint_size = Some(checkpoint.size);
                state.checkpoint_micros = Some(checkpoint.time_micros);
            }
            Ok(checkpoint) => {
                tracing::error!(size = checkpoint.size, entries = state.tree.size(), "the latest signed audit checkpoint is larger than the stored log: entries were lost");
            }
            Err(e) => {
                tracing::error!(error = %e, "the latest stored audit checkpoint is unreadable")
            }
        }
    }
    Ok(state)
}

/// Refuses every request in `pending` with `error` (as [`Error::AuditUnavailable`]).
fn fail_all(pending: Vec<(AuditEvent, oneshot::Sender<Result<u64>>)>, error: &Error) {
    let reason = match error {
        Error::AuditUnavailable { reason } => reason.clone(),
        other => other.to_string(),
    };
    for (_, reply) in pending {
        let _ = reply.send(Err(Error::AuditUnavailable {
            reason: reason.clone(),
        }));
    }
}

fn poisoned() -> Error {
    Error::AuditUnavailable {
        reason: "an earlier audit write failed; the node must be restarted".to_owned(),
    }
}

fn stopped() -> Error {
    Error::AuditUnavailable {
        reason: "the audit writer has stopped".to_owned(),
    }
}

/// Microseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "log_shared_tests.rs"]
mod shared_tests;
