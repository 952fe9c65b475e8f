//! The connection to a site's S3-compatible object store (Ceph RGW, MinIO, Garage, AWS S3),
//! shared by the object-store share store ([`crate::store::s3`]) and audit store
//! ([`crate::audit::s3`]).
//!
//! What the object store's operators see, and why it is no more than that:
//! - **Names** are keyed hashes ([`ObjectSite::hashed`]): a record key, an actor or a purpose
//!   never appears in a name, and without the node's sealing key names cannot be tested
//!   against guessed keys.
//! - **Bodies** are sealed with AES-256-GCM under a key derived from the sealing key, with the
//!   object's full name as associated data ([`ObjectSite::seal`]): the envelope inside (which
//!   names its record key) and audit entries stay unreadable, and a body copied under another
//!   name, such as an old version under a newer version's name, fails to open.
//! - Sizes, timing and the count of objects stay visible; see docs/OPERATIONS.md.
//!
//! Every write that must not overwrite uses a conditional put (`If-None-Match: *`): two node
//! processes serving one site can race, but never silently replace each other's object.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use futures_util::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The `[store.s3]` table of `node.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The S3 endpoint URL, e.g. `https://rgw.site-1.example:443`.
    pub endpoint: String,
    /// The bucket holding this site's shares and audit log.
    pub bucket: String,
    /// The region the endpoint signs for (`garage` for a default Garage, any region for
    /// RGW and MinIO).
    #[serde(default = "default_region")]
    pub region: String,
    /// A folder inside the bucket, so one bucket can hold several sites in tests. Default:
    /// the bucket root.
    #[serde(default)]
    pub prefix: String,
    /// A TOML file with `access_key_id` and `secret_access_key`, readable by the node's user
    /// only. Without it the standard `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`
    /// environment variables are used.
    #[serde(default)]
    pub credentials: Option<PathBuf>,
    /// The sealing key: 32 random bytes as 64 hex digits, readable by the node's user only,
    /// the same file on every process serving the site. Losing it loses every share of the
    /// site (repair regenerates them from the other sites); back it up with the node key.
    pub sealing_key: PathBuf,
    /// Allows a plain `http://` endpoint. Off by default: shares and audit entries are
    /// sealed, but the S3 credentials would cross the network in the clear.
    #[serde(default)]
    pub allow_http: bool,
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    access_key_id: String,
    secret_access_key: String,
}

impl S3Config {
    /// Resolves the relative paths inside against `base` (the directory of `node.toml`).
    pub fn resolve_paths(&mut self, base: &Path) {
        self.sealing_key = base.join(&self.sealing_key);
        if let Some(credentials) = &mut self.credentials {
            *credentials = base.join(&*credentials);
        }
    }

    /// Checks what serde cannot: an http(s) endpoint (plain http only if allowed), a bucket
    /// name, a prefix without leading or trailing slashes.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Error::Config {
            path: PathBuf::from("<store.s3>"),
            reason,
        };
        if self.endpoint.starts_with("http://") {
            if !self.allow_http {
                return Err(invalid(format!(
                    "store.s3.endpoint {} is plain http; use https or set allow_http = true",
                    self.endpoint
                )));
            }
        } else if !self.endpoint.starts_with("https://") {
            return Err(invalid(format!(
                "store.s3.endpoint {} must start with https:// (or http://)",
                self.endpoint
            )));
        }
        if self.bucket.is_empty() {
            return Err(invalid("store.s3.bucket is empty".to_owned()));
        }
        if self.prefix.starts_with('/') || self.prefix.ends_with('/') {
            return Err(invalid(format!(
                "store.s3.prefix {:?} must not start or end with '/'",
                self.prefix
            )));
        }
        Ok(())
    }
}

/// A site's bucket (or a folder of it) with the node's sealing key: named, sealed objects.
#[derive(Clone)]
pub struct ObjectSite {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    name_key: Zeroizing<[u8; 32]>,
    seal_key: Arc<LessSafeKey>,
}

impl std::fmt::Debug for ObjectSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectSite")
            .field("store", &self.store.to_string())
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Whether a conditional create wrote the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The object did not exist and now holds the new body.
    New,
    /// An object of that name already existed; nothing was written.
    AlreadyExists,
}

/// One listed object: its name below the site's prefix, and its size in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The name as given to [`ObjectSite::create`] and friends.
    pub name: String,
    /// The stored (sealed) size.
    pub size: u64,
}

const SEAL_FORMAT: u8 = 1;

/// The longest one request may take, and the longest its retries may go on. Bounded well below
/// the audit store's commit deadline (`audit::s3::MARK_DEADLINE`, 5 s): a commit marker must
/// land before other processes may judge its batch abandoned. A share of a 4 MiB chunk needs
/// about 1 MB/s to the object store to fit.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(4);

impl ObjectSite {
    /// Connects to the bucket described by `config` (no request is made yet) with the
    /// sealing key and credentials it names.
    pub fn connect(config: &S3Config) -> Result<Self> {
        config.validate()?;
        let key = read_sealing_key(&config.sealing_key)?;
        let mut builder = AmazonS3Builder::new()
            .with_endpoint(&config.endpoint)
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            // Path-style addressing works with every S3-compatible server.
            .with_virtual_hosted_style_request(false)
            // One ClientOptions for every HTTP setting: setting it replaces the builder's,
            // so allow_http must be inside it, not set on the builder beside it.
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_allow_http(config.allow_http)
                    .with_timeout(REQUEST_TIMEOUT)
                    .with_connect_timeout(REQUEST_TIMEOUT),
            )
            .with_retry(object_store::RetryConfig {
                max_retries: 2,
                retry_timeout: REQUEST_TIMEOUT,
                ..object_store::RetryConfig::default()
            });
        match &config.credentials {
            Some(path) => {
                let credentials = read_credentials(path)?;
                builder = builder
                    .with_access_key_id(credentials.access_key_id)
                    .with_secret_access_key(credentials.secret_access_key);
            }
            None => {
                let var = |name: &str| {
                    std::env::var(name).map_err(|_| Error::Config {
                        path: PathBuf::from("<store.s3>"),
                        reason: format!(
                            "no store.s3.credentials file and no {name} in the environment"
                        ),
                    })
                };
                builder = builder
                    .with_access_key_id(var("AWS_ACCESS_KEY_ID")?)
                    .with_secret_access_key(var("AWS_SECRET_ACCESS_KEY")?);
            }
        }
        let store = builder.build().map_err(|e| Error::Config {
            path: PathBuf::from("<store.s3>"),
            reason: e.to_string(),
        })?;
        Self::new(Arc::new(store), &config.prefix, &key)
    }

    /// A site over any [`ObjectStore`] (tests use `object_store`'s in-memory store), under
    /// `prefix`, sealing with `key`.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, key: &[u8; 32]) -> Result<Self> {
        let name_key = Zeroizing::new(blake3::derive_key("bunsan object names v1", key));
        let seal_bytes = Zeroizing::new(blake3::derive_key("bunsan object bodies v1", key));
        let unbound =
            UnboundKey::new(&AES_256_GCM, seal_bytes.as_slice()).map_err(|_| Error::Config {
                path: PathBuf::from("<store.s3>"),
                reason: "the sealing key was refused by AES-256-GCM".to_owned(),
            })?;
        Ok(Self {
            store,
            prefix: prefix.to_owned(),
            name_key,
            seal_key: Arc::new(LessSafeKey::new(unbound)),
        })
    }

    /// A stable name component for `bytes` in `domain`: 64 hex digits of a BLAKE3 keyed hash.
    /// Order and equality of hashes say nothing about the inputs without the key.
    pub fn hashed(&self, domain: &str, bytes: &[u8]) -> String {
        let mut hasher = blake3::Hasher::new_keyed(&self.name_key);
        hasher.update(domain.as_bytes());
        hasher.update(&[0]);
        hasher.update(bytes);
        hasher.finalize().to_hex().to_string()
    }

    fn path(&self, name: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.prefix))
        }
    }

    /// Seals `plaintext` for the object `name`: format byte, random nonce, AES-256-GCM
    /// ciphertext and tag, with the name as associated data.
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let mut body = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + 16);
        body.push(SEAL_FORMAT);
        body.extend_from_slice(&nonce);
        let mut sealed = plaintext.to_vec();
        self.seal_key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| self.failure("seal", name, "AES-256-GCM refused the body".to_owned()))?;
        body.extend_from_slice(&sealed);
        Ok(body)
    }

    /// Opens a body sealed by [`ObjectSite::seal`] for `name`; a damaged, truncated or moved
    /// body is [`Error::Corrupt`].
    pub fn open(&self, name: &str, body: &[u8]) -> Result<Vec<u8>> {
        let corrupt = |reason: &str| Error::Corrupt {
            key: name.to_owned(),
            reason: reason.to_owned(),
        };
        if body.len() < 1 + NONCE_LEN + 16 {
            return Err(corrupt("sealed object shorter than its nonce and tag"));
        }
        if body[0] != SEAL_FORMAT {
            return Err(corrupt("unknown sealed object format"));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&body[1..1 + NONCE_LEN]);
        let mut opened = body[1 + NONCE_LEN..].to_vec();
        let len = self
            .seal_key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut opened,
            )
            .map_err(|_| {
                corrupt("sealed object does not open: damaged, moved, or sealed with another key")
            })?
            .len();
        opened.truncate(len);
        Ok(opened)
    }

    fn failure(&self, operation: &'static str, name: &str, reason: String) -> Error {
        Error::ObjectStore {
            operation,
            name: name.to_owned(),
            reason,
        }
    }

    /// Writes `plaintext` sealed under `name` only if no object of that name exists
    /// (`If-None-Match: *`); durable when it returns [`Created::New`].
    pub async fn create(&self, name: &str, plaintext: &[u8]) -> Result<Created> {
        let body = self.seal(name, plaintext)?;
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&self.path(name), PutPayload::from(body), options)
            .await
        {
            Ok(_) => Ok(Created::New),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(Created::AlreadyExists),
            Err(e) => Err(self.failure("create", name, e.to_string())),
        }
    }

    /// Writes `plaintext` sealed under `name`, replacing any object of that name; durable
    /// when it returns. Only for values that may be replaced (checkpoints, staging).
    pub async fn replace(&self, name: &str, plaintext: &[u8]) -> Result<()> {
        let body = self.seal(name, plaintext)?;
        self.store
            .put(&self.path(name), PutPayload::from(body))
            .await
            .map(|_| ())
            .map_err(|e| self.failure("put", name, e.to_string()))
    }

    /// The opened body of `name`, or `None` if there is no such object.
    pub async fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let body = match self.store.get(&self.path(name)).await {
            Ok(result) => result
                .bytes()
                .await
                .map_err(|e| self.failure("get", name, e.to_string()))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.failure("get", name, e.to_string())),
        };
        self.open(name, &body).map(Some)
    }

    /// The raw stored body of `name` (not opened), or `None`: for tests and damage reports.
    pub async fn get_raw(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match self.store.get(&self.path(name)).await {
            Ok(result) => Ok(Some(
                result
                    .bytes()
                    .await
                    .map_err(|e| self.failure("get", name, e.to_string()))?
                    .to_vec(),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.failure("get", name, e.to_string())),
        }
    }

    /// Writes `body` under `name` as is, unsealed and unconditionally: for tests that damage
    /// stored objects the way a faulty disk or a hostile operator would.
    #[doc(hidden)]
    pub async fn put_raw(&self, name: &str, body: Vec<u8>) -> Result<()> {
        self.store
            .put(&self.path(name), PutPayload::from(body))
            .await
            .map(|_| ())
            .map_err(|e| self.failure("put", name, e.to_string()))
    }

    /// Removes `name`; removing a missing object is not an error.
    pub async fn delete(&self, name: &str) -> Result<()> {
        match self.store.delete(&self.path(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failure("delete", name, e.to_string())),
        }
    }

    /// Up to `limit` objects whose names start with `prefix` (a folder, ending in `/`) and
    /// sort after `offset`, in name order.
    pub async fn list(
        &self,
        prefix: &str,
        offset: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Listed>> {
        let folder = self.path(prefix.trim_end_matches('/'));
        let mut stream = match offset {
            Some(offset) => self
                .store
                .list_with_offset(Some(&folder), &self.path(offset)),
            None => self.store.list(Some(&folder)),
        };
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        let mut listed = Vec::new();
        while listed.len() < limit {
            match stream.try_next().await {
                Ok(Some(meta)) => {
                    let full = meta.location.as_ref();
                    listed.push(Listed {
                        name: full.get(strip..).unwrap_or(full).to_owned(),
                        size: meta.size,
                    });
                }
                Ok(None) => break,
                Err(e) => return Err(self.failure("list", prefix, e.to_string())),
            }
        }
        // Servers list in name order; sorting keeps that promise for stores that do not.
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(listed)
    }
}

fn check_private(path: &Path, what: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::metadata(path).map_err(|e| Error::Config {
        path: path.to_owned(),
        reason: format!("cannot read the {what}: {e}"),
    })?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Config {
            path: path.to_owned(),
            reason: format!("the {what} is readable by others (mode {mode:o}); chmod 600 it"),
        });
    }
    Ok(())
}

fn read_sealing_key(path: &Path) -> Result<Zeroizing<[u8; 32]>> {
    check_private(path, "sealing key")?;
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| Error::Config {
        path: path.to_owned(),
        reason: format!("cannot read the sealing key: {e}"),
    })?);
    let mut key = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), key.as_mut_slice()).map_err(|_| Error::Config {
        path: path.to_owned(),
        reason: "the sealing key must be 64 hex digits (32 random bytes), e.g. from \
                 `openssl rand -hex 32`"
            .to_owned(),
    })?;
    Ok(key)
}

fn read_credentials(path: &Path) -> Result<Credentials> {
    check_private(path, "S3 credentials file")?;
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| Error::Config {
        path: path.to_owned(),
        reason: format!("cannot read the S3 credentials: {e}"),
    })?);
    toml::from_str(&text).map_err(|e| Error::Config {
        path: path.to_owned(),
        reason: format!("S3 credentials: {e}"),
    })
}

/// Writes a new random sealing key to `path` (mode 0600), refusing to replace an existing
/// file: replacing a site's key would make every object it sealed unreadable.
pub fn write_sealing_key(path: &Path) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut key = Zeroizing::new([0u8; 32]);
    rand::fill(key.as_mut_slice());
    let text = Zeroizing::new(hex::encode(key.as_slice()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::Io {
            path: path.to_owned(),
            action: "create the sealing key",
            source: e,
        })?;
    file.write_all(format!("{}\n", text.as_str()).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::Io {
            path: path.to_owned(),
            action: "write the sealing key",
            source: e,
        })
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    fn site(key: u8) -> ObjectSite {
        ObjectSite::new(Arc::new(InMemory::new()), "site-1", &[key; 32]).expect("site")
    }

    #[test]
    fn a_sealed_body_opens_only_under_its_own_name_and_key() {
        let site = site(1);
        let body = site.seal("v/a/1", b"share bytes").expect("seal");
        assert!(!body.windows(5).any(|w| w == b"share"));
        assert_eq!(site.open("v/a/1", &body).expect("open"), b"share bytes");
        assert!(matches!(
            site.open("v/a/2", &body),
            Err(Error::Corrupt { .. })
        ));
        let other = ObjectSite::new(Arc::new(InMemory::new()), "", &[2; 32]).expect("site");
        assert!(matches!(
            other.open("v/a/1", &body),
            Err(Error::Corrupt { .. })
        ));
        let mut flipped = body.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            site.open("v/a/1", &flipped),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            site.open("v/a/1", &body[..10]),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn hashed_names_depend_on_the_key_and_the_domain() {
        let (a, b) = (site(1), site(2));
        assert_eq!(a.hashed("share", b"k"), a.hashed("share", b"k"));
        assert_ne!(a.hashed("share", b"k"), b.hashed("share", b"k"));
        assert_ne!(a.hashed("share", b"k"), a.hashed("staged", b"k"));
        assert_eq!(a.hashed("share", b"k").len(), 64);
    }

    #[tokio::test]
    async fn create_never_overwrites_and_list_is_in_name_order() {
        let site = site(3);
        assert_eq!(
            site.create("x/b", b"1").await.expect("create"),
            Created::New
        );
        assert_eq!(
            site.create("x/b", b"2").await.expect("create"),
            Created::AlreadyExists
        );
        assert_eq!(
            site.get("x/b").await.expect("get").as_deref(),
            Some(&b"1"[..])
        );
        site.create("x/a", b"0").await.expect("create");
        site.create("y/a", b"0").await.expect("create");
        let names: Vec<String> = site
            .list("x/", None, 10)
            .await
            .expect("list")
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(names, ["x/a", "x/b"]);
        let after: Vec<String> = site
            .list("x/", Some("x/a"), 10)
            .await
            .expect("list")
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(after, ["x/b"]);
        site.delete("x/b").await.expect("delete");
        site.delete("x/b").await.expect("deleting again is fine");
        assert_eq!(site.get("x/b").await.expect("get"), None);
    }

    #[test]
    fn sealing_keys_are_created_once_private_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.key");
        write_sealing_key(&path).expect("write");
        assert!(
            write_sealing_key(&path).is_err(),
            "an existing key is never replaced"
        );
        read_sealing_key(&path).expect("read back");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = read_sealing_key(&path).expect_err("world-readable key refused");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::write(&path, "not hex").expect("write");
        let err = read_sealing_key(&path).expect_err("bad key refused");
        assert!(err.to_string().contains("64 hex digits"), "{err}");
    }
}
