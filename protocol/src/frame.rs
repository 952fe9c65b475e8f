//! Length-prefixed frames: a big-endian u32 body length, then the postcard body.
//!
//! A reader learns from the 4-byte prefix how much to read and can refuse an oversized frame
//! before allocating anything. Decoding never panics and never reads past the announced length.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::envelope::RECORD_MAX_BYTES;
use crate::error::{Error, Result};

/// Bytes in the length prefix.
pub const PREFIX_BYTES: usize = 4;

/// The largest frame body: one share of the largest unchunked record plus 64 KiB for the
/// envelope header and message fields. Anything larger is refused before it is read.
pub const FRAME_MAX_BYTES: u32 = RECORD_MAX_BYTES as u32 + 64 * 1024;

/// Encodes `message` as one frame (prefix + body).
pub fn encode<T: Serialize>(message: &T, what: &'static str) -> Result<Vec<u8>> {
    let mut out = vec![0u8; PREFIX_BYTES];
    postcard::to_io(message, &mut out).map_err(|e| Error::Encode {
        what,
        reason: e.to_string(),
    })?;
    let body_len = out.len() - PREFIX_BYTES;
    if body_len > FRAME_MAX_BYTES as usize {
        return Err(Error::FrameTooLarge {
            len: body_len as u64,
            max: u64::from(FRAME_MAX_BYTES),
        });
    }
    out[..PREFIX_BYTES].copy_from_slice(&(body_len as u32).to_be_bytes());
    Ok(out)
}

/// Reads the body length from a prefix, refusing lengths above `max_bytes`.
pub fn body_len(prefix: [u8; PREFIX_BYTES], max_bytes: u32) -> Result<usize> {
    let len = u32::from_be_bytes(prefix);
    if len > max_bytes {
        return Err(Error::FrameTooLarge {
            len: u64::from(len),
            max: u64::from(max_bytes),
        });
    }
    Ok(len as usize)
}

/// Decodes a frame body (without its prefix) as `T`, refusing trailing bytes.
pub fn decode_body<T: DeserializeOwned>(body: &[u8], what: &'static str) -> Result<T> {
    let (value, rest) = postcard::take_from_bytes(body).map_err(|e| Error::Decode {
        what,
        reason: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(Error::TrailingBytes { extra: rest.len() });
    }
    Ok(value)
}

/// Decodes one whole frame (prefix + body) as `T`: the length must match the bytes exactly.
pub fn decode<T: DeserializeOwned>(frame: &[u8], max_bytes: u32, what: &'static str) -> Result<T> {
    let Some((prefix, body)) = frame.split_first_chunk::<PREFIX_BYTES>() else {
        return Err(Error::FrameTruncated {
            expected: PREFIX_BYTES as u64,
            got: frame.len() as u64,
        });
    };
    let len = body_len(*prefix, max_bytes)?;
    if body.len() < len {
        return Err(Error::FrameTruncated {
            expected: (PREFIX_BYTES + len) as u64,
            got: frame.len() as u64,
        });
    }
    if body.len() > len {
        return Err(Error::TrailingBytes {
            extra: body.len() - len,
        });
    }
    decode_body(body, what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Request, Response};
    use crate::types::RequestId;
    use proptest::prelude::*;

    fn put_request(payload: Vec<u8>) -> Request {
        Request::Put {
            request_id: RequestId([3; 16]),
            envelope: crate::envelope::sample(1, payload),
        }
    }

    #[test]
    fn round_trips_a_request() {
        let req = put_request(vec![5; 100]);
        let frame = encode(&req, "request").expect("encode");
        assert_eq!(frame.len() - PREFIX_BYTES, {
            let mut p = [0u8; 4];
            p.copy_from_slice(&frame[..4]);
            u32::from_be_bytes(p) as usize
        });
        assert_eq!(
            decode::<Request>(&frame, FRAME_MAX_BYTES, "request"),
            Ok(req)
        );
    }

    #[test]
    fn refuses_oversized_truncated_and_trailing() {
        assert!(matches!(
            body_len(u32::MAX.to_be_bytes(), FRAME_MAX_BYTES),
            Err(Error::FrameTooLarge { .. })
        ));
        let frame = encode(&Request::Health, "request").expect("encode");
        let mut longer = frame.clone();
        longer.push(0);
        assert!(matches!(
            decode::<Request>(&longer, FRAME_MAX_BYTES, "request"),
            Err(Error::TrailingBytes { extra: 1 })
        ));
        assert!(matches!(
            decode::<Request>(&frame[..2], FRAME_MAX_BYTES, "request"),
            Err(Error::FrameTruncated { .. })
        ));
        let big = encode(&put_request(vec![0; 64]), "request").expect("encode");
        assert!(matches!(
            decode::<Request>(&big, 16, "request"),
            Err(Error::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn an_inconsistent_envelope_inside_a_request_is_refused() {
        let mut req = put_request(vec![1, 2, 3]);
        if let Request::Put { envelope, .. } = &mut req {
            envelope.header.record_len = 99;
        }
        let frame = encode(&req, "request").expect("encode");
        assert!(matches!(
            decode::<Request>(&frame, FRAME_MAX_BYTES, "request"),
            Err(Error::Decode { .. })
        ));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Request>(&bytes, FRAME_MAX_BYTES, "request");
            let _ = decode::<Response>(&bytes, FRAME_MAX_BYTES, "response");
            let _ = decode_body::<Request>(&bytes, "request");
        }

        #[test]
        fn any_payload_round_trips(payload in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let req = put_request(payload);
            let frame = encode(&req, "request").expect("encode");
            prop_assert_eq!(decode::<Request>(&frame, FRAME_MAX_BYTES, "request"), Ok(req));
        }
    }
}
