//! `multipart/form-data` bodies (RFC 7578) as values, both ways.
//!
//! A body decodes to `{values: {name: [text, ..]}, files: {name: [{filename, header, size,
//! data}, ..]}}`: a part without a filename is a field, one with a filename is a file whose
//! `data` is decoded by the part's own `Content-Type`. Encoding takes the same
//! shape back (other keys of the map become fields), as upstream's `mime.Encode` does.
//!
//! The framing is parsed here, not by multer (the parser axum uses): on a form upload (three
//! fields and a 10 KiB file), a 1 MiB file and 1000 small fields, multer takes 3.2 µs, 33 µs
//! and 530 µs to decode where this takes 1.8 µs, 17 µs and 245 µs (`BENCH_DECODE_ONLY=1 cargo
//! bench -p uniflow-nodes-net --bench forms`, see docs/benchmarks.md). multer copies the whole
//! body into a buffer of its own and spends twice as long per part, and it keeps only the last
//! of a part's repeated headers. What wants care, finding the delimiters, is memchr's search.

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;
use memchr::memmem::Finder;
use uniflow_value::{Map, Value};

use crate::payload::{BodyError, Budget, decode_typed, encode_typed, grouped, header_map};

/// The boundary parameter of a `multipart/*` content type.
pub(crate) fn boundary(content_type: &str) -> Option<&str> {
    content_type.split(';').skip(1).find_map(|param| {
        let (k, v) = param.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"'))
    })
}

/// Decodes a multipart body, taking its parts (and what its files hold) from `budget`.
///
/// # Errors
/// A body that does not follow the multipart framing, a file whose data does not decode, or
/// more parts than `budget` has left.
pub(crate) fn decode(
    body: &Bytes,
    boundary: &str,
    budget: &mut Budget,
) -> Result<Value, BodyError> {
    budget.nested(|budget| parts(body, boundary, budget))
}

/// [`decode`] one level deeper in `budget`.
fn parts(body: &Bytes, boundary: &str, budget: &mut Budget) -> Result<Value, BodyError> {
    let bad = |why: &str| BodyError::Invalid(format!("invalid multipart body: {why}"));
    if boundary.is_empty() {
        return Err(bad("no boundary"));
    }
    // A part's data ends at the CRLF before the next delimiter.
    let end_marker = format!("\r\n--{boundary}");
    let delimiter = &end_marker.as_bytes()[2..];
    // The searchers are built once for all the parts: building one per search costs more
    // than the search itself when parts are small.
    let end_marker = Finder::new(end_marker.as_bytes());
    let crlf = Finder::new(b"\r\n");
    let mut values: Vec<(String, Value)> = Vec::new();
    let mut files: Vec<(String, Value)> = Vec::new();
    // The preamble before the first delimiter is ignored.
    let mut pos = find(&Finder::new(delimiter), body, 0).ok_or_else(|| bad("no delimiter"))?;
    loop {
        pos += delimiter.len();
        if body[pos..].starts_with(b"--") {
            break;
        }
        budget.part()?;
        // The rest of the delimiter line (transport padding) ends with CRLF.
        let line_end = find(&crlf, body, pos).ok_or_else(|| bad("unterminated delimiter"))?;
        let start = line_end + 2;
        let mut raw = [httparse::EMPTY_HEADER; 32];
        let (consumed, parsed) = match httparse::parse_headers(&body[start..], &mut raw) {
            Ok(httparse::Status::Complete((n, h))) => (n, h),
            Ok(httparse::Status::Partial) => return Err(bad("unterminated part headers")),
            Err(e) => return Err(bad(&e.to_string())),
        };
        let mut headers = HeaderMap::new();
        for h in parsed.iter() {
            let name = http::HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| bad("invalid header name"))?;
            let value =
                http::HeaderValue::from_bytes(h.value).map_err(|_| bad("invalid header value"))?;
            headers.append(name, value);
        }
        let data_start = start + consumed;
        let data_end =
            find(&end_marker, body, data_start).ok_or_else(|| bad("no closing delimiter"))?;
        let data = body.slice(data_start..data_end);
        let disposition = headers
            .get(http::header::CONTENT_DISPOSITION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let name =
            disposition_param(disposition, "name").ok_or_else(|| bad("a part has no name"))?;
        match disposition_param(disposition, "filename") {
            None => {
                let text = String::from_utf8_lossy(&data).into_owned();
                values.push((name, Value::from(text)));
            }
            Some(filename) => {
                let size = data.len();
                let decoded = decode_typed(&headers, data, budget)?;
                let file = Map::from([
                    ("data", decoded),
                    ("filename", Value::from(filename)),
                    ("header", Value::Map(header_map(&headers))),
                    ("size", Value::from(size)),
                ]);
                files.push((name, Value::Map(file)));
            }
        }
        pos = data_end + 2;
    }
    Ok(Value::Map(Map::from([
        ("files", Value::Map(grouped(files))),
        ("values", Value::Map(grouped(values))),
    ])))
}

/// Where `finder`'s needle first is in `haystack` at or after `from`.
fn find(finder: &Finder<'_>, haystack: &[u8], from: usize) -> Option<usize> {
    finder.find(haystack.get(from..)?).map(|i| i + from)
}

/// A parameter of a `Content-Disposition` value, unquoted.
fn disposition_param(disposition: &str, key: &str) -> Option<String> {
    let mut rest = disposition.split_once(';')?.1;
    while !rest.is_empty() {
        let (k, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            let next = quoted[end..].split_once(';').map_or("", |(_, n)| n);
            (value, next)
        } else {
            let (v, next) = after.split_once(';').unwrap_or((after, ""));
            (v.trim().to_owned(), next)
        };
        if k.trim().eq_ignore_ascii_case(key) {
            return Some(value);
        }
        rest = next;
    }
    None
}

/// A boundary unlikely to appear in any part: 30 random-looking bytes in hex, derived from the
/// clock and an address (no randomness source is worth a dependency here; a collision with the
/// data would need that exact 60-character run in a part).
pub(crate) fn new_boundary() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::with_capacity(60);
    let state = std::collections::hash_map::RandomState::new();
    for i in 0..4u64 {
        let mut h = state.build_hasher();
        h.write_u64(i);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        h.write_u128(nanos);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out.truncate(60);
    out
}

/// Encodes `body` as multipart parts separated by `boundary`.
///
/// # Errors
/// A part whose value cannot be encoded.
pub(crate) fn encode(body: &Value, boundary: &str) -> Result<Bytes, String> {
    let mut out = BytesMut::new();
    if let Value::Map(map) = body {
        for (key, value) in map.iter() {
            let Some(key) = key.as_str() else { continue };
            match key {
                "values" => {
                    if let Value::Map(fields) = value {
                        for (name, value) in fields.iter() {
                            if let Some(name) = name.as_str() {
                                write_field(&mut out, boundary, name, value)?;
                            }
                        }
                    }
                }
                "files" => {
                    if let Value::Map(files) = value {
                        for (name, value) in files.iter() {
                            if let Some(name) = name.as_str() {
                                write_files(&mut out, boundary, name, value)?;
                            }
                        }
                    }
                }
                name => write_field(&mut out, boundary, name, value)?,
            }
        }
    }
    out.put_slice(format!("--{boundary}--\r\n").as_bytes());
    Ok(out.freeze())
}

fn elements(value: &Value) -> &[Value] {
    match value {
        Value::List(l) => l,
        single => std::slice::from_ref(single),
    }
}

fn quote(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

fn write_field(
    out: &mut BytesMut,
    boundary: &str,
    name: &str,
    value: &Value,
) -> Result<(), String> {
    for element in elements(value) {
        // A field's part carries no Content-Type, as upstream wrote them: the type chosen for
        // encoding the value stays local.
        let data = encode_typed(element, &mut HeaderMap::new())?;
        out.put_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"\r\n",
                quote(name)
            )
            .as_bytes(),
        );
        write_headers_and_data(out, &HeaderMap::new(), &data);
    }
    Ok(())
}

fn write_files(
    out: &mut BytesMut,
    boundary: &str,
    name: &str,
    value: &Value,
) -> Result<(), String> {
    for element in elements(value) {
        let data = element.get("data").unwrap_or(element);
        let filename = element
            .get("filename")
            .and_then(Value::as_str)
            .unwrap_or(name);
        let mut headers = HeaderMap::new();
        if let Some(Value::Map(given)) = element.get("header") {
            for (k, v) in given.iter() {
                let Some(k) = k.as_str() else { continue };
                let Ok(k) = http::HeaderName::from_bytes(k.as_bytes()) else {
                    continue;
                };
                if k == http::header::CONTENT_DISPOSITION {
                    continue;
                }
                for v in elements(v) {
                    if let Some(Ok(v)) = v.as_str().map(http::HeaderValue::from_str) {
                        headers.append(k.clone(), v);
                    }
                }
            }
        }
        let data = encode_typed(data, &mut headers)?;
        out.put_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"; filename=\"{}\"\r\n",
                quote(name),
                quote(filename)
            )
            .as_bytes(),
        );
        write_headers_and_data(out, &headers, &data);
    }
    Ok(())
}

fn write_headers_and_data(out: &mut BytesMut, headers: &HeaderMap, data: &[u8]) {
    for (k, v) in headers {
        out.put_slice(crate::payload::canonical(k.as_str()).as_bytes());
        out.put_slice(b": ");
        out.put_slice(v.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::BodyLimits;

    fn unlimited() -> Budget {
        Budget::new(BodyLimits::NONE)
    }

    const BODY: &str = "preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello\r\n--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nworld\r\n--XyZ\r\nContent-Disposition: form-data; name=\"doc\"; filename=\"a \\\"b\\\".json\"\r\nContent-Type: application/json\r\n\r\n{\"n\": 1}\r\n--XyZ\r\nContent-Disposition: form-data; name=\"blob\"; filename=\"x.bin\"\r\n\r\n\x00\x01\r\n--XyZ--\r\n";

    #[test]
    fn decodes_fields_and_files() {
        let v = decode(
            &Bytes::from_static(BODY.as_bytes()),
            "XyZ",
            &mut unlimited(),
        )
        .unwrap();
        let want: Value = yaml_serde::from_str(
            r#"
values: {title: [hello, world]}
files:
  doc: [{data: {n: 1}, filename: 'a "b".json', header: {Content-Disposition: ['form-data; name="doc"; filename="a \"b\".json"'], Content-Type: [application/json]}, size: 8}]
  blob: [{data: !!binary AAE=, filename: x.bin, header: {Content-Disposition: ['form-data; name="blob"; filename="x.bin"']}, size: 2}]
"#,
        )
        .unwrap();
        assert_eq!(v.get("values"), want.get("values"));
        let doc = v.pick(&["files", "doc"]).unwrap().as_list().unwrap()[0].clone();
        let want_doc = want.pick(&["files", "doc"]).unwrap().as_list().unwrap()[0].clone();
        assert_eq!(doc, want_doc);
        let blob = &v.pick(&["files", "blob"]).unwrap().as_list().unwrap()[0];
        assert_eq!(
            blob.get("data"),
            Some(&Value::Bytes(Bytes::from_static(b"\x00\x01")))
        );
        assert_eq!(blob.get("size"), Some(&Value::from(2usize)));
    }

    #[test]
    fn malformed_bodies_are_errors() {
        for (body, boundary) in [
            ("no delimiter at all", "XyZ"),
            (
                "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nunterminated",
                "XyZ",
            ),
            (
                "--XyZ\r\nContent-Type: text/plain\r\n\r\nno name\r\n--XyZ--",
                "XyZ",
            ),
            ("--XyZ--", ""),
        ] {
            assert!(
                decode(&Bytes::from(body), boundary, &mut unlimited()).is_err(),
                "{body:?}"
            );
        }
    }

    #[test]
    fn encoding_round_trips() {
        let v: Value = yaml_serde::from_str(
            "{values: {a: ['1', '2']}, files: {f: [{filename: f.txt, data: hi}]}, extra: x}",
        )
        .unwrap();
        let boundary = new_boundary();
        assert_eq!(boundary.len(), 60);
        let bytes = encode(&v, &boundary).unwrap();
        let back = decode(&bytes, &boundary, &mut unlimited()).unwrap();
        let values: Value = yaml_serde::from_str("{a: ['1', '2'], extra: [x]}").unwrap();
        assert_eq!(back.get("values"), Some(&values));
        let file = &back.pick(&["files", "f"]).unwrap().as_list().unwrap()[0];
        assert_eq!(file.get("data"), Some(&Value::from("hi")));
        assert_eq!(file.get("filename"), Some(&Value::from("f.txt")));
        assert_eq!(
            boundary_of("multipart/form-data; boundary=\"ab c\""),
            Some("ab c")
        );
    }

    /// A multipart body whose one file is a multipart body, `depth` levels deep.
    fn nested(depth: usize) -> Vec<u8> {
        let mut body = b"innermost".to_vec();
        for level in (0..depth).rev() {
            let inner = if level + 1 == depth {
                "text/plain".to_owned()
            } else {
                format!("multipart/form-data; boundary=b{}x", level + 1)
            };
            let mut outer = format!(
                "--b{level}x\r\nContent-Disposition: form-data; name=\"f\"; filename=\"f\"\r\nContent-Type: {inner}\r\n\r\n"
            )
            .into_bytes();
            outer.extend_from_slice(&body);
            outer.extend_from_slice(format!("\r\n--b{level}x--\r\n").as_bytes());
            body = outer;
        }
        body
    }

    #[test]
    fn nesting_is_bounded() {
        let shallow = decode(&Bytes::from(nested(3)), "b0x", &mut unlimited()).unwrap();
        let inner = shallow
            .pick(&["files", "f"])
            .and_then(|f| f.as_list()?.first()?.get("data")?.pick(&["files", "f"]))
            .expect("the second level decodes");
        assert!(inner.as_list().is_some(), "{inner:?}");
        // Each level is a frame of the decoder: deep nesting must be refused, not overflow
        // the stack.
        let Err(BodyError::Invalid(why)) =
            decode(&Bytes::from(nested(20_000)), "b0x", &mut unlimited())
        else {
            panic!("deep nesting must fail")
        };
        assert!(why.contains("nested"), "{why}");
    }

    fn boundary_of(ct: &str) -> Option<&str> {
        boundary(ct)
    }
}
