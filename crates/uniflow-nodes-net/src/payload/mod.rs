//! HTTP requests as values and answers as responses (`docs/nodes/listener.md`; where this
//! departs from upstream, `docs/decisions.md`).
//!
//! A request becomes the map `{body, header, host, method, path, protocol, query, status: 0}`
//! (keys sorted, built in one allocation). Its body is decoded by `Content-Encoding`, then by
//! `Content-Type`: JSON, form, text, multipart, otherwise bytes, within [`BodyLimits`]; when no
//! node reads it, it stays the bytes that came. An answer becomes a response:
//! `None` is an empty 200; an error is a 500 whose text goes to the log, never to the client; a
//! map with a `status` key sets the status, headers and body; anything else is a 200 whose body
//! is the whole answer. Without an explicit `Content-Type` the type is negotiated from `Accept`
//! among the offers for the body's kind, and without an explicit `Content-Encoding` the body is
//! compressed as `Accept-Encoding` asks. A request without `Accept-Encoding` pays nothing for
//! compression.

mod bodies;
mod body;
mod request;
mod respond;

use http::header::HeaderValue;

pub use bodies::*;
pub use body::*;
pub use request::*;
pub use respond::*;

const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const JSON: HeaderValue = HeaderValue::from_static("application/json; charset=utf-8");
const OCTET: HeaderValue = HeaderValue::from_static("application/octet-stream");
const FORM: HeaderValue = HeaderValue::from_static("application/x-www-form-urlencoded");
const MULTIPART: HeaderValue = HeaderValue::from_static("multipart/form-data");

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::StatusCode;
    use http::header::{self, HeaderMap, HeaderValue};
    use http_body_util::BodyExt;

    use crate::{coding, multipart};
    use uniflow_core::Packet;
    use uniflow_value::Value;

    use super::*;

    /// Limits of `bytes` bytes, and none on fields or parts.
    fn up_to(bytes: usize) -> BodyLimits {
        BodyLimits {
            bytes,
            ..BodyLimits::NONE
        }
    }

    async fn render(answer: Packet, accept: Option<&str>) -> (u16, Option<String>, String) {
        let accept = accept.map(|a| HeaderValue::from_str(a).unwrap());
        let r = response(answer, accept.as_ref(), None);
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (status, ct, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn answers_map_to_responses() {
        assert_eq!(render(Packet::None, None).await, (200, None, String::new()));
        assert_eq!(
            render(Packet::error("secret detail"), None).await,
            (
                500,
                Some("text/plain; charset=utf-8".into()),
                "Internal Server Error".into()
            )
        );
        assert_eq!(
            render(Packet::Data(Value::Null), None).await,
            (
                200,
                Some("application/json; charset=utf-8".into()),
                "null\n".into()
            )
        );
        assert_eq!(
            render(Packet::Data(Value::from("pong")), Some("*/*")).await,
            (200, Some("text/plain; charset=utf-8".into()), "pong".into())
        );
        let m: Value =
            yaml_serde::from_str("{status: 201, header: {X-A: yes}, body: {a: [1, 2]}}").unwrap();
        assert_eq!(
            render(Packet::Data(m), None).await,
            (
                201,
                Some("application/json; charset=utf-8".into()),
                "{\"a\":[1,2]}\n".into()
            )
        );
        let m: Value =
            yaml_serde::from_str("{status: 204, header: {Allow: 'OPTIONS, GET'}}").unwrap();
        assert_eq!(
            render(Packet::Data(m), None).await,
            (204, None, String::new())
        );
        let m: Value = yaml_serde::from_str("{a: 1}").unwrap();
        assert_eq!(render(Packet::Data(m), None).await.2, "{\"a\":1}\n");
        let m: Value = yaml_serde::from_str("{status: 99999}").unwrap();
        assert_eq!(render(Packet::Data(m), None).await.0, 500);
    }

    #[tokio::test]
    async fn accept_json_matches_despite_charset() {
        let (_, ct, body) = render(Packet::Data(Value::from("hi")), Some("application/json")).await;
        assert_eq!(ct.as_deref(), Some("application/json; charset=utf-8"));
        assert_eq!(body, "\"hi\"\n");
        let (_, ct, _) = render(
            Packet::Data(Value::from("hi")),
            Some("text/html;q=0.9, application/json;q=0.5"),
        )
        .await;
        assert_eq!(ct.as_deref(), Some("application/json; charset=utf-8"));
        let (_, ct, _) = render(Packet::Data(Value::from("hi")), Some("image/png")).await;
        assert_eq!(ct.as_deref(), Some("text/plain; charset=utf-8"));
    }

    #[test]
    fn blocklist_is_anchored() {
        for passes in [
            "set-cookie",
            "access-control-allow-origin",
            "content-range",
            "accept-ranges",
            "x-greeting",
        ] {
            assert!(!is_blocked(passes), "{passes}");
        }
        for blocked in [
            "cookie",
            "accept",
            "host",
            "x-forwarded-for",
            "sec-fetch-mode",
            "content-length",
        ] {
            assert!(is_blocked(blocked), "{blocked}");
        }
    }

    /// A name that counts the comparisons made with it.
    struct Counted<'c>(u32, &'c std::cell::Cell<usize>);

    impl PartialEq for Counted<'_> {
        fn eq(&self, other: &Self) -> bool {
            self.1.set(self.1.get() + 1);
            self.0 == other.0
        }
    }

    impl Eq for Counted<'_> {}

    impl PartialOrd for Counted<'_> {
        fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(other))
        }
    }

    impl Ord for Counted<'_> {
        fn cmp(&self, other: &Self) -> std::cmp::Ordering {
            self.1.set(self.1.get() + 1);
            self.0.cmp(&other.0)
        }
    }

    impl From<Counted<'_>> for Value {
        fn from(name: Counted<'_>) -> Value {
            Value::from(format!("k{:06}", name.0))
        }
    }

    #[test]
    fn grouping_compares_names_n_log_n_times_not_n_squared() {
        let count = std::cell::Cell::new(0);
        let n: u32 = 1 << 14;
        // Distinct names in a scrambled order, then each name once more.
        let names = (0..n).map(|i| i.wrapping_mul(7919) % n);
        let pairs: Vec<_> = names
            .clone()
            .chain(names)
            .enumerate()
            .map(|(i, name)| (Counted(name, &count), Value::from(i)))
            .collect();
        let map = grouped(pairs);
        assert_eq!(map.len(), n as usize);
        // Each name's values in the order they came.
        let first = 7919 % n;
        assert_eq!(
            map.get(&format!("k{first:06}")),
            Some(&Value::from(vec![
                Value::from(1usize),
                Value::from(n as usize + 1)
            ]))
        );
        let pairs = 2.0 * f64::from(n);
        let bound = 4.0 * pairs * pairs.log2();
        assert!(
            (count.get() as f64) < bound,
            "{} comparisons for {pairs} pairs, more than {bound}",
            count.get()
        );
    }

    #[test]
    fn forms_decode_within_their_field_cap() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, FORM);
        let capped = BodyLimits {
            fields: 3,
            ..BodyLimits::NONE
        };
        let want: Value = yaml_serde::from_str("{a: ['1', '3'], b: ['2']}").unwrap();
        assert_eq!(
            decode_body(&h, Bytes::from_static(b"a=1&b=2&a=3"), capped),
            Ok(want)
        );
        assert_eq!(
            decode_body(&h, Bytes::from_static(b"a=1&b=2&a=3&c"), capped),
            Err(BodyError::TooMany {
                what: "form fields",
                limit: 3
            })
        );
        assert_eq!(
            BodyError::TooMany {
                what: "form fields",
                limit: 3
            }
            .status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[test]
    fn request_payload_shape() {
        let req = http::Request::builder()
            .method("POST")
            .uri("/a%20b?x=1&x=2&y=")
            .header("content-type", "application/json")
            .header("x-custom-thing", "v")
            .header("host", "example")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let body = decode_body(
            &parts.headers,
            Bytes::from_static(b"{\"n\": 1}"),
            up_to(1 << 20),
        )
        .unwrap();
        let v = request_payload(
            &parts.method,
            &parts.uri,
            parts.version,
            &parts.headers,
            body,
        );
        let want: Value = yaml_serde::from_str(
            "{body: {n: 1}, header: {Content-Type: [application/json], Host: [example], X-Custom-Thing: [v]}, host: example, method: POST, path: /a b, protocol: HTTP/1.1, query: {x: ['1', '2'], y: ['']}, status: 0}",
        )
        .unwrap();
        assert_eq!(v, want);
    }

    #[test]
    fn bodies_decode_by_content_type() {
        let decode =
            |h: &HeaderMap, b: &'static [u8]| decode_body(h, Bytes::from_static(b), up_to(1 << 20));
        let mut h = HeaderMap::new();
        assert_eq!(
            decode(&h, b"raw").unwrap(),
            Value::Bytes(Bytes::from_static(b"raw"))
        );
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let want: Value = yaml_serde::from_str("{x: ['1', '2']}").unwrap();
        assert_eq!(decode(&h, b"x=1&x=2").unwrap(), want);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        assert_eq!(decode(&h, b"hi").unwrap(), Value::from("hi"));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let Err(BodyError::Invalid(why)) = decode(&h, b"{nope") else {
            panic!("malformed JSON must fail")
        };
        assert!(why.starts_with("invalid JSON body"), "{why}");
    }

    #[test]
    fn compressed_bodies_decode_first() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let packed = coding::Coding::Gzip.encode(b"{\"a\": [1, 2]}");
        let want: Value = yaml_serde::from_str("{a: [1, 2]}").unwrap();
        assert_eq!(
            decode_body(&h, packed.clone(), up_to(1 << 20)).unwrap(),
            want
        );
        assert_eq!(decode_body(&h, packed, up_to(4)), Err(BodyError::TooLarge));
        h.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static("compress"),
        );
        let err = decode_body(&h, Bytes::from_static(b"x"), up_to(100)).unwrap_err();
        assert_eq!(err.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
        let err = decode_body(&h, Bytes::from_static(b"not brotli"), up_to(100)).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn responses_compress_only_when_asked() {
        let render = |ae: Option<&'static str>, answer: Value| {
            let ae = ae.map(HeaderValue::from_static);
            response(Packet::Data(answer), None, ae.as_ref())
        };
        let r = render(None, Value::from("pong"));
        assert!(r.headers().get(header::CONTENT_ENCODING).is_none());
        assert!(r.headers().get(header::VARY).is_none());
        for (ae, coding) in [
            ("gzip", coding::Coding::Gzip),
            ("br", coding::Coding::Br),
            ("deflate", coding::Coding::Deflate),
        ] {
            let r = render(Some(ae), Value::from("pong"));
            assert_eq!(r.headers()[header::CONTENT_ENCODING], ae);
            assert_eq!(r.headers()[header::VARY], "Accept-Encoding");
            assert_eq!(
                r.headers()[header::CONTENT_TYPE],
                "text/plain; charset=utf-8"
            );
            let body = r.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(coding.decode(&body, 100).unwrap(), &b"pong"[..]);
        }
        // An answer that set its own Content-Encoding is sent as given.
        let given: Value =
            yaml_serde::from_str("{status: 200, header: {Content-Encoding: gzip}, body: already}")
                .unwrap();
        let r = render(Some("br"), given);
        assert_eq!(r.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(r.into_body().collect().await.unwrap().to_bytes(), "already");
        let r = render(Some("identity"), Value::from("pong"));
        assert!(r.headers().get(header::CONTENT_ENCODING).is_none());
    }

    #[tokio::test]
    async fn a_map_can_be_sent_as_multipart() {
        let accept = HeaderValue::from_static("multipart/form-data");
        let answer: Value = yaml_serde::from_str("{a: x}").unwrap();
        let r = response(Packet::Data(answer), Some(&accept), None);
        let ct = r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let boundary = multipart::boundary(&ct).unwrap().to_owned();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let back = multipart::decode(&body, &boundary, &mut Budget::new(BodyLimits::NONE)).unwrap();
        assert_eq!(
            back.pick(&["values", "a"]),
            Some(&Value::from(vec![Value::from("x")]))
        );
    }
}
