//! The object-store backends against a real Garage S3 server: the same conformance suites the
//! sled and in-memory stores pass, each property in a folder of its own in one bucket.
//!
//! Garage is installed once per machine by `tests/garage/install.sh` (about 8 minutes the
//! first time). These tests fail, never skip, when it cannot run.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use bunsan_node::audit::AuditStore;
use bunsan_node::objstore::{ObjectSite, S3Config};
use bunsan_node::store::s3::S3Store;
use bunsan_node::store::ShareStore;
use bunsan_protocol::{RecordKey, ShareIndex};
use bunsan_tests::garage::Garage;

/// One Garage for every test of this binary, with its credentials and sealing key in a
/// directory that lives as long as the process.
struct Server {
    garage: Garage,
    config: S3Config,
    _dir: tempfile::TempDir,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let garage = Garage::start(&["conformance"]);
        let dir = tempfile::tempdir().expect("tempdir");
        let config = garage.s3_config(dir.path(), "conformance", "unset");
        Server {
            garage,
            config,
            _dir: dir,
        }
    })
}

/// A site in a folder no other test uses.
fn fresh_site() -> ObjectSite {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let server = server();
    let config = S3Config {
        prefix: format!(
            "run-{}/t{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ),
        ..server.config.clone()
    };
    assert!(!server.garage.endpoint.is_empty());
    ObjectSite::connect(&config).expect("connect to Garage")
}

struct GarageShares {
    site: ObjectSite,
}

#[async_trait]
impl bunsan_node::store::conformance::Harness for GarageShares {
    async fn open(&self) -> Arc<dyn ShareStore> {
        Arc::new(
            S3Store::open(self.site.clone(), ShareIndex::new(1).expect("index"))
                .await
                .expect("open the S3 store on Garage"),
        )
    }

    async fn reopen(&self, store: Arc<dyn ShareStore>) -> Arc<dyn ShareStore> {
        drop(store);
        self.open().await
    }

    async fn corrupt(&self, key: &RecordKey, raw: &[u8]) {
        S3Store::plant_raw_value(&self.site, key, raw)
            .await
            .expect("damage a stored value in Garage");
    }
}

bunsan_node::share_store_conformance_tests!(GarageShares { site: fresh_site() });

struct GarageAudit {
    site: ObjectSite,
}

#[async_trait]
impl bunsan_node::audit::conformance::Harness for GarageAudit {
    async fn open(&self) -> Arc<dyn AuditStore> {
        bunsan_node::audit::s3::open(self.site.clone())
            .await
            .expect("open the S3 audit store on Garage")
    }

    async fn reopen(&self, store: Arc<dyn AuditStore>) -> Arc<dyn AuditStore> {
        drop(store);
        self.open().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_store_passes_the_conformance_suite_on_garage() {
    bunsan_node::audit::conformance::run_all(&GarageAudit { site: fresh_site() }).await;
}
