//! Answers to [`AuditQuery`]s: the auditor's reads and the other nodes' witnessing calls.
//! The role check happened before (see [`AuditQuery::action`]); this is what each query does.

use bunsan_protocol::audit::wire::{
    AuditAnswer, AuditQuery, AUDIT_CHECKPOINTS_LIMIT_MAX, AUDIT_ENTRIES_LIMIT_MAX,
};
use bunsan_protocol::checkpoint::{self, Checkpoint};
use bunsan_protocol::message::{ErrorCode, RemoteError, Response};
use bunsan_protocol::node_key::NodeKey;
use bunsan_protocol::note::SignedNote;
use bunsan_protocol::role::PeerIdentity;

use super::log::AuditLog;
use super::witness::Witness;
use crate::error::Error;

type Answer = Result<AuditAnswer, (ErrorCode, String)>;

/// Answers one audit query from `peer`.
pub(crate) async fn answer(
    log: &AuditLog,
    witness: Option<&Witness>,
    peer: &PeerIdentity,
    query: AuditQuery,
) -> Response {
    let result = match query {
        AuditQuery::Entries { from, limit } => entries(log, from, limit).await,
        AuditQuery::Checkpoints {
            from_size,
            limit,
            sign_now,
        } => checkpoints(log, from_size, limit, sign_now).await,
        AuditQuery::Consistency { from_size, to_size } => log
            .consistency_proof(from_size, to_size)
            .map(|hashes| AuditAnswer::Proof { hashes })
            .map_err(refusal),
        AuditQuery::Inclusion { seq, size } => log
            .inclusion_proof(seq, size)
            .map(|hashes| AuditAnswer::Proof { hashes })
            .map_err(refusal),
        AuditQuery::Witnessed => log
            .store()
            .witnessed()
            .await
            .map(|all| AuditAnswer::Witnessed {
                notes: all.into_iter().map(|(_, note)| note).collect(),
            })
            .map_err(refusal),
        AuditQuery::CosignNow => match witness {
            Some(witness) => Ok(AuditAnswer::CosignRound {
                reports: witness.round().await,
            }),
            None => Err((
                ErrorCode::Unavailable,
                "this node has no cluster manifest (node.toml `cluster`), so it witnesses no one"
                    .to_owned(),
            )),
        },
        AuditQuery::WitnessCheckpoint { from_size } => witness_checkpoint(log, from_size).await,
        AuditQuery::Cosign { note, certificate } => {
            add_cosignature(log, peer, &note, &certificate).await
        }
    };
    match result {
        Ok(answer) => Response::Audit(answer),
        Err((code, message)) => Response::Error(RemoteError { code, message }),
    }
}

async fn entries(log: &AuditLog, from: u64, limit: u32) -> Answer {
    if limit == 0 {
        return Err((
            ErrorCode::BadRequest,
            "a limit must be at least 1".to_owned(),
        ));
    }
    let limit = limit.min(AUDIT_ENTRIES_LIMIT_MAX) as usize;
    let records = log.records(from, limit).await.map_err(refusal)?;
    Ok(AuditAnswer::Entries {
        records,
        log_size: log.size(),
    })
}

async fn checkpoints(log: &AuditLog, from_size: u64, limit: u32, sign_now: bool) -> Answer {
    let certificate = certificate(log)?;
    if sign_now {
        log.checkpoint_now().await.map_err(refusal)?;
    }
    let limit = limit.clamp(1, AUDIT_CHECKPOINTS_LIMIT_MAX) as usize;
    let notes = log
        .store()
        .checkpoints(from_size, limit)
        .await
        .map_err(refusal)?;
    Ok(AuditAnswer::Checkpoints { certificate, notes })
}

async fn witness_checkpoint(log: &AuditLog, from_size: u64) -> Answer {
    let certificate = certificate(log)?;
    let note = log.checkpoint_now().await.map_err(refusal)?;
    let size = SignedNote::parse(&note)
        .and_then(|n| Checkpoint::parse_text(&n.text))
        .map_err(|e| refusal(Error::Protocol(e)))?
        .size;
    if from_size > size {
        return Err((
            ErrorCode::BadRequest,
            format!("you cosigned a checkpoint of size {from_size}, but this log has {size}"),
        ));
    }
    let proof = log.consistency_proof(from_size, size).map_err(refusal)?;
    Ok(AuditAnswer::WitnessCheckpoint {
        certificate,
        note,
        proof,
    })
}

/// Stores `peer`'s cosignature with the checkpoint it cosigns, after checking that the
/// certificate is the one `peer` connected with, that it chains to the CA, that the note is a
/// checkpoint this node signed, and that the cosignature verifies.
async fn add_cosignature(
    log: &AuditLog,
    peer: &PeerIdentity,
    note: &str,
    certificate: &[u8],
) -> Answer {
    let refuse = |reason: String| (ErrorCode::BadRequest, reason);
    let ca = &log
        .signing()
        .ok_or_else(|| {
            (
                ErrorCode::Unavailable,
                "this node has no signing identity".to_owned(),
            )
        })?
        .ca;
    if *blake3::hash(certificate).as_bytes() != peer.fingerprint {
        return Err(refuse(
            "the certificate is not the one this connection was made with".to_owned(),
        ));
    }
    let cosigner = NodeKey::from_certificate(ca, certificate, Some(&peer.name))
        .map_err(|e| refuse(e.to_string()))?;
    let offered = SignedNote::parse(note).map_err(|e| refuse(e.to_string()))?;
    let checkpoint = Checkpoint::parse_text(&offered.text).map_err(|e| refuse(e.to_string()))?;
    match checkpoint::verify_cosignature(&offered, &cosigner) {
        Ok(Some(_)) => {}
        Ok(None) => return Err(refuse(format!("no cosignature by {} in it", peer.name))),
        Err(e) => return Err(refuse(e.to_string())),
    }
    let _one_at_a_time = log.cosign_lock.lock().await;
    let stored = log
        .store()
        .checkpoint(checkpoint.size)
        .await
        .map_err(refusal)?
        .ok_or_else(|| refuse(format!("no checkpoint of size {} here", checkpoint.size)))?;
    let mut stored = SignedNote::parse(&stored).map_err(|e| refusal(Error::Protocol(e)))?;
    if stored.text != offered.text {
        return Err(refuse(format!(
            "that is not the checkpoint of size {} this node signed",
            checkpoint.size
        )));
    }
    let name = checkpoint::cosigner_name(&peer.name);
    let key_id = checkpoint::cosigner_key_id(&cosigner);
    for line in offered.signatures_by(&name, key_id) {
        stored.add_signature(line.clone());
    }
    log.store()
        .put_checkpoint(checkpoint.size, &stored.to_text())
        .await
        .map_err(refusal)?;
    Ok(AuditAnswer::CosignatureStored)
}

fn certificate(log: &AuditLog) -> Result<Vec<u8>, (ErrorCode, String)> {
    log.signing().map(|s| s.certificate.clone()).ok_or_else(|| {
        (
            ErrorCode::Unavailable,
            "this node has no signing identity, so it signs no checkpoints".to_owned(),
        )
    })
}

fn refusal(error: Error) -> (ErrorCode, String) {
    match error {
        Error::Protocol(e) => (ErrorCode::BadRequest, e.to_string()),
        other => {
            tracing::error!(error = %other, "audit query failed");
            (ErrorCode::Unavailable, other.to_string())
        }
    }
}
