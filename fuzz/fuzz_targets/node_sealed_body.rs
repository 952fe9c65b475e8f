//! A sealed object body as the object store returns it: opening must fail cleanly, never
//! panic, on anything not sealed by the node.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The object name is everything before the first zero byte, the body everything after.
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let name = String::from_utf8_lossy(&data[..split]);
    let body = data.get(split + 1..).unwrap_or_default();
    bunsan_node::fuzzing::sealed_body(&name, body);
});
