//! Entry points for the fuzz targets in `fuzz/` and for the never-panic property tests below:
//! every decoder of bytes a node reads back from its own disk or its site's object store.
//!
//! Hidden from the docs: these are not an API, only the seams that let `cargo fuzz` and
//! `proptest` reach decoders that are otherwise private. Each returns whether the input
//! decoded; what matters is that none of them panics, loops or allocates without bound on
//! any input.

use std::sync::{Arc, OnceLock};

use crate::objstore::ObjectSite;

/// A stored share value (sled, memory, or inside an S3 object) under `key`: head, checksum,
/// envelope, the staged (refresh) form, and the list of kept older versions.
pub fn stored_value(key: &[u8], value: &[u8]) -> bool {
    let decoded = crate::store::codec::decode(key, value).is_ok();
    let staged = crate::store::codec::decode_staged(key, value).is_ok();
    let head = crate::store::codec::head(key, value).is_ok();
    // The same bytes as a sled `older` value: the list of versions kept under a head.
    let kept = crate::store::retained::read(key, Some(value), None).is_ok();
    decoded || staged || head || kept
}

/// An opened S3 share object: its name, its frame, and the value inside.
pub fn s3_share_object(name: &str, body: &[u8]) -> bool {
    crate::store::s3::S3Store::check_object(name, body)
}

/// An opened S3 audit object: batch and commit names, batch bodies, the head hint,
/// checkpoint names.
pub fn s3_audit_object(name: &str, body: &[u8]) -> bool {
    crate::audit::s3::check_object(name, body)
}

/// An audit journal file holding `bytes`: opened (scanned, a torn tail cut) and read back.
/// Uses one scratch file per process in the temporary directory.
pub fn audit_journal(bytes: &[u8]) -> bool {
    let path = std::env::temp_dir().join(format!(
        "bunsan-fuzz-journal-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    if std::fs::write(&path, bytes).is_err() {
        return false;
    }
    let read =
        crate::audit::journal::Journal::open(&path).and_then(|journal| journal.read(0, usize::MAX));
    let _ = std::fs::remove_file(&path);
    read.is_ok()
}

/// A sealed object body as the object store returns it, opened under `name`.
pub fn sealed_body(name: &str, body: &[u8]) -> bool {
    static SITE: OnceLock<ObjectSite> = OnceLock::new();
    let site = SITE.get_or_init(|| {
        ObjectSite::new(
            Arc::new(object_store::memory::InMemory::new()),
            "fuzz",
            &[7; 32],
        )
        .expect("a site over memory")
    });
    site.open(name, body).is_ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn stored_values_never_panic(key in proptest::collection::vec(any::<u8>(), 0..40),
                                     value in proptest::collection::vec(any::<u8>(), 0..300)) {
            stored_value(&key, &value);
        }

        #[test]
        fn s3_share_objects_never_panic(hk in "[0-9a-f]{64}", leaf in "[0-9a-f]{40}-[tdx][0-9a-f]{16}",
                                        noise in ".{0,80}",
                                        body in proptest::collection::vec(any::<u8>(), 0..300)) {
            s3_share_object(&format!("shares/{hk}/{leaf}"), &body);
            s3_share_object(&noise, &body);
        }

        #[test]
        fn s3_audit_objects_never_panic(start in any::<u64>(), tag in "[0-9a-f]{16}", noise in ".{0,60}",
                                        body in proptest::collection::vec(any::<u8>(), 0..300)) {
            s3_audit_object(&format!("audit/entries/{start:020}-{tag}"), &body);
            s3_audit_object(&format!("audit/commits/{start:020}-{tag}"), &body);
            s3_audit_object(&noise, &body);
        }

        #[test]
        fn audit_journals_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            audit_journal(&bytes);
        }

        #[test]
        fn sealed_bodies_never_panic(name in ".{0,60}", body in proptest::collection::vec(any::<u8>(), 0..200)) {
            prop_assert!(!sealed_body(&name, &body), "random bytes never open");
        }
    }

    #[test]
    fn valid_inputs_do_decode() {
        // The seams reach real decoders: a batch of one entry decodes, a sealed body opens.
        let mut batch = vec![1u8];
        batch.extend_from_slice(&1u32.to_be_bytes());
        batch.extend_from_slice(&[9; 32]);
        batch.extend_from_slice(&3u32.to_be_bytes());
        batch.extend_from_slice(b"abc");
        assert!(s3_audit_object(
            "audit/entries/00000000000000000005-00000000000000ab",
            &batch
        ));
        let site = ObjectSite::new(
            Arc::new(object_store::memory::InMemory::new()),
            "fuzz",
            &[7; 32],
        )
        .expect("site");
        let body = site.seal("x", b"payload").expect("seal");
        assert!(sealed_body("x", &body));
        let mut journal = Vec::new();
        crate::audit::journal::frame_into(&mut journal, b"\x01entry", 0);
        assert!(audit_journal(&journal));
    }
}
