//! An opened S3 share object and its name, as a hostile object store could list and serve
//! them: parsing the name, the frame and the value must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The object name is everything before the first zero byte, the body everything after.
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let name = String::from_utf8_lossy(&data[..split]);
    let body = data.get(split + 1..).unwrap_or_default();
    bunsan_node::fuzzing::s3_share_object(&name, body);
});
