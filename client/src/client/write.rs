//! The writing half of [`Client`]: who signs, where each envelope goes, whose keys nonces are
//! sealed to, and the write quorum.

use std::sync::Arc;

use bunsan_protocol::envelope::ShareEnvelope;
use bunsan_protocol::integrity::Signer;
use bunsan_protocol::message::{PutOutcome, Request, Response};
use bunsan_protocol::seal::RecipientKey;
use bunsan_protocol::{RecordKey, Version};

use bunsan_protocol::manifest::Manifest;
use tokio::sync::mpsc;

use super::batch::Reply;
use super::{unexpected, Client, PutReceipt};
use crate::error::{Error, NodeFailure, Result};
use crate::transport::Transport;

impl Client {
    pub(super) fn signer(&self) -> Result<&Arc<Signer>> {
        self.signer.as_ref().map_err(|reason| Error::CannotSign {
            reason: reason.clone(),
        })
    }

    /// The envelopes (in share order 1..=n) reordered to the transport's node positions.
    pub(super) fn addressed(&self, envelopes: Vec<ShareEnvelope>) -> Result<Vec<ShareEnvelope>> {
        let mut slots: Vec<Option<ShareEnvelope>> = envelopes.into_iter().map(Some).collect();
        self.manifest
            .nodes
            .iter()
            .map(|node| {
                slots
                    .get_mut(usize::from(node.index.get()) - 1)
                    .and_then(Option::take)
                    .ok_or_else(|| {
                        Error::Protocol(bunsan_protocol::Error::InvalidManifest {
                            reason: format!("no share for {} at index {}", node.id, node.index),
                        })
                    })
            })
            .collect()
    }

    /// Each node's public key from the certificate its (verified) TLS handshake presented, in
    /// share order; `None` where the node cannot be reached now.
    pub(super) async fn recipients(&self) -> Vec<Option<RecipientKey>> {
        recipients(&self.transport, &self.manifest).await
    }

    /// Sends `requests[i]` to node i and waits for the write quorum.
    pub(super) async fn write(
        &self,
        key: &RecordKey,
        version: Version,
        requests: Vec<Request>,
    ) -> Result<PutReceipt> {
        let total = requests.len();
        self.write_quorum(key, version, total, self.fan_out(requests))
            .await
    }

    /// Counts the `total` nodes' `replies` to a put or delete of `version` of `key` until W
    /// acknowledged (then waits `straggler_grace` for the others) or the quorum is out of
    /// reach.
    pub(super) async fn write_quorum(
        &self,
        key: &RecordKey,
        version: Version,
        total: usize,
        mut replies: mpsc::UnboundedReceiver<Reply>,
    ) -> Result<PutReceipt> {
        let needed = usize::from(self.manifest.write_quorum);
        let mut acked = Vec::new();
        // Nodes that keep older versions under this one until told it is complete.
        let mut keeping = Vec::new();
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
                Ok(Response::Stored(PutOutcome::StoredKeepingOlder { .. })) => {
                    acked.push(node);
                    keeping.push(position);
                }
                Ok(Response::Stored(PutOutcome::Superseded { current })) => {
                    newer = newer.max(Some(current));
                    failures.push(NodeFailure {
                        node,
                        reason: format!("holds a newer version {current}"),
                        code: None,
                    });
                }
                Ok(Response::Error(error)) => failures.push(NodeFailure::refused(node, &error)),
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
            // The nodes that kept older versions under this one may drop them now.
            self.commits
                .queue(&self.transport, self.options.timeout, keeping, key, version);
            for position in 0..total {
                let id = &self.transport.node(position).id;
                if !acked.contains(id) && !failures.iter().any(|f| &f.node == id) {
                    failures.push(NodeFailure {
                        node: id.clone(),
                        reason: "still writing when the quorum was met".to_owned(),
                        code: None,
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
}

/// Each node's public key from the certificate its (verified) TLS handshake presented (a
/// cached connection's, or a new one's within `connect_timeout`), in share order; `None`
/// where the node cannot be reached now.
pub(super) async fn recipients(
    transport: &Arc<Transport>,
    manifest: &Manifest,
) -> Vec<Option<RecipientKey>> {
    let mut recipients = vec![None; usize::from(manifest.scheme.shares())];
    let mut lookups = tokio::task::JoinSet::new();
    for position in 0..manifest.nodes.len() {
        let transport = Arc::clone(transport);
        lookups.spawn(async move { (position, transport.peer_certificate(position).await) });
    }
    while let Some(done) = lookups.join_next().await {
        let Ok((position, certificate)) = done else {
            continue;
        };
        let node = transport.node(position);
        let key = certificate.and_then(|der| {
            RecipientKey::from_certificate(&der).map_err(|e| NodeFailure {
                node: node.id.clone(),
                reason: e.to_string(),
                code: None,
            })
        });
        match (key, recipients.get_mut(usize::from(node.index.get()) - 1)) {
            (Ok(key), Some(slot)) => *slot = Some(key),
            (Err(failure), _) => tracing::warn!(node = %failure.node,
                reason = %failure.reason,
                "cannot seal this node's nonce: repair of its share will need its own copy"),
            (Ok(_), None) => {}
        }
    }
    recipients
}
