//! A node's audit journal file, whatever its bytes: opening (the scan and the torn-tail cut)
//! and reading it back must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bunsan_node::fuzzing::audit_journal(data);
});
