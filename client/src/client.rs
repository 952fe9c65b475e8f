//! The [`Client`]: put, get, delete and list fanned out to every node of a cluster.
//!
//! Quorum rules (n nodes, threshold k, write quorum W from the manifest):
//! - a put or delete succeeds once W nodes acknowledged it durably;
//! - a get hears from at least R = max(k, n − W + 1) nodes before it answers, so it always meets
//!   at least one node of every acknowledged write, and rebuilds only from k shares of one
//!   version: the highest version it has seen. A tombstone newer than every rebuildable version
//!   means the record is deleted, even if older shares are still around.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bunsan_protocol::envelope::{RecordHeader, ShareEnvelope, RECORD_MAX_BYTES};
use bunsan_protocol::hlc::HybridClock;
use bunsan_protocol::manifest::Manifest;
use bunsan_protocol::message::{
    ListEntry, NodeHealth, NodeStatus, PutOutcome, Request, Response, LIST_LIMIT_MAX,
};
use bunsan_protocol::shamir::{self, Share};
use bunsan_protocol::{Purpose, RecordKey, RequestId, Version};
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use crate::error::{Error, NodeFailure, Result};
use crate::tls::Identity;
use crate::transport::Transport;

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
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            straggler_grace: Duration::from_millis(500),
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
    /// Nodes whose shares were combined.
    pub sources: Vec<String>,
    /// Nodes that failed or did not answer in time.
    pub failures: Vec<NodeFailure>,
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
    clock: std::sync::Mutex<HybridClock>,
    options: ClientOptions,
}

impl Client {
    /// Prepares a client; connections open on first use. Must be called inside a tokio runtime.
    pub fn new(manifest: Manifest, identity: Identity, options: ClientOptions) -> Result<Self> {
        let transport = Transport::new(&manifest, &identity, options.connect_timeout)?;
        Ok(Self {
            clock: std::sync::Mutex::new(HybridClock::new(identity.session_writer_id())),
            manifest,
            transport: Arc::new(transport),
            options,
        })
    }

    /// The manifest this client was built from.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Splits `data` into n shares and stores share i on node i; succeeds once W nodes
    /// acknowledged durably (the receipt lists any node that did not).
    pub async fn put(&self, key: &RecordKey, data: &[u8]) -> Result<PutReceipt> {
        if data.len() as u64 > RECORD_MAX_BYTES {
            return Err(Error::RecordTooLarge {
                len: data.len() as u64,
                max: RECORD_MAX_BYTES,
            });
        }
        let version = self.next_version();
        let scheme = self.manifest.scheme;
        let shares = shamir::split(data, scheme, &mut rand::rng());
        let request_id = RequestId::random(&mut rand::rng());
        let requests = shares
            .into_iter()
            .map(|share| {
                let index = share.index();
                // The share's bytes move into the envelope: copying them (and then zeroing
                // the original one byte at a time) cost as much as the split itself.
                let payload = std::mem::take(&mut *share.into_data());
                let envelope = ShareEnvelope::data(key.clone(), version, scheme, index, payload);
                Request::Put {
                    request_id,
                    envelope,
                }
            })
            .collect();
        self.write(key, version, requests).await
    }

    /// Writes a tombstone on every node, purging the record's shares; succeeds once W nodes
    /// acknowledged durably.
    pub async fn delete(&self, key: &RecordKey) -> Result<PutReceipt> {
        let version = self.next_version();
        let scheme = self.manifest.scheme;
        let request_id = RequestId::random(&mut rand::rng());
        let requests = self
            .manifest
            .nodes
            .iter()
            .map(|node| Request::Delete {
                request_id,
                tombstone: ShareEnvelope::tombstone(key.clone(), version, scheme, node.index),
            })
            .collect();
        self.write(key, version, requests).await
    }

    /// Rebuilds a record, stating why; see [`Client::get_versioned`] for the details.
    pub async fn get(&self, key: &RecordKey, purpose: &Purpose) -> Result<Zeroizing<Vec<u8>>> {
        Ok(self.get_versioned(key, purpose).await?.data)
    }

    /// Asks every node for its share and rebuilds the record from k shares of the highest
    /// version seen, answering as soon as R nodes have been heard and k such shares arrived.
    pub async fn get_versioned(&self, key: &RecordKey, purpose: &Purpose) -> Result<GetOutcome> {
        let request = Request::Get {
            request_id: RequestId::random(&mut rand::rng()),
            key: key.clone(),
            purpose: Some(purpose.clone()),
        };
        let mut replies = self.fan_out(vec![request; self.transport_len()]);
        let k = self.manifest.scheme.threshold().as_usize();
        let read_quorum = self.manifest.read_quorum();
        let mut gather = Gather::default();
        while let Some((position, reply)) = replies.recv().await {
            let node = self.transport.node(position).id.clone();
            match reply {
                Ok(Response::Share(envelope)) if envelope.header.key == *key => {
                    gather.add(node, envelope);
                }
                Ok(Response::Share(envelope)) => gather.failures.push(NodeFailure {
                    node,
                    reason: format!("answered with a share of {}", envelope.header.key),
                }),
                Ok(Response::NotFound) => gather.not_found += 1,
                Ok(Response::Error(error)) => gather.failures.push(NodeFailure {
                    node,
                    reason: error.to_string(),
                }),
                Ok(other) => gather.failures.push(unexpected(node, "get", &other)),
                Err(failure) => gather.failures.push(failure),
            }
            if gather.heard() >= read_quorum {
                if let Some(decision) = gather.decide(k, false) {
                    return self.finish_get(key, decision, gather);
                }
            }
        }
        match gather.decide(k, true) {
            Some(decision) => self.finish_get(key, decision, gather),
            None if gather.not_found >= read_quorum && gather.versions.is_empty() => {
                Err(Error::NotFound { key: key.clone() })
            }
            None => Err(Error::NotEnoughShares {
                key: key.clone(),
                found: gather.best_count(),
                needed: k,
                failures: gather.failures,
            }),
        }
    }

    fn finish_get(
        &self,
        key: &RecordKey,
        decision: Decision,
        gather: Gather,
    ) -> Result<GetOutcome> {
        match decision {
            Decision::Deleted(version) => Err(Error::Deleted {
                key: key.clone(),
                version,
            }),
            Decision::Combine(version) => {
                let mut gather = gather;
                let group = gather.versions.remove(&version).unwrap_or_default();
                let k = self.manifest.scheme.threshold();
                let (sources, shares): (Vec<String>, Vec<Share>) = group
                    .into_iter()
                    .take(k.as_usize())
                    .map(|(node, envelope)| (node, Share::new(envelope.index, envelope.payload)))
                    .unzip();
                let data = shamir::combine(&shares, k)?;
                self.clock_observe(version);
                Ok(GetOutcome {
                    version,
                    data,
                    sources,
                    failures: gather.failures,
                })
            }
        }
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
                Err(Error::Remote { node, error }) => failures.push(NodeFailure {
                    node,
                    reason: error.to_string(),
                }),
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

    /// Closes all connections gracefully.
    pub async fn close(&self) {
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
        let (tx, rx) = mpsc::unbounded_channel();
        for (position, request) in requests.into_iter().enumerate() {
            // Encoded now and the request dropped, so a put holds each share once, as a frame.
            let frame = self.transport.encode(position, &request);
            drop(request);
            let transport = Arc::clone(&self.transport);
            let tx = tx.clone();
            let timeout = self.options.timeout;
            tokio::spawn(async move {
                let reply = match frame {
                    Ok(frame) => transport.call_frame(position, frame, timeout).await,
                    Err(failure) => Err(failure),
                };
                let _ = tx.send((position, reply));
            });
        }
        rx
    }

    async fn write(
        &self,
        key: &RecordKey,
        version: Version,
        requests: Vec<Request>,
    ) -> Result<PutReceipt> {
        let total = requests.len();
        let needed = usize::from(self.manifest.write_quorum);
        let mut replies = self.fan_out(requests);
        let mut acked = Vec::new();
        let mut failures = Vec::new();
        let mut newer: Option<Version> = None;
        let mut grace_deadline = None;
        loop {
            let next = match grace_deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, replies.recv()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
                None => replies.recv().await,
            };
            let Some((position, reply)) = next else { break };
            let node = self.transport.node(position).id.clone();
            match reply {
                Ok(Response::Stored(PutOutcome::Stored | PutOutcome::AlreadyStored)) => {
                    acked.push(node)
                }
                Ok(Response::Stored(PutOutcome::Superseded { current })) => {
                    newer = newer.max(Some(current));
                    failures.push(NodeFailure {
                        node,
                        reason: format!("holds a newer version {current}"),
                    });
                }
                Ok(Response::Error(error)) => failures.push(NodeFailure {
                    node,
                    reason: error.to_string(),
                }),
                Ok(other) => failures.push(unexpected(node, "put", &other)),
                Err(failure) => failures.push(failure),
            }
            if acked.len() >= needed && grace_deadline.is_none() {
                grace_deadline = Some(tokio::time::Instant::now() + self.options.straggler_grace);
            }
            if acked.len() + failures.len() == total {
                break;
            }
        }
        if acked.len() >= needed {
            for position in 0..total {
                let id = &self.transport.node(position).id;
                if !acked.contains(id) && !failures.iter().any(|f| &f.node == id) {
                    failures.push(NodeFailure {
                        node: id.clone(),
                        reason: "still writing when the quorum was met".to_owned(),
                    });
                }
            }
            return Ok(PutReceipt {
                key: key.clone(),
                version,
                acked,
                failures,
            });
        }
        if let Some(current) = newer {
            self.clock_observe(current);
            return Err(Error::Superseded {
                key: key.clone(),
                current,
            });
        }
        Err(Error::WriteQuorumNotMet {
            acked: acked.len(),
            needed,
            failures,
        })
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
    }
}

fn response_kind(response: &Response) -> &'static str {
    match response {
        Response::Health(_) => "health",
        Response::Stored(_) => "stored",
        Response::Share(_) => "share",
        Response::NotFound => "not-found",
        Response::Listing { .. } => "listing",
        Response::Status(_) => "status",
        Response::Error(_) => "error",
    }
}

/// The shares a get has collected so far, grouped by version.
#[derive(Default)]
struct Gather {
    versions: BTreeMap<Version, Vec<(String, ShareEnvelope)>>,
    headers: HashMap<Version, RecordHeader>,
    tombstone: Option<Version>,
    tombstones_heard: usize,
    not_found: usize,
    failures: Vec<NodeFailure>,
}

enum Decision {
    Combine(Version),
    Deleted(Version),
}

impl Gather {
    fn add(&mut self, node: String, envelope: ShareEnvelope) {
        let version = envelope.header.version;
        if envelope.header.tombstone {
            self.tombstone = self.tombstone.max(Some(version));
            self.tombstones_heard += 1;
            return;
        }
        // Shares of one version must agree on every header field; a share that does not is
        // from a different (corrupt or forged) dealing and is never combined.
        let header = self
            .headers
            .entry(version)
            .or_insert_with(|| envelope.header.clone());
        if *header != envelope.header {
            self.failures.push(NodeFailure {
                node,
                reason: format!("its header for version {version} disagrees with other nodes"),
            });
            return;
        }
        self.versions
            .entry(version)
            .or_default()
            .push((node, envelope));
    }

    fn heard(&self) -> usize {
        self.not_found + self.versions.values().map(Vec::len).sum::<usize>() + self.tombstones_heard
    }

    fn best_count(&self) -> usize {
        self.versions.values().map(Vec::len).max().unwrap_or(0)
    }

    /// What to answer now. Before every node has answered (`last == false`) only the newest
    /// version seen may be answered; at the end, the newest version that has k shares. Either
    /// way a tombstone newer than the answer wins: a deleted record never comes back.
    fn decide(&self, k: usize, last: bool) -> Option<Decision> {
        let candidate = if last {
            self.versions
                .iter()
                .rev()
                .find(|(_, shares)| shares.len() >= k)
                .map(|(version, _)| *version)
        } else {
            self.versions
                .iter()
                .next_back()
                .filter(|(_, shares)| shares.len() >= k)
                .map(|(version, _)| *version)
        };
        let newest_data = self.versions.keys().next_back().copied();
        match (self.tombstone, candidate) {
            (Some(tombstone), _) if newest_data.is_none_or(|data| tombstone > data) => {
                Some(Decision::Deleted(tombstone))
            }
            (Some(tombstone), Some(version)) if tombstone > version => {
                Some(Decision::Deleted(tombstone))
            }
            (_, Some(version)) => Some(Decision::Combine(version)),
            (_, None) => None,
        }
    }
}
