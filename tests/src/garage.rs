//! A real Garage S3 server for the object-store tests, started by `tests/garage/start.sh`.
//!
//! The script installs Garage 2.5.0 once per machine (`tests/garage/install.sh`, about
//! 8 minutes the first time), writes a single-node configuration on free loopback ports,
//! applies the layout, imports one access key and creates one bucket per site. A test that
//! needs Garage and cannot start it fails; it is never skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

use bunsan_node::objstore::S3Config;

/// A running Garage server, killed when dropped.
pub struct Garage {
    dir: tempfile::TempDir,
    pid: i32,
    /// The S3 endpoint, `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The region Garage signs for.
    pub region: String,
    /// The access key id allowed on every bucket.
    pub access_key_id: String,
    /// Its secret.
    pub secret_access_key: String,
}

impl std::fmt::Debug for Garage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Garage")
            .field("endpoint", &self.endpoint)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

/// The repository's `tests/garage` folder.
fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("garage")
}

impl Garage {
    /// Starts Garage with one bucket per name in `buckets`; panics with the script's output if
    /// it cannot (the tests that need it must fail, not skip).
    pub fn start(buckets: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let output = Command::new("bash")
            .arg(scripts().join("start.sh"))
            .arg(dir.path())
            .args(buckets)
            .output()
            .expect("run tests/garage/start.sh");
        assert!(
            output.status.success(),
            "Garage did not start: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let pid: i32 = std::fs::read_to_string(dir.path().join("garage.pid"))
            .expect("garage.pid")
            .trim()
            .parse()
            .expect("a pid");
        let env = std::fs::read_to_string(dir.path().join("env")).expect("env file");
        let value = |name: &str| {
            env.lines()
                .find_map(|line| line.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("{name} missing from Garage's env file"))
                .to_owned()
        };
        Self {
            endpoint: value("GARAGE_ENDPOINT"),
            region: value("GARAGE_REGION"),
            access_key_id: value("AWS_ACCESS_KEY_ID"),
            secret_access_key: value("AWS_SECRET_ACCESS_KEY"),
            pid,
            dir,
        }
    }

    /// Writes a credentials file (mode 0600) into `dir` and returns its path.
    pub fn write_credentials(&self, dir: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("s3-credentials.toml");
        std::fs::write(
            &path,
            format!(
                "access_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
                self.access_key_id, self.secret_access_key
            ),
        )
        .expect("write credentials");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        path
    }

    /// An `[store.s3]` configuration for `bucket` under `prefix`, with credentials and a new
    /// sealing key written into `dir`.
    pub fn s3_config(&self, dir: &Path, bucket: &str, prefix: &str) -> S3Config {
        let sealing_key = dir.join("store.key");
        if !sealing_key.exists() {
            bunsan_node::objstore::write_sealing_key(&sealing_key).expect("sealing key");
        }
        S3Config {
            endpoint: self.endpoint.clone(),
            bucket: bucket.to_owned(),
            region: self.region.clone(),
            prefix: prefix.to_owned(),
            credentials: Some(self.write_credentials(dir)),
            sealing_key,
            allow_http: true,
        }
    }

    /// The server's working directory (configuration, data, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        // The server is the start script's orphan, not our child: nothing to wait for.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}
