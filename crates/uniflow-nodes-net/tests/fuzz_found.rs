//! Hostile request bodies found while probing the body decoders beside their fuzz target
//! (`fuzz/fuzz_targets/body.rs`), as plain tests. The fuzzer's inputs are too small for a
//! quadratic cost to show, so these are sized by hand.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue};
use uniflow_nodes_net::payload::decode_body;
use uniflow_value::Value;

/// The listener's default body limit.
const LIMIT: usize = 16 << 20;

/// Decodes `body` as `content_type` and checks that it took less than `bound`, and that it
/// decoded to `fields` entries under `key` (the whole map when `None`) or was refused with a
/// 4xx (a cap on the number of fields would do that).
fn decodes_quickly(
    content_type: &str,
    body: String,
    key: Option<&str>,
    fields: usize,
    bound: Duration,
) {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
    let start = Instant::now();
    let result = decode_body(&headers, Bytes::from(body), LIMIT);
    let took = start.elapsed();
    match result {
        Ok(value) => {
            let map = key.map_or(Some(&value), |k| value.get(k));
            let decoded = map.and_then(Value::as_map).map(|m| m.len());
            assert_eq!(decoded, Some(fields), "every field is decoded");
        }
        Err(e) => assert!(e.status().is_client_error(), "{e}"),
    }
    assert!(took < bound, "took {took:?}");
}

/// A form body of 30 000 distinct fields (270 KB) took seconds: each field is looked up by a
/// linear scan of the names seen so far (`payload::query_map`), so the time grows with the
/// square of the count (100 000 fields, 890 KB: 67 s in a release build).
#[test]
#[ignore = "fails: form fields are grouped by a linear scan; see the doc comment"]
fn a_form_with_many_distinct_fields_decodes_quickly() {
    let body: Vec<String> = (0..30_000).map(|i| format!("f{i}=v")).collect();
    decodes_quickly(
        "application/x-www-form-urlencoded",
        body.join("&"),
        None,
        30_000,
        // Generous: grouping 30 000 fields by sorting takes milliseconds.
        Duration::from_secs(1),
    );
}

/// A multipart body of 30 000 parts with distinct names (1.7 MB) took seconds, for the same
/// reason (`multipart::push`; 80 000 parts, 4.5 MB: 40 s in a release build).
#[test]
#[ignore = "fails: multipart parts are grouped by a linear scan; see the doc comment"]
fn a_multipart_body_with_many_distinct_names_decodes_quickly() {
    let mut body = String::new();
    for i in 0..30_000 {
        body.push_str(&format!(
            "--b\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\nv\r\n"
        ));
    }
    body.push_str("--b--\r\n");
    decodes_quickly(
        "multipart/form-data; boundary=b",
        body,
        Some("values"),
        30_000,
        // Generous: each part costs a header parse, microseconds even unoptimised.
        Duration::from_secs(2),
    );
}
