//! Any bytes from a node's audit store or a fetched directory: decoding an audit entry must
//! never panic, and whatever decodes has exactly those bytes as its canonical encoding.
#![no_main]
use bunsan_protocol::audit::AuditEntry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = AuditEntry::decode(data) {
        assert_eq!(entry.encode().expect("a decoded entry re-encodes"), data);
    }
});
