//! The [`Client`]: put, get, delete and list fanned out to every node of a cluster.
//!
//! Quorum rules (n nodes, threshold k, write quorum W from the manifest):
//! - a put or delete succeeds once W nodes acknowledged it durably;
//! - a get hears from at least R = max(k, n − W + 1) nodes before it answers, so it always meets
//!   at least one node of every acknowledged write, and rebuilds only from k shares of one
//!   version: the highest version it has seen. A tombstone newer than every rebuildable version
//!   means the record is deleted, even if older shares are still around.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bunsan_protocol::dealing;
use bunsan_protocol::envelope::RECORD_MAX_BYTES;
use bunsan_protocol::hlc::HybridClock;
use bunsan_protocol::integrity::{Signer, Trust};
use bunsan_protocol::manifest::Manifest;
use bunsan_protocol::message::{
    ListEntry, NodeHealth, NodeStatus, Request, Response, LIST_LIMIT_MAX,
};
use bunsan_protocol::{Purpose, RecordKey, RequestId, Version};
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use crate::error::{Error, NodeFailure, Result};
use crate::read::BadShare;
use crate::tls::Identity;
use crate::transport::Transport;

mod background;
mod batch;
mod commit;
mod get;
mod write;

pub use batch::{BATCHES_IN_FLIGHT, BATCH_BYTES_MAX, BATCH_RECORD_MAX};

/// Time limits of a client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The deadline of one operation across all nodes: a node that has not answered by then is
    /// counted as failed (a stopped node cannot hold an operation longer than this).
    pub timeout: Duration,
    /// How long a QUIC handshake with one node may take.
    pub connect_timeout: Duration,
    /// Once a write has its quorum, how much longer to wait for the remaining nodes before
    /// answering; stragglers keep going in the background until `timeout`.
    pub straggler_grace: Duration,
    /// Once a get has its record, how much longer to keep checking the other nodes' shares,
    /// so that lying or rotten nodes are reported in [`GetOutcome::bad_shares`] even when
    /// their share was not needed. Short by default: a down node must not slow every read.
    pub read_grace: Duration,
    /// Ask every node for its share on a get, instead of k nodes for shares and the others
    /// only for the version they hold. Costs n/k times the share bytes and node work, and
    /// finds a bad or inconsistent share on a node whose share was not needed (reported in
    /// [`GetOutcome::bad_shares`]): for verification runs rather than everyday reads.
    pub read_all_shares: bool,
    /// How long a get waits for its first k nodes before it also asks the others: a slow or
    /// frozen node then costs a get this much, not `timeout`. The answers of the first nodes
    /// still count when they come.
    pub read_hedge: Duration,
    /// The most records of at most [`BATCH_RECORD_MAX`] bytes that concurrent puts send (and
    /// sign) together; 1 sends every put on its own, with its own signature. Puts never wait
    /// for a batch to fill: they batch only when they would otherwise queue.
    pub put_batch_max: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            straggler_grace: Duration::from_millis(500),
            read_grace: Duration::from_millis(100),
            read_all_shares: false,
            read_hedge: Duration::from_millis(300),
            put_batch_max: 128,
        }
    }
}

/// What a successful put or delete did.
#[derive(Debug, Clone)]
pub struct PutReceipt {
    /// The record.
    pub key: RecordKey,
    /// The version written.
    pub version: Version,
    /// Nodes that acknowledged durably.
    pub acked: Vec<String>,
    /// Nodes that did not, and why.
    pub failures: Vec<NodeFailure>,
}

impl PutReceipt {
    /// True when fewer than all n nodes hold the write: a repair should follow.
    pub fn under_replicated(&self) -> bool {
        !self.failures.is_empty()
    }
}

/// A rebuilt record and where it came from.
pub struct GetOutcome {
    /// The version rebuilt.
    pub version: Version,
    /// The plaintext, wiped from memory when dropped.
    pub data: Zeroizing<Vec<u8>>,
    /// Nodes whose verified, consistent shares the record was rebuilt from.
    pub sources: Vec<String>,
    /// Nodes that failed or did not answer in time.
    pub failures: Vec<NodeFailure>,
    /// Nodes that answered with a share that failed a check (each also logged as a `tracing`
    /// warning). The record was rebuilt without them and passed its end-to-end check.
    pub bad_shares: Vec<BadShare>,
}

/// One record in a cluster-wide listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRecord {
    /// The record key.
    pub key: RecordKey,
    /// The highest version any node holds.
    pub version: Version,
    /// The record length.
    pub record_len: u64,
    /// How many nodes hold that version.
    pub replicas: usize,
}

/// A connection to one Bunsan cluster under one identity.
pub struct Client {
    manifest: Manifest,
    transport: Arc<Transport>,
    /// Every fanned-out call holds a read guard until it ends; `close` takes the write lock, so
    /// requests already sent reach their nodes (and their audit logs) instead of being cut off.
    inflight: Arc<tokio::sync::RwLock<()>>,
    clock: std::sync::Mutex<HybridClock>,
    options: ClientOptions,
    /// The cluster CA, to verify the writer signature of every envelope read.
    trust: Trust,
    /// The key headers are signed with, or why this identity cannot sign.
    signer: std::result::Result<Arc<Signer>, String>,
    /// Small puts, batched (see [`batch`]).
    batcher: batch::Batcher,
    /// Commits of acknowledged writes, sent in the background.
    commits: commit::Commits,
    /// Turns which nodes a get asks for shares first (see [`Transport::by_preference`]).
    next_reader: std::sync::atomic::AtomicUsize,
}

impl Client {
    /// Prepares a client; connections open on first use. Must be called inside a tokio runtime.
    pub fn new(manifest: Manifest, identity: Identity, options: ClientOptions) -> Result<Self> {
        let transport = Transport::new(&manifest, &identity, options.connect_timeout)?;
        Ok(Self {
            clock: std::sync::Mutex::new(HybridClock::new(identity.session_writer_id())),
            trust: identity.trust()?,
            signer: identity.signer().map(Arc::new).map_err(|e| e.to_string()),
            batcher: batch::Batcher::default(),
            manifest,
            transport: Arc::new(transport),
            inflight: Arc::new(tokio::sync::RwLock::new(())),
            commits: commit::Commits::default(),
            next_reader: std::sync::atomic::AtomicUsize::new(0),
            options,
        })
    }

    /// The manifest this client was built from.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Splits `data` into n shares and stores share i on node i, with the header signed by
    /// this identity (a collector); succeeds once W nodes acknowledged durably (the receipt
    /// lists any node that did not).
    ///
    /// Before dealing, every node is connected to (or its cached connection reused) so that
    /// each node's nonce can be sealed to the key of the certificate it presented; a node
    /// unreachable then (within `connect_timeout`) gets no sealed nonce.
    pub async fn put(&self, key: &RecordKey, data: &[u8]) -> Result<PutReceipt> {
        if data.len() as u64 > RECORD_MAX_BYTES {
            return Err(Error::RecordTooLarge {
                len: data.len() as u64,
                max: RECORD_MAX_BYTES,
            });
        }
        let signer = self.signer()?;
        let version = self.next_version();
        if data.len() <= BATCH_RECORD_MAX && self.options.put_batch_max > 1 {
            let context = || {
                Ok(batch::Context {
                    transport: Arc::clone(&self.transport),
                    manifest: self.manifest.clone(),
                    signer: Arc::clone(signer),
                    timeout: self.options.timeout,
                    inflight: Arc::clone(&self.inflight),
                    batch_max: self.options.put_batch_max,
                })
            };
            let replies = self.batcher.submit(context, key, version, data).await?;
            return self
                .write_quorum(key, version, self.transport_len(), replies)
                .await;
        }
        let recipients = self.recipients().await;
        let envelopes = dealing::deal(
            data,
            key,
            version,
            self.manifest.scheme,
            &recipients,
            signer,
            &mut rand::rng(),
        )?;
        let request_id = RequestId::random(&mut rand::rng());
        let requests = self
            .addressed(envelopes)?
            .into_iter()
            .map(|envelope| Request::Put {
                request_id,
                envelope,
            })
            .collect();
        self.write(key, version, requests).await
    }

    /// Writes a tombstone, signed by this identity (an admin), on every node, purging the
    /// record's shares; succeeds once W nodes acknowledged durably.
    pub async fn delete(&self, key: &RecordKey) -> Result<PutReceipt> {
        let signer = self.signer()?;
        let version = self.next_version();
        let tombstones = dealing::tombstones(key, version, self.manifest.scheme, signer)?;
        let request_id = RequestId::random(&mut rand::rng());
        let requests = self
            .addressed(tombstones)?
            .into_iter()
            .map(|tombstone| Request::Delete {
                request_id,
                tombstone,
            })
            .collect();
        self.write(key, version, requests).await
    }

    /// Rebuilds a record, stating why; see [`Client::get_versioned`] for the details.
    pub async fn get(&self, key: &RecordKey, purpose: &Purpose) -> Result<Zeroizing<Vec<u8>>> {
        Ok(self.get_versioned(key, purpose).await?.data)
    }

    /// Every live record (tombstones excluded) whose key starts with `prefix`, merged across
    /// the nodes that answered; fails if fewer than R nodes answered.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ListedRecord>> {
        let mut merged: BTreeMap<RecordKey, (ListEntry, usize)> = BTreeMap::new();
        let mut heard = 0;
        let mut failures = Vec::new();
        for position in 0..self.transport_len() {
            match self.list_node(position, prefix, true).await {
                Ok(entries) => {
                    heard += 1;
                    for entry in entries {
                        let slot = merged
                            .entry(entry.key.clone())
                            .or_insert((entry.clone(), 0));
                        if entry.version > slot.0.version {
                            *slot = (entry, 1);
                        } else if entry.version == slot.0.version {
                            slot.1 += 1;
                        }
                    }
                }
                Err(Error::Node(failure)) => failures.push(failure),
                Err(Error::Remote { node, error }) => {
                    failures.push(NodeFailure::refused(node, &error))
                }
                Err(other) => return Err(other),
            }
        }
        if heard < self.manifest.read_quorum() {
            return Err(Error::NotEnoughShares {
                key: RecordKey::new(format!("{prefix}*"))?,
                found: heard,
                needed: self.manifest.read_quorum(),
                failures,
            });
        }
        Ok(merged
            .into_values()
            .filter(|(entry, _)| !entry.tombstone)
            .map(|(entry, replicas)| ListedRecord {
                key: entry.key,
                version: entry.version,
                record_len: entry.record_len,
                replicas,
            })
            .collect())
    }

    /// One node's whole inventory under `prefix`, paged through in key order.
    pub async fn list_node_by_id(
        &self,
        node_id: &str,
        prefix: &str,
        include_tombstones: bool,
    ) -> Result<Vec<ListEntry>> {
        let position = self.position(node_id)?;
        self.list_node(position, prefix, include_tombstones).await
    }

    async fn list_node(
        &self,
        position: usize,
        prefix: &str,
        include_tombstones: bool,
    ) -> Result<Vec<ListEntry>> {
        let mut all = Vec::new();
        let mut start_after = None;
        loop {
            let request = Request::List {
                request_id: RequestId::random(&mut rand::rng()),
                prefix: prefix.to_owned(),
                start_after: start_after.take(),
                limit: LIST_LIMIT_MAX,
                include_tombstones,
            };
            match self.call_position(position, &request).await? {
                Response::Listing { entries, next } => {
                    all.extend(entries);
                    match next {
                        Some(next) => start_after = Some(next),
                        None => return Ok(all),
                    }
                }
                other => return Err(self.wrong_answer(position, "list", other)),
            }
        }
    }

    /// Asks one node who it is.
    pub async fn health(&self, node_id: &str) -> Result<NodeHealth> {
        let position = self.position(node_id)?;
        match self.call_position(position, &Request::Health).await? {
            Response::Health(health) => Ok(health),
            other => Err(self.wrong_answer(position, "health", other)),
        }
    }

    /// Asks one node for its counts and sizes (admin).
    pub async fn status(&self, node_id: &str) -> Result<NodeStatus> {
        let position = self.position(node_id)?;
        match self.call_position(position, &Request::Status).await? {
            Response::Status(status) => Ok(status),
            other => Err(self.wrong_answer(position, "status", other)),
        }
    }

    /// Sends one raw request to one node and returns its raw response (for tools and tests).
    pub async fn call(&self, node_id: &str, request: &Request) -> Result<Response> {
        let position = self.position(node_id)?;
        self.transport
            .call(position, request, self.options.timeout)
            .await
            .map_err(Error::Node)
    }

    /// The certificate (DER) that node `node_id` presented, verified by the TLS handshake
    /// against the cluster CA for that node id. Nodes use it to learn each other's public keys
    /// for repair (see `bunsan_protocol::repair`).
    pub async fn peer_certificate(&self, node_id: &str) -> Result<Vec<u8>> {
        let position = self.position(node_id)?;
        self.transport
            .peer_certificate(position)
            .await
            .map_err(Error::Node)
    }

    /// Closes all connections gracefully.
    pub async fn close(&self) {
        // Straggling calls of the last operation finish first (each within the timeout), so a
        // node is not left with half a request that it cannot log; then the queued commits.
        self.batcher.finish(self.options.timeout).await;
        let _ = tokio::time::timeout(self.options.timeout, self.inflight.write()).await;
        self.commits.finish(self.options.timeout).await;
        self.transport.close().await;
    }

    async fn call_position(&self, position: usize, request: &Request) -> Result<Response> {
        let response = self
            .transport
            .call(position, request, self.options.timeout)
            .await
            .map_err(Error::Node)?;
        match response {
            Response::Error(error) => Err(Error::Remote {
                node: self.transport.node(position).id.clone(),
                error,
            }),
            other => Ok(other),
        }
    }

    /// Sends `requests[i]` to node i concurrently; replies arrive in completion order. The
    /// calls run as their own tasks, so a caller that stops listening leaves stragglers to
    /// finish (or time out) in the background instead of cutting a write off mid-stream.
    fn fan_out(
        &self,
        requests: Vec<Request>,
    ) -> mpsc::UnboundedReceiver<(usize, Result<Response, NodeFailure>)> {
        self.fan_out_to(requests.into_iter().enumerate())
    }

    /// Like [`Client::fan_out`], to the node positions given with each request.
    fn fan_out_to(
        &self,
        requests: impl IntoIterator<Item = (usize, Request)>,
    ) -> mpsc::UnboundedReceiver<(usize, Result<Response, NodeFailure>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.fan_out_into(&tx, requests);
        rx
    }

    /// Like [`Client::fan_out_to`], with each reply sent into `tx`: one channel for several
    /// rounds of one operation.
    fn fan_out_into(
        &self,
        tx: &mpsc::UnboundedSender<(usize, Result<Response, NodeFailure>)>,
        requests: impl IntoIterator<Item = (usize, Request)>,
    ) {
        for (position, request) in requests {
            // Encoded now and the request dropped, so a put holds each share once, as a frame.
            let frame = self.transport.encode(position, &request);
            drop(request);
            let transport = Arc::clone(&self.transport);
            let tx = tx.clone();
            let timeout = self.options.timeout;
            let guard = self.inflight.clone().try_read_owned().ok();
            tokio::spawn(async move {
                let _inflight = guard;
                let reply = match frame {
                    Ok(frame) => transport.call_frame(position, frame, timeout).await,
                    Err(failure) => Err(failure),
                };
                let _ = tx.send((position, reply));
            });
        }
    }

    fn next_version(&self) -> Version {
        let now_micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        self.clock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .tick(now_micros)
    }

    fn clock_observe(&self, seen: Version) {
        self.clock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .observe(seen);
    }

    fn transport_len(&self) -> usize {
        self.manifest.nodes.len()
    }

    fn position(&self, node_id: &str) -> Result<usize> {
        self.manifest
            .nodes
            .iter()
            .position(|node| node.id == node_id)
            .ok_or_else(|| Error::UnknownNode {
                node: node_id.to_owned(),
            })
    }

    fn wrong_answer(&self, position: usize, request: &'static str, got: Response) -> Error {
        let node = self.transport.node(position).id.clone();
        Error::UnexpectedResponse {
            node,
            request,
            got: response_kind(&got).to_owned(),
        }
    }
}

fn unexpected(node: String, request: &'static str, got: &Response) -> NodeFailure {
    NodeFailure {
        node,
        reason: format!("answered {} to a {request} request", response_kind(got)),
        code: None,
    }
}

fn response_kind(response: &Response) -> &'static str {
    match response {
        Response::Health(_) => "health",
        Response::Stored(_) => "stored",
        Response::StoredBatch(_) => "stored-batch",
        Response::Share(_) | Response::ShareWithOlder { .. } => "share",
        Response::Committed { .. } => "committed",
        Response::NotFound => "not-found",
        Response::Listing { .. } => "listing",
        Response::Status(_) => "status",
        Response::Inventory { .. } => "inventory",
        Response::Repaired(_) => "repaired",
        Response::Staged { .. } => "staged",
        Response::DealAccepted => "deal-accepted",
        Response::Aborted => "aborted",
        Response::Audit(_) => "audit",
        Response::Head(_) => "head",
        Response::Error(_) => "error",
    }
}
