//! Any bytes a node may answer: decoding a response frame must never panic.
#![no_main]
use bunsan_protocol::frame::{self, FRAME_MAX_BYTES};
use bunsan_protocol::message::Response;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = frame::decode::<Response>(data, FRAME_MAX_BYTES, "response");
});
