//! The request body decoders: any body under any `Content-Type` and `Content-Encoding` decodes
//! to a value or answers a 4xx, never a panic.
//!
//! An input is `<content type>\n<content encoding>\n<body>`; an empty line sends no such
//! header. The seeds in `corpus/body` are written that way, so they stay readable.

#![no_main]

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use uniflow_nodes_net::payload::{BodyLimits, decode_body};

/// Small limits, so that fuzzed compressed and multipart bodies meet them.
const LIMITS: BodyLimits = BodyLimits {
    bytes: 64 << 10,
    fields: 64,
    parts: 16,
};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let (Some(content_type), Some(content_encoding), Some(body)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let mut headers = HeaderMap::new();
    for (name, value) in [
        (CONTENT_TYPE, content_type),
        (CONTENT_ENCODING, content_encoding),
    ] {
        if let (false, Ok(value)) = (value.is_empty(), HeaderValue::from_bytes(value)) {
            headers.insert(name, value);
        }
    }
    if let Err(e) = decode_body(&headers, Bytes::copy_from_slice(body), LIMITS) {
        assert!(e.status().is_client_error(), "{e:?}");
    }
});
