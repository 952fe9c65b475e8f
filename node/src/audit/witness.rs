//! Witnessing: this node cosigns the other nodes' checkpoints, but only ones consistent with
//! the last checkpoint of the same log it cosigned (the C2SP tlog-witness idea).
//!
//! ```text
//! witness ── WitnessCheckpoint { from_size: last cosigned } ──▶ log node
//!         ◀── certificate, latest signed checkpoint, consistency proof ──
//! check: certificate chains to the CA and names the log node; checkpoint signed by it;
//!        size ≥ last, same root at equal size, proof from last to new verifies
//! store the cosigned checkpoint durably (the witness's memory of this log), then
//!         ── Cosign { note + cosignature line, own certificate } ──▶ log node (stores it)
//! ```
//!
//! A log node that rewrites, truncates or forks its log can re-sign whatever it likes, but it
//! cannot make the witnesses' stored checkpoints consistent with the new history: the next
//! round fails (and raises an alarm entry in the witness's own log), and an auditor holding the
//! witnesses' cosigned checkpoints sees the contradiction offline.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bunsan_client::{Client, ClientOptions};
use bunsan_protocol::audit::wire::{AuditAnswer, AuditQuery, WitnessReport};
use bunsan_protocol::audit::{Actor, Outcome, ACTION_WITNESS};
use bunsan_protocol::checkpoint::{self, log_origin, Checkpoint};
use bunsan_protocol::merkle;
use bunsan_protocol::message::{ErrorCode, Request, Response};
use bunsan_protocol::node_key::NodeKey;
use bunsan_protocol::note::SignedNote;
use bunsan_protocol::RequestId;
use std::sync::Arc;

use super::event::AuditEvent;
use super::log::AuditLog;

/// How long one witnessing call to one node may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Cosigns the other nodes' audit logs.
pub struct Witness {
    log: Arc<AuditLog>,
    client: Client,
    peers: Vec<String>,
    round: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Witness")
            .field("peers", &self.peers)
            .finish_non_exhaustive()
    }
}

/// Why one log could not be cosigned.
enum Trouble {
    /// The node could not be asked (down, slow): retried next round, no alarm.
    Unreachable(String),
    /// What it showed is inconsistent or badly signed: an alarm in this node's own log.
    Integrity(String),
}

impl Witness {
    /// A witness for `log` (which must have a signing identity) talking to every other node of
    /// `manifest` under `identity` (the node's own certificate). Must be called in a runtime.
    pub fn new(
        log: Arc<AuditLog>,
        manifest: bunsan_protocol::manifest::Manifest,
        identity: bunsan_client::Identity,
    ) -> crate::Result<Self> {
        let peers = manifest
            .nodes
            .iter()
            .map(|n| n.id.clone())
            .filter(|id| id != log.node_id())
            .collect();
        let options = ClientOptions {
            timeout: CALL_TIMEOUT,
            ..ClientOptions::default()
        };
        Ok(Self {
            client: Client::new(manifest, identity, options)?,
            log,
            peers,
            round: tokio::sync::Mutex::new(()),
        })
    }

    /// One cosigning round against every other node; one report per node.
    pub async fn round(&self) -> Vec<WitnessReport> {
        // Rounds do not overlap: the stored "last cosigned" must move forward one step at a time.
        let _one_round = self.round.lock().await;
        let mut reports = Vec::with_capacity(self.peers.len());
        for peer in &self.peers {
            let report = match self.witness(peer).await {
                Ok(size) => WitnessReport {
                    log: peer.clone(),
                    cosigned: Some(size),
                    problem: None,
                },
                Err(Trouble::Unreachable(reason)) => {
                    tracing::debug!(peer, %reason, "could not witness a peer's audit log");
                    WitnessReport {
                        log: peer.clone(),
                        cosigned: None,
                        problem: Some(reason),
                    }
                }
                Err(Trouble::Integrity(reason)) => {
                    tracing::error!(peer, %reason, "WITNESS ALARM: refusing to cosign a peer's audit log");
                    let alarm = AuditEvent {
                        actor: Actor::Node,
                        action: ACTION_WITNESS.to_owned(),
                        key: None,
                        version: None,
                        purpose: None,
                        request_id: None,
                        outcome: Outcome::error(ErrorCode::Corrupt, &format!("{peer}: {reason}")),
                    };
                    if let Err(e) = self.log.append(alarm).await {
                        tracing::error!(error = %e, "could not log a witness alarm");
                    }
                    WitnessReport {
                        log: peer.clone(),
                        cosigned: None,
                        problem: Some(reason),
                    }
                }
            };
            reports.push(report);
        }
        reports
    }

    async fn witness(&self, peer: &str) -> Result<u64, Trouble> {
        let integrity = |reason: String| Trouble::Integrity(reason);
        let Some(signing) = self.log.signing() else {
            return Err(Trouble::Unreachable(
                "this node has no signing key".to_owned(),
            ));
        };
        let origin = log_origin(peer);
        let store = self.log.store();
        let witnessed = store
            .witnessed()
            .await
            .map_err(|e| Trouble::Unreachable(format!("cannot read the witness state: {e}")))?;
        let last: Option<Checkpoint> = witnessed
            .iter()
            .find(|(log, _)| log == peer)
            .and_then(|(_, note)| SignedNote::parse(note).ok())
            .and_then(|note| Checkpoint::parse_text(&note.text).ok());
        let from_size = last.as_ref().map_or(0, |c| c.size);
        let request = Request::Audit {
            request_id: RequestId::random(&mut rand::rng()),
            query: AuditQuery::WitnessCheckpoint { from_size },
        };
        let (certificate, note, proof) = match self.client.call(peer, &request).await {
            Ok(Response::Audit(AuditAnswer::WitnessCheckpoint {
                certificate,
                note,
                proof,
            })) => (certificate, note, proof),
            Ok(Response::Error(error)) if error.code == ErrorCode::BadRequest => {
                // The log says it is smaller than what this witness cosigned: a rollback.
                return Err(integrity(format!("refused to prove consistency: {error}")));
            }
            Ok(other) => return Err(Trouble::Unreachable(format!("unexpected answer {other:?}"))),
            Err(e) => return Err(Trouble::Unreachable(e.to_string())),
        };
        let key = NodeKey::from_certificate(&signing.ca, &certificate, Some(peer))
            .map_err(|e| integrity(e.to_string()))?;
        let verified =
            checkpoint::verify_checkpoint(&note, &key).map_err(|e| integrity(e.to_string()))?;
        let new = &verified.checkpoint;
        if new.origin != origin {
            return Err(integrity(format!("the checkpoint is for {}", new.origin)));
        }
        if let Some(last) = &last {
            if new.size < last.size {
                return Err(integrity(format!(
                    "rolled back: size {} after a cosigned size {}",
                    new.size, last.size
                )));
            }
            merkle::verify_consistency(last.size, new.size, &last.root, &new.root, &proof)
                .map_err(|e| {
                    integrity(format!(
                        "fork: the checkpoint of size {} is not consistent with the cosigned \
                         checkpoint of size {}: {e}",
                        new.size, last.size
                    ))
                })?;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let cosignature = checkpoint::cosign(&verified.note.text, &signing.signer, now)
            .map_err(|e| Trouble::Unreachable(e.to_string()))?;
        let mut cosigned = verified.note.clone();
        cosigned.add_signature(cosignature);
        let cosigned = cosigned.to_text();
        // Remember before telling: a witness that crashed after sending but before storing
        // would forget the newest checkpoint it vouched for.
        store
            .put_witnessed(peer, &cosigned)
            .await
            .map_err(|e| Trouble::Unreachable(format!("cannot store the witness state: {e}")))?;
        let request = Request::Audit {
            request_id: RequestId::random(&mut rand::rng()),
            query: AuditQuery::Cosign {
                note: cosigned,
                certificate: signing.certificate.clone(),
            },
        };
        match self.client.call(peer, &request).await {
            Ok(Response::Audit(AuditAnswer::CosignatureStored)) => Ok(new.size),
            Ok(other) => Err(Trouble::Unreachable(format!(
                "the cosignature was not stored: {other:?}"
            ))),
            Err(e) => Err(Trouble::Unreachable(e.to_string())),
        }
    }
}
