//! The node's integrity checks: what an envelope must prove before it is stored, and what a
//! stored share must still prove before it is released.
//!
//! On put (and delete), before anything is written:
//! 1. the header signature verifies with the writer certificate, which chains to the cluster
//!    CA now, has the role that may sign it (collector: records, admin: tombstones) and is the
//!    writer named in the version → otherwise [`ErrorCode::BadSignature`];
//! 2. the share matches its signed commitment c_j with its nonce, and the nonce sealed to this
//!    node opens with this node's key to that same nonce → otherwise
//!    [`ErrorCode::BadCommitment`]. (A missing seal is accepted with a warning: the writer
//!    could not reach this node when it dealt; repair then relies on the stored nonce.)
//!
//! On every release, after the store's checksum: the share matches c_j again, so bitrot that
//! slipped past the checksum (or a value rewritten with a fresh checksum) is never served
//! → [`ErrorCode::Corrupt`]. Checked before a share is written and after it is read back: the
//! pair of assertions TigerBeetle's style asks for.

use bunsan_client::tls::Identity;
use bunsan_protocol::envelope::ShareEnvelope;
use bunsan_protocol::integrity::{CommitNonce, Trust};
use bunsan_protocol::message::{ErrorCode, RemoteError};
use bunsan_protocol::refresh::RefreshSeal;
use bunsan_protocol::seal::{self, NodeKey, Openers, SealedNonce};
use bunsan_protocol::ShareIndex;
use rustls_pki_types::UnixTime;

use crate::error::Result;

/// The node's trust anchor and key, as the checks need them. No `Debug`: it holds the key.
pub struct Checks {
    trust: Trust,
    key: NodeKey,
}

impl Checks {
    /// Checks with the cluster CA `trust` and the node's own `key`.
    pub fn new(trust: Trust, key: NodeKey) -> Self {
        Self { trust, key }
    }

    /// The checks of the node whose TLS identity is `identity` (its CA and private key).
    pub fn from_identity(identity: &Identity) -> Result<Self> {
        Ok(Self::new(identity.trust()?, identity.node_key()?))
    }

    /// The cluster CA as these checks trust it. Clones share its memory of verified writer
    /// certificates, so the CRL reload can make it forget them.
    pub(crate) fn trust(&self) -> &Trust {
        &self.trust
    }

    /// Whether `envelope`, addressed to share `own` (already checked), may be stored at `now`.
    /// `openers` keeps the key agreements made for the seals of one request, so that the
    /// envelopes of one writer batch cost one.
    pub(crate) fn admit(
        &self,
        envelope: &ShareEnvelope,
        own: ShareIndex,
        now: UnixTime,
        openers: &mut Openers,
    ) -> std::result::Result<(), RemoteError> {
        let header = &envelope.header;
        self.verify_signatures(envelope, now)?;
        if header.tombstone {
            return Ok(());
        }
        envelope
            .check_commitment()
            .map_err(|e| refusal(ErrorCode::BadCommitment, e.to_string()))?;
        match self.key.open_envelope(envelope, own, openers) {
            Some(opened) => {
                let opened =
                    opened.map_err(|e| refusal(ErrorCode::BadCommitment, e.to_string()))?;
                // Constant-time comparison (`CommitNonce`'s equality).
                if envelope.nonce.as_ref() != Some(&opened) {
                    return Err(refusal(
                        ErrorCode::BadCommitment,
                        "the nonce sealed to this node differs from the envelope's nonce",
                    ));
                }
            }
            None => tracing::warn!(
                key = %header.key,
                version = %header.version,
                "no nonce sealed to this node: a later repair must rely on the stored nonce"
            ),
        }
        Ok(())
    }

    /// The writer's signature over the header and, after a refresh, the refresher's seal
    /// (an admin's signature over the new commitments), both at `now`.
    pub(crate) fn verify_signatures(
        &self,
        envelope: &ShareEnvelope,
        now: UnixTime,
    ) -> std::result::Result<(), RemoteError> {
        self.trust
            .verify_envelope(envelope, now)
            .map_err(|e| refusal(ErrorCode::BadSignature, e.to_string()))?;
        if let Some(seal) = &envelope.refresh {
            self.verify_seal(envelope, seal, now)?;
        }
        Ok(())
    }

    /// The refresher's seal `seal` over the dealing of `envelope`, at `now`.
    pub(crate) fn verify_seal(
        &self,
        envelope: &ShareEnvelope,
        seal: &RefreshSeal,
        now: UnixTime,
    ) -> std::result::Result<(), RemoteError> {
        self.trust
            .verify_refresh(&envelope.header, &envelope.signature, seal, now)
            .map(drop)
            .map_err(|e| refusal(ErrorCode::BadSignature, e.to_string()))
    }

    /// The commitment nonce of share `own` of `envelope`, opened from the seal in force with
    /// this node's key; `None` if there is no seal for it or it does not open (a node under a
    /// new key).
    pub(crate) fn open_own(
        &self,
        envelope: &ShareEnvelope,
        own: ShareIndex,
    ) -> Option<CommitNonce> {
        self.key
            .open_envelope(envelope, own, &mut Openers::default())?
            .ok()
    }

    /// Seals `nonce` for share `own` of `envelope`'s record version to this node's own key
    /// (a refreshed share's new nonce).
    pub(crate) fn seal_own(
        &self,
        envelope: &ShareEnvelope,
        own: ShareIndex,
        nonce: &CommitNonce,
    ) -> bunsan_protocol::Result<SealedNonce> {
        seal::seal(
            &self.key.recipient(),
            &envelope.header.key,
            envelope.header.version,
            own,
            nonce,
            &mut rand::rng(),
        )
    }

    /// Whether a stored envelope may be released: its share still matches its commitment.
    pub(crate) fn release(envelope: &ShareEnvelope) -> std::result::Result<(), RemoteError> {
        envelope.check_commitment().map_err(|e| {
            tracing::error!(key = %envelope.header.key, version = %envelope.header.version,
                error = %e, "stored share fails its commitment; not released");
            refusal(
                ErrorCode::Corrupt,
                format!("stored share of {} is corrupt: {e}", envelope.header.key),
            )
        })
    }
}

fn refusal(code: ErrorCode, message: impl Into<String>) -> RemoteError {
    RemoteError {
        code,
        message: message.into(),
    }
}
