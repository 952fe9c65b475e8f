//! The node's view of the other nodes, for node-to-node work (repair and refresh).
//!
//! A node learns who its peers are from the cluster manifest (`node.toml` key `cluster`), talks
//! to them with the ordinary client SDK under its own certificate (role `node`, so they verify
//! it like any caller), and learns their public keys from the certificates their TLS handshakes
//! presented, which the handshake verified against the cluster CA for the node id. Nothing a
//! coordinator says is trusted for who a peer is.

use std::path::Path;
use std::time::Duration;

use bunsan_client::{Client, ClientOptions, Identity};
use bunsan_protocol::manifest::Manifest;
use bunsan_protocol::message::{Request, Response};
use bunsan_protocol::repair::{certificate_point, MaskKey, PairSecret};
use bunsan_protocol::role::{PeerIdentity, Role};
use bunsan_protocol::ShareIndex;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

use crate::config::NodeConfig;
use crate::error::{Error, Result};

/// How long one node-to-node call may take. Shorter than a node's default request timeout
/// (30 s), so a helper can still report a slow target to the coordinator in time.
const PEER_CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a handshake with a peer may take.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The manifest, a client under this node's identity, and this node's key.
pub(crate) struct Peers {
    manifest: Manifest,
    client: Client,
    key: MaskKey,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("cluster", &self.manifest.name)
            .finish_non_exhaustive()
    }
}

impl Peers {
    /// Reads the manifest at `manifest_path`, checks that it names this node at its index, and
    /// prepares the client and the key. Must be called inside a tokio runtime.
    pub(crate) fn load(config: &NodeConfig, manifest_path: &Path) -> Result<Self> {
        let config_error = |reason: String| Error::Config {
            path: manifest_path.to_owned(),
            reason,
        };
        let text = std::fs::read_to_string(manifest_path)
            .map_err(|e| config_error(format!("cannot read the cluster manifest: {e}")))?;
        let manifest = Manifest::from_toml(&text).map_err(|e| config_error(e.to_string()))?;
        match manifest.node(&config.id) {
            Some(entry) if entry.index == config.index => {}
            Some(entry) => {
                return Err(config_error(format!(
                    "the manifest gives {} index {}, but node.toml says {}",
                    config.id, entry.index, config.index
                )))
            }
            None => {
                return Err(config_error(format!(
                    "the manifest has no node {}",
                    config.id
                )))
            }
        }
        let pem = std::fs::read(&config.key).map_err(|source| Error::Io {
            action: "read",
            path: config.key.clone(),
            source,
        })?;
        let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| Error::Config {
            path: config.key.clone(),
            reason: format!("not a PEM private key: {e}"),
        })?;
        let key = MaskKey::from_der(der.secret_der())?;
        let identity = Identity::from_files(&config.cert, &config.key, &config.ca)?;
        let client = Client::new(
            manifest.clone(),
            identity,
            ClientOptions {
                timeout: PEER_CALL_TIMEOUT,
                connect_timeout: PEER_CONNECT_TIMEOUT,
                ..ClientOptions::default()
            },
        )?;
        Ok(Self {
            manifest,
            client,
            key,
        })
    }

    /// The node id at share index `index`, if the manifest has one.
    pub(crate) fn node_id(&self, index: ShareIndex) -> Option<&str> {
        self.manifest
            .nodes
            .iter()
            .find(|node| node.index == index)
            .map(|node| node.id.as_str())
    }

    /// Checks that `peer` is the node at `from`: role node, and the certificate's name is the
    /// manifest's id for that index (the TLS layer already tied the certificate to the CA).
    pub(crate) fn check_sender(
        &self,
        peer: &PeerIdentity,
        from: ShareIndex,
    ) -> std::result::Result<(), String> {
        match self.node_id(from) {
            Some(id) if peer.role == Role::Node && peer.name == id => Ok(()),
            Some(id) => Err(format!(
                "share {from} belongs to {id}, but the sender is {} {:?}",
                peer.role, peer.name
            )),
            None => Err(format!("the manifest has no node at index {from}")),
        }
    }

    /// The pair secret this node shares with the node at `index`, from an ECDH agreement
    /// with the key of the certificate that node presents.
    pub(crate) async fn pair_secret(
        &self,
        index: ShareIndex,
    ) -> std::result::Result<PairSecret, String> {
        let id = self
            .node_id(index)
            .ok_or_else(|| format!("the manifest has no node at index {index}"))?;
        let certificate = self
            .client
            .peer_certificate(id)
            .await
            .map_err(|e| e.to_string())?;
        let point = certificate_point(&certificate).map_err(|e| e.to_string())?;
        self.key.pair_secret(&point).map_err(|e| e.to_string())
    }

    /// Sends `request` to the node at `index` and returns its answer.
    pub(crate) async fn call(
        &self,
        index: ShareIndex,
        request: &Request,
    ) -> std::result::Result<Response, String> {
        let id = self
            .node_id(index)
            .ok_or_else(|| format!("the manifest has no node at index {index}"))?;
        self.client
            .call(id, request)
            .await
            .map_err(|e| format!("{id}: {e}"))
    }
}
