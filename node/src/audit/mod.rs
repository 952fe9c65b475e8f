//! The node's audit log: every request, allowed or refused, durably appended before it is
//! answered, hash-chained, committed in an RFC 6962 Merkle tree, checkpointed with the node's
//! key and cosigned by the other nodes. See docs/AUDIT.md for the model.
//!
//! ```text
//! Handler::handle ─ AuditEvent ─▶ AuditLog (writer task: number, date, chain, group commit)
//!                                    └─▶ AuditStore (sled in data_dir/audit | S3 bucket | memory)
//! answer sent only after the append is durable; a failed append refuses the request
//! Witness ─ every cosign_interval ─▶ each other node: checkpoint + proof ─▶ cosign ─▶ send back
//! ```
//!
//! - [`store`]: the [`AuditStore`] trait and the memory backend; [`sled`]: the durable one
//!   (entries in an append-only journal file, `journal`; checkpoints in sled);
//!   [`s3`]: one log shared by every process of a site in its bucket; [`conformance`]: the
//!   suite all pass.
//! - [`log`]: [`AuditLog`]: appends, the in-memory Merkle tree, checkpoint signing.
//! - [`event`]: requests and answers to [`AuditEvent`]s.
//! - `service`: the answers to audit queries; [`witness`]: cosigning the other nodes' logs.

#[doc(hidden)]
pub mod conformance;
pub mod event;
pub(crate) mod journal;
pub mod log;
pub mod s3;
pub(crate) mod service;
pub mod sled;
pub mod store;
pub mod witness;

use std::path::Path;
use std::sync::Arc;

use bunsan_protocol::node_key::NodeSigner;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use event::AuditEvent;
pub use log::{AuditLog, AuditOptions, SigningIdentity};
pub use store::{AuditStore, MemoryAuditStore};
pub use witness::Witness;

use crate::config::{NodeConfig, StoreBackend};
use crate::error::{Error, Result};

/// Opens the audit store `config` asks for: sled in `data_dir/audit`, memory with the memory
/// share backend, or the site's bucket (shared by every process of the site) with the S3 one.
pub async fn open_store(config: &NodeConfig) -> Result<Arc<dyn AuditStore>> {
    Ok(match config.store.backend {
        StoreBackend::Sled => {
            sled::SledAuditStore::open(&config.data_dir.join("audit"), &config.id).await?
        }
        StoreBackend::Memory => Arc::new(MemoryAuditStore::new()),
        StoreBackend::S3 => {
            let s3 = config.store.s3.as_ref().ok_or_else(|| Error::Config {
                path: std::path::PathBuf::from("<store>"),
                reason: "store.backend = \"s3\" needs a [store.s3] table".to_owned(),
            })?;
            s3::open(crate::objstore::ObjectSite::connect(s3)?).await?
        }
    })
}

/// Loads the node's signing identity from its certificate, key and CA files.
pub fn load_signing(config: &NodeConfig) -> Result<SigningIdentity> {
    let certificate = first_certificate(&config.cert)?;
    let ca = first_certificate(&config.ca)?;
    let key = PrivateKeyDer::from_pem_file(&config.key).map_err(|e| Error::Config {
        path: config.key.clone(),
        reason: format!("no private key: {e}"),
    })?;
    let PrivateKeyDer::Pkcs8(pkcs8) = key else {
        return Err(Error::Config {
            path: config.key.clone(),
            reason: "the node key must be PKCS#8 (\"PRIVATE KEY\")".to_owned(),
        });
    };
    let signer = NodeSigner::new(&ca, &certificate, pkcs8.secret_pkcs8_der())?;
    Ok(SigningIdentity {
        signer,
        certificate,
        ca,
    })
}

fn first_certificate(path: &Path) -> Result<Vec<u8>> {
    let bad = |reason: String| Error::Config {
        path: path.to_owned(),
        reason,
    };
    CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(format!("cannot read certificates: {e}")))?
        .next()
        .ok_or_else(|| bad("no certificate".to_owned()))?
        .map(|cert| cert.to_vec())
        .map_err(|e| bad(format!("bad PEM: {e}")))
}

#[cfg(test)]
#[path = "handler_tests.rs"]
mod handler_tests;
