//! An answer as a response: status, headers, and a body whose type is negotiated from
//! `Accept` and compressed as `Accept-Encoding` asks.

use crate::coding::{self};
use crate::multipart;
use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use uniflow_core::Packet;
use uniflow_value::{Map, Value};

use super::*;

/// The request headers that decide how its body is read and its response written.
#[derive(Default, Clone, Copy)]
pub struct Negotiation<'a> {
    /// `Content-Type`.
    pub content_type: Option<&'a HeaderValue>,
    /// `Content-Encoding`.
    pub content_encoding: Option<&'a HeaderValue>,
    /// `Accept`.
    pub accept: Option<&'a HeaderValue>,
    /// `Accept-Encoding`.
    pub accept_encoding: Option<&'a HeaderValue>,
}

impl<'a> Negotiation<'a> {
    /// Finds the four headers in one pass: a request has few headers, and four lookups would
    /// hash four names.
    pub fn of(headers: &'a HeaderMap) -> Negotiation<'a> {
        let mut found = Negotiation::default();
        for (name, value) in headers {
            found.note(name, value);
        }
        found
    }

    /// Keeps `value` if `name` is one of the four and the first of its name.
    #[inline]
    pub(super) fn note(&mut self, name: &HeaderName, value: &'a HeaderValue) {
        let slot = if *name == header::ACCEPT {
            &mut self.accept
        } else if *name == header::ACCEPT_ENCODING {
            &mut self.accept_encoding
        } else if *name == header::CONTENT_TYPE {
            &mut self.content_type
        } else if *name == header::CONTENT_ENCODING {
            &mut self.content_encoding
        } else {
            return;
        };
        slot.get_or_insert(value);
    }
}

/// A response with a text body.
pub fn text_response(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::full(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, TEXT);
    response
}

/// Turns an answer into a response: the body's type is negotiated against `accept` and, when
/// the request sent `accept_encoding`, the body is compressed.
pub fn response(
    answer: Packet,
    accept: Option<&HeaderValue>,
    accept_encoding: Option<&HeaderValue>,
) -> Response<Body> {
    let value = match answer {
        Packet::None => return Response::new(Body::empty()),
        Packet::Data(Value::Error(e)) => return unhandled(&e),
        Packet::Data(v) => v,
    };
    let (status, headers, body) = match &value {
        Value::Map(m) if m.get("status").is_some() => {
            let status = match m.get("status").and_then(Value::as_i64) {
                Some(0) => StatusCode::OK,
                Some(code) => match u16::try_from(code)
                    .ok()
                    .and_then(|c| StatusCode::from_u16(c).ok())
                {
                    Some(s) => s,
                    None => return bad_status(Some(code)),
                },
                None => return bad_status(None),
            };
            (
                status,
                m.get("header"),
                m.get("body").cloned().unwrap_or(Value::Null),
            )
        }
        _ => (StatusCode::OK, None, value),
    };
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    if let Some(headers) = headers {
        copy_headers(headers, response.headers_mut());
    }
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return response;
    }
    // Only an answer with a `header` map can have set the type.
    let explicit = headers.and_then(|_| response.headers().get(header::CONTENT_TYPE));
    let encoding = match explicit {
        Some(t) => Encoding::of(t),
        None => {
            let chosen = negotiate(offers(&body), accept);
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, chosen.header());
            chosen.encoding()
        }
    };
    // Only multipart needs the content type itself (for its boundary).
    let content_type = match encoding {
        Encoding::Multipart => response.headers().get(header::CONTENT_TYPE).cloned(),
        _ => None,
    };
    let mut bytes = match encode(body, encoding, content_type.as_ref()) {
        Ok((bytes, None)) => bytes,
        Ok((bytes, Some(with_boundary))) => {
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, with_boundary);
            bytes
        }
        Err(message) => return invalid_answer(message),
    };
    if let Some(accept_encoding) = accept_encoding {
        compress(&mut response, &mut bytes, accept_encoding);
    }
    *response.body_mut() = Body::full(bytes);
    response
}

/// Compresses a response body as `Accept-Encoding` asks, unless the answer chose its own
/// `Content-Encoding` (its body is then sent as given) or there is nothing to compress.
#[inline(never)]
pub(super) fn compress(
    response: &mut Response<Body>,
    bytes: &mut Bytes,
    accept_encoding: &HeaderValue,
) {
    if bytes.is_empty() || response.headers().contains_key(header::CONTENT_ENCODING) {
        return;
    }
    // Caches must not serve this response to a client that asked for another coding.
    response
        .headers_mut()
        .append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if let Some(coding) = coding::negotiate(accept_encoding) {
        *bytes = coding.encode(bytes);
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, coding.header());
    }
}

/// The response to an answer whose `status` is not an HTTP status code (or not an integer).
#[cold]
#[inline(never)]
pub(super) fn bad_status(code: Option<i64>) -> Response<Body> {
    invalid_answer(match code {
        Some(code) => format!("status {code} is not an HTTP status"),
        None => "`status` is not an integer".into(),
    })
}

/// The response to an error answer that no `error` port handled.
#[cold]
#[inline(never)]
pub(super) fn unhandled(error: &uniflow_value::ErrorValue) -> Response<Body> {
    tracing::warn!(%error, "request answered with an unhandled error");
    text_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
}

#[cold]
#[inline(never)]
pub(super) fn invalid_answer(message: String) -> Response<Body> {
    tracing::warn!(%message, "cannot turn the answer into a response");
    text_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
}

/// Headers a response never carries: request-only headers and those the server computes.
/// The match is on the whole name, so `Set-Cookie` or `Access-Control-Allow-Origin` pass
/// (upstream's unanchored patterns dropped them).
pub(super) fn is_blocked(name: &str) -> bool {
    const BLOCKED: &[&str] = &[
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "authorization",
        "connection",
        "content-length",
        "cookie",
        "date",
        "expect",
        "host",
        "keep-alive",
        "max-forwards",
        "origin",
        "proxy-authorization",
        "proxy-connection",
        "range",
        "referer",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "via",
    ];
    BLOCKED.contains(&name)
        || name.starts_with("sec-")
        || name.starts_with("x-forwarded-")
        || name.starts_with("if-")
}

#[inline(never)]
pub(super) fn copy_headers(headers: &Value, out: &mut HeaderMap) {
    let Some(map) = headers.as_map() else { return };
    for (name, values) in map.iter() {
        let Some(name) = name.as_str() else { continue };
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            tracing::warn!(%name, "answer header has an invalid name; dropped");
            continue;
        };
        if is_blocked(name.as_str()) {
            continue;
        }
        let values: &[Value] = match values {
            Value::List(l) => l,
            single => std::slice::from_ref(single),
        };
        for v in values {
            let text = match v {
                Value::String(s) => HeaderValue::from_maybe_shared(s.as_bytes().clone()),
                Value::Int(i) => HeaderValue::try_from(i.to_string()),
                Value::Uint(u) => HeaderValue::try_from(u.to_string()),
                Value::Float(f) => HeaderValue::try_from(f.to_string()),
                Value::Bool(b) => HeaderValue::try_from(b.to_string()),
                _ => continue,
            };
            match text {
                Ok(value) => {
                    out.append(name.clone(), value);
                }
                Err(_) => {
                    tracing::warn!(header = %name, "answer header has an invalid value; dropped")
                }
            }
        }
    }
}

/// A content type the response can take.
#[derive(Clone, Copy)]
pub(super) enum Offer {
    Text,
    Json,
    Octet,
    Form,
    Multipart,
}

impl Offer {
    fn media(self) -> (&'static str, &'static str) {
        match self {
            Offer::Text => ("text", "plain"),
            Offer::Json => ("application", "json"),
            Offer::Octet => ("application", "octet-stream"),
            Offer::Form => ("application", "x-www-form-urlencoded"),
            Offer::Multipart => ("multipart", "form-data"),
        }
    }

    fn encoding(self) -> Encoding {
        match self {
            Offer::Json => Encoding::Json,
            Offer::Form => Encoding::Form,
            Offer::Multipart => Encoding::Multipart,
            Offer::Text | Offer::Octet => Encoding::Raw,
        }
    }

    pub(super) fn header(self) -> HeaderValue {
        match self {
            Offer::Text => TEXT,
            Offer::Json => JSON,
            Offer::Octet => OCTET,
            Offer::Form => FORM,
            Offer::Multipart => MULTIPART,
        }
    }
}

pub(super) fn offers(body: &Value) -> &'static [Offer] {
    match body {
        Value::String(_) => &[Offer::Text, Offer::Json],
        Value::Bytes(_) => &[Offer::Octet],
        Value::List(_) | Value::Null => &[Offer::Json],
        _ => &[Offer::Json, Offer::Form, Offer::Multipart],
    }
}

/// Picks the offer the `Accept` header prefers: for each media range, in order, the first
/// compatible offer; the highest `q` wins and `q=1` stops the search. Parameters such as
/// `charset` are ignored when comparing (upstream compared them and so never matched
/// `application/json`). No match, or no header, picks the first offer.
pub(super) fn negotiate(offers: &[Offer], accept: Option<&HeaderValue>) -> Offer {
    let first = offers[0];
    let Some(accept) = accept.and_then(|a| a.to_str().ok()) else {
        return first;
    };
    // The common cases need no parsing: one offer, or a client that takes anything.
    if offers.len() == 1 || accept == "*/*" {
        return first;
    }
    preferred(offers, accept)
}

/// [`negotiate`] for an `Accept` header that needs parsing; out of line, so that the common
/// cases stay small.
#[inline(never)]
pub(super) fn preferred(offers: &[Offer], accept: &str) -> Offer {
    let first = offers[0];
    let mut best: Option<(Offer, f32)> = None;
    for (media, q) in crate::coding::weighted(accept) {
        let Some(offer) = offers.iter().find(|o| media_matches(media, **o)) else {
            continue;
        };
        if best.is_none_or(|(_, bq)| q > bq) {
            best = Some((*offer, q));
            if q >= 1.0 {
                break;
            }
        }
    }
    best.map_or(first, |(o, _)| o)
}

pub(super) fn media_matches(range: &str, offer: Offer) -> bool {
    let (ot, os) = offer.media();
    let (rt, rs) = range.split_once('/').unwrap_or((range, "*"));
    (rt == "*" || rt.eq_ignore_ascii_case(ot)) && (rs == "*" || rs.eq_ignore_ascii_case(os))
}

/// How a body is written for its content type.
#[derive(Clone, Copy)]
pub(super) enum Encoding {
    /// JSON with a trailing newline.
    Json,
    /// URL-encoded form fields.
    Form,
    /// `multipart/form-data` parts.
    Multipart,
    /// Strings and bytes as they are.
    Raw,
}

impl Encoding {
    /// The encoding a `Content-Type` set by the answer asks for (`*/*+json` is JSON).
    #[inline(never)]
    pub(super) fn of(content_type: &HeaderValue) -> Encoding {
        let media = content_type
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim();
        let ends_with = |suffix: &str| {
            media.len() >= suffix.len()
                && media[media.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        };
        if media.eq_ignore_ascii_case("application/json") || ends_with("+json") {
            Encoding::Json
        } else if media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            Encoding::Form
        } else if media.eq_ignore_ascii_case("multipart/form-data") {
            Encoding::Multipart
        } else {
            Encoding::Raw
        }
    }
}

/// Encodes `body`. Multipart takes its boundary from `content_type`; without one it makes one
/// and returns the content type to send instead.
pub(super) fn encode(
    body: Value,
    encoding: Encoding,
    content_type: Option<&HeaderValue>,
) -> Result<(Bytes, Option<HeaderValue>), String> {
    // The serialisers are called, not inlined: a string or bytes answer (the common case)
    // then runs through a small function.
    if let Encoding::Json = encoding {
        return Ok((encode_json(&body)?, None));
    }
    if let (Encoding::Form, Value::Map(m)) = (encoding, &body) {
        return Ok((encode_form(m), None));
    }
    if let (Encoding::Multipart, Value::Map(_)) = (encoding, &body) {
        return encode_multipart(&body, content_type);
    }
    match body {
        // A string's bytes are moved, not copied: a constant `pong` costs the reference count
        // its answer took.
        Value::String(s) => Ok((s.into_bytes(), None)),
        Value::Bytes(b) => Ok((b, None)),
        Value::Null => Ok((Bytes::new(), None)),
        other => Err(unencodable(&other)),
    }
}

#[cold]
#[inline(never)]
pub(super) fn unencodable(body: &Value) -> String {
    format!(
        "cannot encode a {} body as the answer's Content-Type; set it to JSON or drop it",
        body.kind_name()
    )
}

#[inline(never)]
pub(super) fn encode_json(body: &Value) -> Result<Bytes, String> {
    let mut out = BytesMut::with_capacity(64).writer();
    serde_json::to_writer(&mut out, body)
        .map_err(|e| format!("cannot encode the body as JSON: {e}"))?;
    let mut out = out.into_inner();
    out.put_u8(b'\n');
    Ok(out.freeze())
}

#[inline(never)]
pub(super) fn encode_form(m: &Map) -> Bytes {
    Bytes::from(form_text(m))
}

/// A map as `application/x-www-form-urlencoded` text: a list gives one pair per item, and
/// scalars are written as text (a query string is written the same way).
pub(crate) fn form_text(m: &Map) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (k, v) in m.iter() {
        let Some(k) = k.as_str() else { continue };
        let values: &[Value] = match v {
            Value::List(l) => l,
            single => std::slice::from_ref(single),
        };
        for v in values {
            form.append_pair(k, &scalar_text(v));
        }
    }
    form.finish()
}

/// The multipart branch of [`encode`], out of line: it is rare, and inlined it would keep
/// `encode` from being inlined into every response.
#[cold]
pub(super) fn encode_multipart(
    body: &Value,
    content_type: Option<&HeaderValue>,
) -> Result<(Bytes, Option<HeaderValue>), String> {
    let given = content_type
        .and_then(|t| t.to_str().ok())
        .and_then(multipart::boundary);
    match given {
        Some(boundary) if !boundary.is_empty() => Ok((multipart::encode(body, boundary)?, None)),
        _ => {
            let boundary = multipart::new_boundary();
            let bytes = multipart::encode(body, &boundary)?;
            let with = HeaderValue::try_from(format!("multipart/form-data; boundary={boundary}"))
                .expect("a hex boundary is a valid header value");
            Ok((bytes, Some(with)))
        }
    }
}

pub(super) fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Uint(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}
