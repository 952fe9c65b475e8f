//! An opened S3 audit object and its name (batch, commit, head hint, checkpoint): decoding
//! must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The object name is everything before the first zero byte, the body everything after.
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let name = String::from_utf8_lossy(&data[..split]);
    let body = data.get(split + 1..).unwrap_or_default();
    bunsan_node::fuzzing::s3_audit_object(&name, body);
});
