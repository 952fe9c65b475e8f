//! Roles carried in certificates, and what each role may do.
//!
//! A Bunsan certificate names its holder's role in a URI subject alternative name
//! `urn:bunsan:role:<role>` (a standard SAN any X.509 tool shows, and one that path validation
//! ignores). Every node decides on its own, from the verified client certificate alone, whether
//! a request is allowed: there is no central authorisation service to compromise.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::{Error, Result};

/// The URI prefix of the role SAN.
pub const ROLE_URI_PREFIX: &str = "urn:bunsan:role:";

/// What a certificate holder is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    /// Writes records (put); can never read them back.
    Collector,
    /// Rebuilds records (get), stating a purpose each time.
    Reader,
    /// Reads audit logs, nothing else.
    Auditor,
    /// Deletes, lists, repairs, refreshes, sees status; cannot read records or shares.
    Admin,
    /// A storage node, for node-to-node calls.
    Node,
}

/// Everything a request can ask a node to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    /// Liveness and identity.
    Health,
    /// Store a share.
    Put,
    /// Release a share.
    Get,
    /// Tombstone a record.
    Delete,
    /// Tell a node that a version it stored reached its write quorum.
    Commit,
    /// List the inventory.
    List,
    /// Counts and sizes.
    Status,
    /// Read audit logs: entries, checkpoints, proofs, cosignatures (auditor).
    AuditRead,
    /// Witness another node's audit log: fetch its checkpoint and consistency proof, hand back
    /// a cosignature (node-to-node).
    Witness,
    /// A checked inventory of every stored value (the input of repair).
    Inventory,
    /// Start a repair at a helper, or a refresh (stage, commit, abort) at a participant.
    Maintain,
    /// Send a masked repair contribution or a refresh deal to another node.
    Contribute,
}

impl Role {
    /// All roles, in a stable order (for help texts and test matrices).
    pub const ALL: [Role; 5] = [
        Role::Collector,
        Role::Reader,
        Role::Auditor,
        Role::Admin,
        Role::Node,
    ];

    /// Whether a holder of this role may perform `action`. Health is open to every role so
    /// operators can probe a node with any identity; share release is for readers only.
    pub fn allows(self, action: Action) -> bool {
        use Action as A;
        matches!(
            (self, action),
            (_, A::Health)
                | (Role::Collector, A::Put | A::Commit)
                | (Role::Reader, A::Get)
                | (Role::Auditor, A::AuditRead)
                | (
                    Role::Admin,
                    A::Delete | A::Commit | A::List | A::Status | A::Inventory | A::Maintain
                )
                | (Role::Node, A::Status | A::List | A::Witness | A::Contribute)
        )
    }

    /// The role's name as written in certificates and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Collector => "collector",
            Role::Reader => "reader",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
            Role::Node => "node",
        }
    }

    /// The SAN URI that carries this role in a certificate.
    pub fn uri(self) -> String {
        format!("{ROLE_URI_PREFIX}{}", self.as_str())
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| Error::UnknownRole { role: s.to_owned() })
    }
}

/// Who is on the other end of a connection, as read from its (already verified) certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeerIdentity {
    /// The certificate's role.
    pub role: Role,
    /// The subject common name (e.g. `reader`, `node-3`, `clinic-7-collector`).
    pub name: String,
    /// BLAKE3 of the certificate's DER: names exactly one certificate.
    pub fingerprint: [u8; 32],
}

impl PeerIdentity {
    /// Reads role, name and fingerprint from a DER certificate. The certificate must carry
    /// exactly one role URI; it is the caller's job to have verified the chain to the CA.
    pub fn from_certificate(der: &[u8]) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidCertificate { reason };
        let (rest, cert) =
            X509Certificate::from_der(der).map_err(|e| invalid(format!("not X.509 DER: {e}")))?;
        if !rest.is_empty() {
            return Err(invalid(format!(
                "{} bytes after the certificate",
                rest.len()
            )));
        }
        let name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .ok_or_else(|| invalid("no subject common name".to_owned()))?
            .to_owned();
        let san = cert
            .subject_alternative_name()
            .map_err(|e| invalid(format!("bad subject alternative name: {e}")))?
            .ok_or_else(|| invalid("no subject alternative name (no role)".to_owned()))?;
        let mut roles = san
            .value
            .general_names
            .iter()
            .filter_map(|general| match general {
                GeneralName::URI(uri) => uri.strip_prefix(ROLE_URI_PREFIX),
                _ => None,
            });
        let role = roles
            .next()
            .ok_or_else(|| invalid(format!("no {ROLE_URI_PREFIX}<role> URI")))?;
        if roles.next().is_some() {
            return Err(invalid("more than one role".to_owned()));
        }
        Ok(Self {
            role: role.parse()?,
            name,
            fingerprint: *blake3::hash(der).as_bytes(),
        })
    }

    /// The fingerprint as lowercase hex.
    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.fingerprint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_matrix_is_exactly_as_documented() {
        use Action as A;
        let expected: &[(Role, &[Action])] = &[
            (Role::Collector, &[A::Health, A::Put, A::Commit]),
            (Role::Reader, &[A::Health, A::Get]),
            (Role::Auditor, &[A::Health, A::AuditRead]),
            (
                Role::Admin,
                &[
                    A::Health,
                    A::Delete,
                    A::Commit,
                    A::List,
                    A::Status,
                    A::Inventory,
                    A::Maintain,
                ],
            ),
            (
                Role::Node,
                &[A::Health, A::Status, A::List, A::Witness, A::Contribute],
            ),
        ];
        let all = [
            A::Health,
            A::Put,
            A::Get,
            A::Delete,
            A::Commit,
            A::List,
            A::Status,
            A::AuditRead,
            A::Witness,
            A::Inventory,
            A::Maintain,
            A::Contribute,
        ];
        for (role, allowed) in expected {
            for action in all {
                assert_eq!(
                    role.allows(action),
                    allowed.contains(&action),
                    "{role} / {action:?}"
                );
            }
        }
    }

    #[test]
    fn role_names_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(matches!(
            PeerIdentity::from_certificate(b"not a certificate"),
            Err(Error::InvalidCertificate { .. })
        ));
    }
}
