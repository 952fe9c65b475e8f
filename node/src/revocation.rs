//! Certificate revocation: the CRL every client certificate is checked against, reloaded
//! without a restart, and applied to connections that are already open.
//!
//! ```text
//! crl.pem ─(start · SIGHUP · file changed)─▶ load: PEM → CRLs → verifier → verify our own
//!   certificate with it (proves the CRL is signed by our CA and speaks for our certificates)
//!     ├─ valid ────▶ new rustls config on the endpoint (new handshakes)
//!     │              └─▶ sweep: every live connection's certificate is verified again;
//!     │                  those now refused are closed with CLOSE_REVOKED
//!     ├─ expired ──▶ installed all the same: it refuses every handshake and the sweep closes
//!     │              every connection (fail closed) until a fresh CRL arrives
//!     └─ invalid ──▶ (unparsable, bad signature, another CA's) the previous CRL stays, an
//!                    error is logged; at start the node refuses to run
//! ```
//!
//! A CRL can also expire while loaded: a tick notices, logs, and sweeps. The verifier itself
//! already refuses new handshakes from that moment (`enforce_revocation_expiration`).
//!
//! Why the node checks a CRL by verifying its own certificate with it: that runs exactly the
//! code that will judge clients (rustls-webpki), so "valid" here means "the verifier will use
//! it", with no second parser to drift from it. Our own certificate being revoked does not make
//! the CRL invalid: it is logged, since peers will now refuse this node's calls.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use bunsan_client::tls::{
    client_cert_verifier, quic_server_config, server_tls_config_with_verifier, Identity,
};
use bunsan_protocol::integrity::Trust;
use bunsan_protocol::role::{PeerIdentity, Role};
use quinn::{Connection, Endpoint, VarInt};
use rustls::server::danger::ClientCertVerifier;
use rustls::CertificateError;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use tokio::sync::watch;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;
use x509_parser::time::ASN1Time;

use crate::config::NodeConfig;
use crate::error::{Error, Result};

/// Connection close code: the peer's certificate is revoked, or no longer accepted because the
/// CRL expired.
pub const CLOSE_REVOKED: VarInt = VarInt::from_u32(2);

/// How often a node whose CRL polling is off still checks whether its CRL has expired.
const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A CRL this close to its `nextUpdate` gets a warning at every load, so operators renew it
/// before the node fails closed.
const EXPIRY_WARNING: Duration = Duration::from_secs(3 * 24 * 3600);

/// What a node knows about the CRL it enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlStatus {
    /// The CRL number (decimal), if the CRL carries one: a newer CRL has a higher number.
    pub number: Option<String>,
    /// How many certificates it revokes.
    pub revoked: usize,
    /// After this the CRL is expired and the node refuses every client.
    pub next_update: Option<SystemTime>,
    /// Whether it was already expired when loaded.
    pub expired: bool,
    /// Live connections closed because their certificate is no longer accepted.
    pub connections_closed: usize,
}

/// The node's identity and the CRL it enforces, before the endpoint exists.
pub(crate) struct Initial {
    identity: Identity,
    path: Option<PathBuf>,
    current: Current,
}

/// The verifier in force and what it was built from.
struct Current {
    verifier: Arc<dyn ClientCertVerifier>,
    digest: Option<[u8; 32]>,
    status: Option<CrlStatus>,
    /// Set once the expiry of the loaded CRL has been acted on, so it is done once.
    expiry_handled: bool,
    /// The last state of the file the poller saw (its digest or why it could not be read),
    /// so a broken file is reported once, not every second.
    last_seen: Option<std::result::Result<[u8; 32], String>>,
}

impl Initial {
    /// Loads the node's identity (which must carry the node role) and its CRL, if configured.
    /// An unusable CRL stops the start: there is no earlier one to fall back to. An expired one
    /// does not: the node starts closed, and a renewed CRL opens it without a restart.
    pub(crate) fn load(config: &NodeConfig) -> Result<Self> {
        let identity = Identity::from_files(&config.cert, &config.key, &config.ca)?;
        if identity.role() != Role::Node {
            return Err(Error::NotANodeCertificate {
                path: config.cert.clone(),
                role: identity.role(),
            });
        }
        let current = match &config.crl {
            Some(path) => {
                let loaded = load(&identity, path, UnixTime::now())?;
                log_loaded("start", path, &loaded.status);
                Current::from(loaded)
            }
            None => {
                tracing::warn!("no crl configured: revoked certificates are not refused");
                Current {
                    verifier: client_cert_verifier(&identity, Vec::new())?,
                    digest: None,
                    status: None,
                    expiry_handled: false,
                    last_seen: None,
                }
            }
        };
        Ok(Self {
            identity,
            path: config.crl.clone(),
            current,
        })
    }

    /// The rustls configuration to start serving with.
    pub(crate) fn tls_config(&self) -> Result<rustls::ServerConfig> {
        Ok(server_tls_config_with_verifier(
            &self.identity,
            self.current.verifier.clone(),
        )?)
    }

    /// Hands the CRL over to the running endpoint. `template` is the endpoint's server
    /// configuration (limits, transport): reloads replace only its TLS part.
    /// `writers` is the trust the node checks writer certificates with: every reload makes it
    /// forget the certificates it remembered, so none is trusted on a check made before the
    /// CRL in force.
    pub(crate) fn serve(
        self,
        endpoint: Endpoint,
        template: quinn::ServerConfig,
        writers: Trust,
        stopped: watch::Receiver<bool>,
    ) -> Revocation {
        Revocation {
            identity: self.identity,
            writers,
            path: self.path,
            endpoint,
            template,
            stopped,
            reloading: Mutex::new(()),
            current: Mutex::new(self.current),
            live: Mutex::new(HashMap::new()),
        }
    }
}

/// The CRL in force on a serving node, and the connections it applies to.
pub(crate) struct Revocation {
    identity: Identity,
    path: Option<PathBuf>,
    endpoint: Endpoint,
    template: quinn::ServerConfig,
    /// The writer-certificate trust of the node's checks, cleared on every reload.
    writers: Trust,
    stopped: watch::Receiver<bool>,
    /// Held for a whole reload, so that two (SIGHUP and a poll) cannot install their files in
    /// the opposite order from the one they read them in.
    reloading: Mutex<()>,
    current: Mutex<Current>,
    live: Mutex<HashMap<usize, Live>>,
}

/// A connection whose peer passed the handshake, with the chain it presented.
struct Live {
    connection: Connection,
    chain: Vec<CertificateDer<'static>>,
    name: String,
    role: Role,
}

/// Keeps a connection in the live set until dropped.
pub(crate) struct Admitted {
    revocation: Arc<Revocation>,
    id: usize,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        lock(&self.revocation.live).remove(&self.id);
    }
}

impl Revocation {
    /// Registers a freshly handshaken connection, then checks its certificate against the
    /// verifier in force *now*. Registering first closes the race with a reload: either the
    /// reload's sweep sees this connection, or this check sees the reload's verifier.
    pub(crate) fn admit(
        self: &Arc<Self>,
        connection: &Connection,
        peer: &PeerIdentity,
    ) -> std::result::Result<Admitted, String> {
        let chain = connection
            .peer_identity()
            .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
            .map(|chain| *chain)
            .filter(|chain| !chain.is_empty())
            .ok_or("no client certificate chain")?;
        let id = connection.stable_id();
        lock(&self.live).insert(
            id,
            Live {
                connection: connection.clone(),
                chain: chain.clone(),
                name: peer.name.clone(),
                role: peer.role,
            },
        );
        let admitted = Admitted {
            revocation: Arc::clone(self),
            id,
        };
        let verifier = lock(&self.current).verifier.clone();
        verifier
            .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
            .map_err(|e| close_reason(&e))?;
        Ok(admitted)
    }

    /// The writer-certificate trust this reloads clear.
    pub(crate) fn writers(&self) -> &Trust {
        &self.writers
    }

    /// Reads the CRL file again and, if it is usable, enforces it on new handshakes and on
    /// every live connection. An unusable file leaves the previous CRL in force.
    pub(crate) fn reload(&self, trigger: &'static str) -> Result<Option<CrlStatus>> {
        // First, whatever the outcome: remembered writer certificates are checked again.
        self.writers.forget_verified();
        let Some(path) = &self.path else {
            tracing::info!(trigger, "no crl configured: nothing to reload");
            return Ok(None);
        };
        let _reloading = lock(&self.reloading);
        let now = UnixTime::now();
        let loaded = load(&self.identity, path, now).inspect_err(|e| {
            tracing::error!(trigger, path = %path.display(), error = %e,
                "crl reload failed: the previous crl stays in force");
        })?;
        let tls = server_tls_config_with_verifier(&self.identity, loaded.verifier.clone())?;
        let mut server = self.template.clone();
        server.crypto = quic_server_config(tls)?.crypto;
        {
            let mut current = lock(&self.current);
            // After shutdown began the endpoint must stay closed to new handshakes.
            if !*self.stopped.borrow() {
                self.endpoint.set_server_config(Some(server));
            }
            let last_seen = current.last_seen.take();
            *current = Current::from(loaded);
            current.last_seen = last_seen;
        }
        let mut status = lock(&self.current).status.clone();
        let closed = self.sweep(now);
        if let Some(status) = &mut status {
            status.connections_closed = closed;
            log_loaded(trigger, path, status);
        }
        Ok(status)
    }

    /// Polls the CRL file (when `poll` is set) and watches for the loaded CRL's expiry until
    /// the node stops.
    pub(crate) async fn watch(self: Arc<Self>, poll: Option<Duration>) {
        if self.path.is_none() {
            return;
        }
        let mut stopped = self.stopped.clone();
        let mut ticks = tokio::time::interval(poll.unwrap_or(EXPIRY_CHECK_INTERVAL));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stopped.wait_for(|&stop| stop) => break,
                _ = ticks.tick() => {}
            }
            // File reads and the sweep's signature checks (one per live connection) block;
            // keep them off the threads that serve requests.
            let (this, span) = (Arc::clone(&self), tracing::Span::current());
            let checked = tokio::task::spawn_blocking(move || {
                span.in_scope(|| {
                    if poll.is_some() {
                        this.poll_file();
                    }
                    this.check_expiry();
                })
            });
            if let Err(e) = checked.await {
                tracing::error!(error = %e, "the crl check failed");
            }
        }
    }

    /// Reloads when the file's content differs from what was last seen; reports a file that
    /// cannot be read once per change of state.
    fn poll_file(&self) {
        let Some(path) = &self.path else { return };
        // A CRL is a few KiB: reading it once a second is cheaper than tracking mtimes, and
        // it notices a replacement that kept the old mtime.
        let seen = std::fs::read(path)
            .map(|bytes| *blake3::hash(&bytes).as_bytes())
            .map_err(|e| e.to_string());
        let changed = {
            let mut current = lock(&self.current);
            if current.last_seen.as_ref() == Some(&seen) {
                return;
            }
            current.last_seen = Some(seen.clone());
            matches!(seen, Ok(digest) if current.digest != Some(digest))
        };
        match seen {
            Err(error) => tracing::error!(path = %path.display(), %error,
                "cannot read the crl file: the previous crl stays in force"),
            // The reload logs its own outcome.
            Ok(_) if changed => drop(self.reload("file changed")),
            Ok(_) => {}
        }
    }

    /// Acts once on the loaded CRL reaching its `nextUpdate`.
    fn check_expiry(&self) {
        let now = SystemTime::now();
        {
            let mut current = lock(&self.current);
            let expired = current
                .status
                .as_ref()
                .and_then(|status| status.next_update)
                .is_some_and(|next| next <= now);
            if !expired || current.expiry_handled {
                return;
            }
            current.expiry_handled = true;
        }
        tracing::error!(
            "the crl expired: refusing every client until a fresh crl is installed \
             (bunsan-cluster crl DIR --renew)"
        );
        self.sweep(UnixTime::now());
    }

    /// Verifies every live connection's certificate with the verifier in force and closes
    /// those it refuses. Returns how many were closed.
    fn sweep(&self, now: UnixTime) -> usize {
        let verifier = lock(&self.current).verifier.clone();
        // Verify outside the lock: connections come and go meanwhile.
        let live: Vec<(Connection, Vec<CertificateDer<'static>>, String, Role)> = lock(&self.live)
            .values()
            .map(|l| {
                (
                    l.connection.clone(),
                    l.chain.clone(),
                    l.name.clone(),
                    l.role,
                )
            })
            .collect();
        let mut closed = 0;
        for (connection, chain, name, role) in live {
            if let Err(e) = verifier.verify_client_cert(&chain[0], &chain[1..], now) {
                let reason = close_reason(&e);
                tracing::warn!(peer = %name, %role, remote = %connection.remote_address(),
                    %reason, "closing a live connection: its certificate is no longer accepted");
                connection.close(CLOSE_REVOKED, reason.as_bytes());
                closed += 1;
            }
        }
        closed
    }
}

impl From<LoadedCrl> for Current {
    fn from(loaded: LoadedCrl) -> Self {
        Self {
            verifier: loaded.verifier,
            digest: Some(loaded.digest),
            // An already-expired CRL was acted on by whoever installed it.
            expiry_handled: loaded.status.expired,
            status: Some(loaded.status),
            last_seen: None,
        }
    }
}

/// A CRL file that passed every check.
struct LoadedCrl {
    verifier: Arc<dyn ClientCertVerifier>,
    digest: [u8; 32],
    status: CrlStatus,
}

/// Reads `path` and checks that it holds CRLs of the cluster CA that the verifier will use.
fn load(identity: &Identity, path: &Path, now: UnixTime) -> Result<LoadedCrl> {
    let invalid = |reason: String| Error::InvalidCrl {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|source| Error::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })?;
    let crls = CertificateRevocationListDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("not PEM: {e}")))?;
    if crls.is_empty() {
        return Err(invalid("no X509 CRL block in the file".to_owned()));
    }
    let mut status = CrlStatus {
        number: None,
        revoked: 0,
        next_update: None,
        expired: false,
        connections_closed: 0,
    };
    for der in &crls {
        let (_, crl) = CertificateRevocationList::from_der(der)
            .map_err(|e| invalid(format!("not a CRL: {e}")))?;
        status.number = crl.crl_number().map(ToString::to_string);
        status.revoked += crl.iter_revoked_certificates().count();
        let next = crl.next_update().map(|t| {
            SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or(0))
        });
        status.next_update = status.next_update.min(next).or(next);
    }
    let verifier = client_cert_verifier(identity, crls).map_err(|e| invalid(e.to_string()))?;
    match verifier.verify_client_cert(identity.certificate(), &[], now) {
        Ok(_) => {}
        Err(rustls::Error::InvalidCertificate(CertificateError::Revoked)) => {
            tracing::error!(path = %path.display(),
                "this node's own certificate is revoked: other nodes will refuse its calls");
        }
        Err(rustls::Error::InvalidCertificate(
            CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. },
        )) => status.expired = true,
        Err(e) => {
            return Err(invalid(format!(
                "this node's own certificate does not verify with it: {e} \
                 (is it signed by this cluster's CA?)"
            )))
        }
    }
    Ok(LoadedCrl {
        verifier,
        digest: *blake3::hash(&pem).as_bytes(),
        status,
    })
}

/// Logs a CRL that is now in force, loudly if it fails the node closed or soon will.
fn log_loaded(trigger: &'static str, path: &Path, status: &CrlStatus) {
    let number = status.number.as_deref().unwrap_or("-");
    let next_update = status
        .next_update
        .map_or_else(|| "none".to_owned(), utc_text);
    if status.expired {
        tracing::error!(trigger, path = %path.display(), number, %next_update,
            closed = status.connections_closed,
            "crl loaded but EXPIRED: refusing every client until a fresh crl is installed \
             (bunsan-cluster crl DIR --renew)");
        return;
    }
    tracing::info!(trigger, path = %path.display(), number, revoked = status.revoked,
        %next_update, closed = status.connections_closed, "crl in force");
    let soon = status
        .next_update
        .and_then(|next| next.duration_since(SystemTime::now()).ok())
        .is_some_and(|left| left < EXPIRY_WARNING);
    if soon {
        tracing::warn!(%next_update, "the crl expires within 3 days: renew it \
            (bunsan-cluster crl DIR --renew) or the node will refuse every client");
    }
}

/// A time for log lines, in UTC.
fn utc_text(time: SystemTime) -> String {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    ASN1Time::from_timestamp(secs)
        .map_or_else(|_| format!("{secs} s after 1970"), |t| t.to_string())
}

/// The close reason a client sees when its certificate is refused: short, it goes on the wire.
fn close_reason(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InvalidCertificate(CertificateError::Revoked) => {
            "certificate revoked".to_owned()
        }
        rustls::Error::InvalidCertificate(
            CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. },
        ) => "the node's crl expired: refusing every client".to_owned(),
        other => format!("certificate no longer accepted: {other}"),
    }
}

/// Locks `mutex`; a panic elsewhere while holding it leaves data that is still consistent
/// (every critical section here is a single insert, remove or replace).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
#[path = "revocation_tests.rs"]
mod tests;
