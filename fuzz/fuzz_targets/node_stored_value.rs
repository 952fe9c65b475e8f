//! A node's stored share value, as sled or an S3 object hands it back: decoding must never
//! panic, whatever the bytes and the key they are stored under.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The object name is everything before the first zero byte, the body everything after.
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let name = String::from_utf8_lossy(&data[..split]);
    let body = data.get(split + 1..).unwrap_or_default();
    bunsan_node::fuzzing::stored_value(name.as_bytes(), body);
});
