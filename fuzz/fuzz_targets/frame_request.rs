//! Any bytes a client may send: decoding a request frame must never panic.
#![no_main]
use bunsan_protocol::frame::{self, FRAME_MAX_BYTES};
use bunsan_protocol::message::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = frame::decode::<Request>(data, FRAME_MAX_BYTES, "request") {
        // Whatever decodes must encode back to the same frame.
        let again = frame::encode(&request, "request").expect("a decoded request re-encodes");
        assert_eq!(frame::decode::<Request>(&again, FRAME_MAX_BYTES, "request").ok(), Some(request));
    }
    let _ = frame::decode_body::<Request>(data, "request");
});
