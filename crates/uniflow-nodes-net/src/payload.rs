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

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use hyper::body::{Frame, SizeHint};
use uniflow_core::Packet;
use uniflow_value::{Map, Str, Value};

use crate::coding::{self, DecodeError};
use crate::multipart;

const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const JSON: HeaderValue = HeaderValue::from_static("application/json; charset=utf-8");
const OCTET: HeaderValue = HeaderValue::from_static("application/octet-stream");
const FORM: HeaderValue = HeaderValue::from_static("application/x-www-form-urlencoded");
const MULTIPART: HeaderValue = HeaderValue::from_static("multipart/form-data");

/// The error type of a streamed response body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body: bytes built from an answer, or an upstream's body passed through as it
/// arrives (the `proxy` node).
pub struct Body(Inner);

enum Inner {
    Full(Option<Bytes>),
    // Boxed so a response with a plain body stays small: responses are moved several times.
    Stream(Box<hyper::body::Incoming>),
}

impl Body {
    /// A body of these bytes.
    pub fn full(bytes: Bytes) -> Body {
        Body(Inner::Full(Some(bytes)))
    }

    /// An empty body.
    pub fn empty() -> Body {
        Body(Inner::Full(None))
    }

    pub(crate) fn stream(body: hyper::body::Incoming) -> Body {
        Body(Inner::Stream(Box::new(body)))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().0 {
            Inner::Full(bytes) => Poll::Ready(
                bytes
                    .take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            Inner::Stream(body) => Pin::new(&mut **body)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(BoxError::from))),
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::Full(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            Inner::Stream(body) => body.is_end_stream(),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Inner::Stream(body) => body.size_hint(),
        }
    }
}

/// Builds the request payload. Keys are inserted in sorted order, so the map is one
/// allocation.
pub fn request_payload(
    method: &Method,
    uri: &http::Uri,
    version: Version,
    headers: &HeaderMap,
    body: Value,
) -> Value {
    payload_with_header(
        method,
        uri,
        version,
        header_map(headers),
        decode_path(uri.path()),
        body,
    )
}

/// [`request_payload`] with the header map and the decoded path already made (see
/// [`header_map_noting`]). The map keeps a spare slot, so a router adds `params` in place.
pub(crate) fn payload_with_header(
    method: &Method,
    uri: &http::Uri,
    version: Version,
    header: Map,
    path: Str,
    body: Value,
) -> Value {
    // The host is the Host header's value, shared with the header map rather than copied.
    let host = match header
        .get("Host")
        .and_then(Value::as_list)
        .and_then(|l| l.first())
    {
        Some(h) => h.clone(),
        None => uri.authority().map_or(Value::from_static(""), |a| {
            Value::String(Str::from(a.as_str()))
        }),
    };
    Value::Map(Map::from_sorted_fill(8, 1, |e| {
        e.set(0, Value::from_static("body"), body);
        e.set(1, Value::from_static("header"), Value::Map(header));
        e.set(2, Value::from_static("host"), host);
        e.set(3, Value::from_static("method"), method_value(method));
        e.set(4, Value::from_static("path"), Value::String(path));
        e.set(
            5,
            Value::from_static("protocol"),
            Value::from_static(protocol(version)),
        );
        e.set(
            6,
            Value::from_static("query"),
            Value::Map(query_map(uri.query())),
        );
        e.set(7, Value::from_static("status"), Value::Int(0));
    }))
}

/// A request as the listener received it, with what its listener makes of requests.
pub(crate) struct Received<'a> {
    pub(crate) head: &'a http::request::Parts,
    pub(crate) body: Bytes,
    /// What decoding the body may make.
    pub(crate) limits: &'a BodyLimits,
    /// Whether a node reads the body: when none does, it stays the bytes that came, and a
    /// body that would not decode is no error.
    pub(crate) decode: bool,
}

/// The payload of a request: its body decoded by the negotiated headers (noted in `found`
/// while the header map is built) into [`payload_with_header`].
///
/// # Errors
/// A body that does not decode.
pub(crate) fn payload<'a>(
    read: Received<'a>,
    found: &mut Negotiation<'a>,
) -> Result<Value, BodyError> {
    let header = header_map_noting(&read.head.headers, found);
    let path = decode_path(read.head.uri.path());
    build(read, header, path, found)
}

fn build(
    read: Received<'_>,
    header: Map,
    path: Str,
    found: &Negotiation<'_>,
) -> Result<Value, BodyError> {
    let Received {
        head,
        body,
        limits,
        decode,
    } = read;
    let body = if decode {
        decode_negotiated(found, body, *limits)?
    } else {
        Value::Bytes(body)
    };
    Ok(payload_with_header(
        &head.method,
        &head.uri,
        head.version,
        header,
        path,
        body,
    ))
}

fn method_value(method: &Method) -> Value {
    // Standard methods are static strings: no allocation for them.
    let name = match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => return Value::String(Str::from(method.as_str())),
    };
    Value::from_static(name)
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

pub(crate) fn decode_path(path: &str) -> Str {
    if path.as_bytes().contains(&b'%') {
        Str::from(
            percent_encoding::percent_decode_str(path)
                .decode_utf8_lossy()
                .into_owned(),
        )
    } else {
        Str::from(path)
    }
}

/// The query of a URL as a map of lists, each name's values in the order they came.
pub(crate) fn query_map(query: Option<&str>) -> Map {
    match query {
        Some(query) if !query.is_empty() => {
            form_map(query, usize::MAX).map_or_else(Map::new, |(m, _)| m)
        }
        _ => Map::new(),
    }
}

/// URL-encoded `text` (a query or a form body) as a map of lists, with its number of fields;
/// `None` when it has more than `max` fields (the text after the one past `max` is not
/// parsed).
fn form_map(text: &str, max: usize) -> Option<(Map, usize)> {
    let mut pairs = Vec::new();
    for (k, v) in form_urlencoded::parse(text.as_bytes()) {
        if pairs.len() == max {
            return None;
        }
        pairs.push((k.into_owned(), Value::from(v.into_owned())));
    }
    let fields = pairs.len();
    Some((grouped(pairs), fields))
}

/// A map of lists from `(name, value)` pairs: each name's values in the order they came.
///
/// The pairs are sorted by name, stably so that each name's values keep their order, and the
/// runs of one name become the lists: O(n log n) for n pairs, which the map's sorted keys
/// cost anyway. (Looking each name up among those seen before costs O(n²) for n distinct
/// names: 10 s of CPU for a 1 MB form.)
pub(crate) fn grouped<K: Ord + Into<Value>>(mut pairs: Vec<(K, Value)>) -> Map {
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let names = 1 + pairs.windows(2).filter(|w| w[0].0 != w[1].0).count();
    let values = pairs.len();
    let mut pairs = pairs.into_iter().peekable();
    // A pair starts a list when the one before it ended one.
    let mut starts = true;
    let runs = std::iter::from_fn(|| {
        let (name, value) = pairs.next()?;
        let ends = pairs.peek().is_none_or(|(next, _)| *next != name);
        let key = std::mem::replace(&mut starts, ends).then(|| name.into());
        Some((key, value))
    });
    Map::from_grouped_lists(names, values, runs)
}

pub(crate) fn header_map(headers: &HeaderMap) -> Map {
    header_map_noting(headers, &mut Negotiation::default())
}

/// The payload's `header` map, noting the headers of [`Negotiation`] on the way: the
/// listener reads them from this one pass over the request's headers instead of looking
/// each up.
#[inline]
pub(crate) fn header_map_noting<'a>(headers: &'a HeaderMap, found: &mut Negotiation<'a>) -> Map {
    let header_text = |v: &HeaderValue| match v.to_str() {
        Ok(text) => Value::String(Str::from(text)),
        Err(_) => Value::String(Str::from(
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        )),
    };
    // `iter` yields every value, those of one name one after another, without hashing names
    // again as `get_all` would. HeaderMap names are unique (and lowercase), so the canonical
    // names are unique too. All lists share one allocation.
    let mut previous: Option<&HeaderName> = None;
    Map::from_grouped_lists(
        headers.keys_len(),
        headers.len(),
        headers.iter().map(|(name, value)| {
            let first = previous != Some(name);
            previous = Some(name);
            let key = first.then(|| {
                found.note(name, value);
                canonical_name(name)
            });
            (key, header_text(value))
        }),
    )
}

/// The Go-canonical spelling of a header name (`content-type` -> `Content-Type`); common names
/// are static strings.
#[inline(always)]
fn canonical_name(name: &HeaderName) -> Value {
    // Comparing with standard names compares their tags, not their bytes.
    static KNOWN: [(HeaderName, &str); 13] = [
        (header::HOST, "Host"),
        (header::USER_AGENT, "User-Agent"),
        (header::ACCEPT, "Accept"),
        (header::ACCEPT_ENCODING, "Accept-Encoding"),
        (header::ACCEPT_LANGUAGE, "Accept-Language"),
        (header::AUTHORIZATION, "Authorization"),
        (header::CACHE_CONTROL, "Cache-Control"),
        (header::CONNECTION, "Connection"),
        (header::CONTENT_LENGTH, "Content-Length"),
        (header::CONTENT_TYPE, "Content-Type"),
        (header::COOKIE, "Cookie"),
        (header::ORIGIN, "Origin"),
        (header::REFERER, "Referer"),
    ];
    match KNOWN.iter().find(|(known, _)| known == name) {
        Some((_, canonical)) => Value::from_static(canonical),
        None => Value::from(canonical(name.as_str())),
    }
}

/// The Go-canonical spelling of a lowercase header name: each word capitalised. Kept out of
/// line: common names never get here, and inlining it would keep `canonical_name` from
/// being inlined into the header map's loop.
#[inline(never)]
pub(crate) fn canonical(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper { c.to_ascii_uppercase() } else { c });
        upper = c == '-';
    }
    out
}

/// Why a request body could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// The body does not parse as its declared type or coding (400).
    Invalid(String),
    /// The body, once decompressed, is over the limit (413).
    TooLarge,
    /// The body's `Content-Encoding` is unknown (415).
    Unsupported(String),
    /// The body holds more fields or parts than its listener takes (413).
    TooMany {
        /// What there are too many of: `form fields`, `multipart parts`.
        what: &'static str,
        /// How many are taken.
        limit: usize,
    },
}

impl BodyError {
    /// The status that answers a request whose body failed this way.
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::Invalid(_) => StatusCode::BAD_REQUEST,
            BodyError::TooLarge | BodyError::TooMany { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Unsupported(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Invalid(why) => f.write_str(why),
            BodyError::TooLarge => f.write_str("body is over the size limit"),
            BodyError::Unsupported(coding) => write!(f, "unsupported content coding `{coding}`"),
            BodyError::TooMany { what, limit } => {
                write!(f, "body has more than {limit} {what}")
            }
        }
    }
}

impl From<DecodeError> for BodyError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Invalid(why) => {
                BodyError::Invalid(format!("invalid compressed body: {why}"))
            }
            DecodeError::TooLarge => BodyError::TooLarge,
            DecodeError::Unsupported(coding) => BodyError::Unsupported(coding),
        }
    }
}

/// What decoding one body may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// The bytes a compressed body may inflate to.
    pub bytes: usize,
    /// The fields of a form body, and of the forms among a multipart body's files.
    pub fields: usize,
    /// The parts of a multipart body, those of the multipart bodies among its files included.
    pub parts: usize,
}

impl BodyLimits {
    /// No limit but the nesting of multipart bodies (see [`BodyLimits::NESTING`]), for
    /// bodies that come from a server the flow chose to call.
    pub const NONE: BodyLimits = BodyLimits {
        bytes: usize::MAX,
        fields: usize::MAX,
        parts: usize::MAX,
    };

    /// How deep multipart bodies may nest (a file that is a multipart body is one level):
    /// each level is a frame of the decoder, so the depth must be bounded however large
    /// the body may be.
    pub const NESTING: usize = 8;
}

/// What is left of a body's [`BodyLimits`] while it is decoded.
pub(crate) struct Budget {
    limits: BodyLimits,
    fields: usize,
    parts: usize,
    depth: usize,
}

impl Budget {
    pub(crate) fn new(limits: BodyLimits) -> Budget {
        Budget {
            limits,
            fields: limits.fields,
            parts: limits.parts,
            depth: 0,
        }
    }

    /// Takes one multipart part.
    ///
    /// # Errors
    /// The body has used up its parts.
    pub(crate) fn part(&mut self) -> Result<(), BodyError> {
        self.parts = self.parts.checked_sub(1).ok_or(BodyError::TooMany {
            what: "multipart parts",
            limit: self.limits.parts,
        })?;
        Ok(())
    }

    /// Runs `decode` one multipart level deeper (the top level is one).
    ///
    /// # Errors
    /// Deeper than [`BodyLimits::NESTING`], or what `decode` fails with.
    pub(crate) fn nested<T>(
        &mut self,
        decode: impl FnOnce(&mut Budget) -> Result<T, BodyError>,
    ) -> Result<T, BodyError> {
        if self.depth == BodyLimits::NESTING {
            return Err(BodyError::Invalid(format!(
                "invalid multipart body: nested deeper than {} levels",
                BodyLimits::NESTING
            )));
        }
        self.depth += 1;
        let decoded = decode(self);
        self.depth -= 1;
        decoded
    }

    /// The form in `text`, its fields taken from what is left.
    fn form(&mut self, text: &str) -> Result<Map, BodyError> {
        let (map, fields) = form_map(text, self.fields).ok_or(BodyError::TooMany {
            what: "form fields",
            limit: self.limits.fields,
        })?;
        self.fields -= fields;
        Ok(map)
    }
}

/// Decodes a body: undoes its `Content-Encoding`, then decodes it by its `Content-Type` (see
/// `decode_typed`), within `limits`.
///
/// # Errors
/// An unknown coding, a body that does not parse as its declared type, or one over `limits`.
pub fn decode_body(
    headers: &HeaderMap,
    bytes: Bytes,
    limits: BodyLimits,
) -> Result<Value, BodyError> {
    decode_negotiated(&Negotiation::of(headers), bytes, limits)
}

/// [`decode_body`] with the headers already found.
///
/// # Errors
/// As [`decode_body`].
pub fn decode_negotiated(
    found: &Negotiation<'_>,
    bytes: Bytes,
    limits: BodyLimits,
) -> Result<Value, BodyError> {
    let bytes = match found.content_encoding {
        Some(coding) if !bytes.is_empty() => coding::decode(coding, bytes, limits.bytes)?,
        _ => bytes,
    };
    decode_as(found.content_type, bytes, &mut Budget::new(limits))
}

/// Decodes an uncompressed body by its `Content-Type`: JSON, form, text, multipart, otherwise
/// bytes (an empty body too), within what is left of `budget`.
///
/// # Errors
/// A body that does not parse as its declared type, or one over the budget.
pub(crate) fn decode_typed(
    headers: &HeaderMap,
    bytes: Bytes,
    budget: &mut Budget,
) -> Result<Value, BodyError> {
    decode_as(headers.get(header::CONTENT_TYPE), bytes, budget)
}

fn decode_as(
    content_type: Option<&HeaderValue>,
    bytes: Bytes,
    budget: &mut Budget,
) -> Result<Value, BodyError> {
    let Some(content_type) = content_type.and_then(|v| v.to_str().ok()) else {
        return Ok(Value::Bytes(bytes));
    };
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("application/json") {
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| BodyError::Invalid(format!("invalid JSON body: {e}")))
    } else if media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| BodyError::Invalid("form body is not UTF-8".into()))?;
        Ok(Value::Map(budget.form(text)?))
    } else if media.eq_ignore_ascii_case("multipart/form-data") {
        let boundary = multipart::boundary(content_type).unwrap_or("");
        multipart::decode(&bytes, boundary, budget)
    } else if media.len() > 5 && media[..5].eq_ignore_ascii_case("text/") {
        match String::from_utf8(bytes.to_vec()) {
            Ok(s) => Ok(Value::from(s)),
            Err(_) => Err(BodyError::Invalid(format!("{media} body is not UTF-8"))),
        }
    } else {
        Ok(Value::Bytes(bytes))
    }
}

/// Encodes `body` for a request or a multipart part: by the `Content-Type` in `headers`, or
/// the first type offered for the body's kind (which is then set in `headers`), then
/// compressed by the `Content-Encoding` in `headers`, if any.
///
/// # Errors
/// A body that the content type cannot carry, or an unknown coding.
pub fn encode_typed(body: &Value, headers: &mut HeaderMap) -> Result<Bytes, String> {
    let content_type = match headers.get(header::CONTENT_TYPE) {
        Some(t) => t.clone(),
        None => {
            let t = offers(body)[0].header();
            headers.insert(header::CONTENT_TYPE, t.clone());
            t
        }
    };
    let (mut bytes, with_boundary) = encode(
        body.clone(),
        Encoding::of(&content_type),
        Some(&content_type),
    )?;
    if let Some(t) = with_boundary {
        headers.insert(header::CONTENT_TYPE, t);
    }
    if let Some(codings) = headers.get(header::CONTENT_ENCODING) {
        let text = codings
            .to_str()
            .map_err(|_| "Content-Encoding is not ASCII".to_owned())?;
        for token in text.split(',') {
            match coding::Coding::parse(token) {
                Ok(Some(c)) => bytes = c.encode(&bytes),
                Ok(None) => {}
                Err(_) => return Err(format!("unsupported content coding `{}`", token.trim())),
            }
        }
    }
    Ok(bytes)
}

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
    fn note(&mut self, name: &HeaderName, value: &'a HeaderValue) {
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
fn compress(response: &mut Response<Body>, bytes: &mut Bytes, accept_encoding: &HeaderValue) {
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
fn bad_status(code: Option<i64>) -> Response<Body> {
    invalid_answer(match code {
        Some(code) => format!("status {code} is not an HTTP status"),
        None => "`status` is not an integer".into(),
    })
}

/// The response to an error answer that no `error` port handled.
#[cold]
#[inline(never)]
fn unhandled(error: &uniflow_value::ErrorValue) -> Response<Body> {
    tracing::warn!(%error, "request answered with an unhandled error");
    text_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
}

#[cold]
#[inline(never)]
fn invalid_answer(message: String) -> Response<Body> {
    tracing::warn!(%message, "cannot turn the answer into a response");
    text_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
}

/// Headers a response never carries: request-only headers and those the server computes.
/// The match is on the whole name, so `Set-Cookie` or `Access-Control-Allow-Origin` pass
/// (upstream's unanchored patterns dropped them).
fn is_blocked(name: &str) -> bool {
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
fn copy_headers(headers: &Value, out: &mut HeaderMap) {
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
enum Offer {
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

    fn header(self) -> HeaderValue {
        match self {
            Offer::Text => TEXT,
            Offer::Json => JSON,
            Offer::Octet => OCTET,
            Offer::Form => FORM,
            Offer::Multipart => MULTIPART,
        }
    }
}

fn offers(body: &Value) -> &'static [Offer] {
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
fn negotiate(offers: &[Offer], accept: Option<&HeaderValue>) -> Offer {
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
fn preferred(offers: &[Offer], accept: &str) -> Offer {
    let first = offers[0];
    let mut best: Option<(Offer, f32)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if q <= 0.0 {
            continue;
        }
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

fn media_matches(range: &str, offer: Offer) -> bool {
    let (ot, os) = offer.media();
    let (rt, rs) = range.split_once('/').unwrap_or((range, "*"));
    (rt == "*" || rt.eq_ignore_ascii_case(ot)) && (rs == "*" || rs.eq_ignore_ascii_case(os))
}

/// How a body is written for its content type.
#[derive(Clone, Copy)]
enum Encoding {
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
    fn of(content_type: &HeaderValue) -> Encoding {
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
fn encode(
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
fn unencodable(body: &Value) -> String {
    format!(
        "cannot encode a {} body as the answer's Content-Type; set it to JSON or drop it",
        body.kind_name()
    )
}

#[inline(never)]
fn encode_json(body: &Value) -> Result<Bytes, String> {
    let mut out = BytesMut::with_capacity(64).writer();
    serde_json::to_writer(&mut out, body)
        .map_err(|e| format!("cannot encode the body as JSON: {e}"))?;
    let mut out = out.into_inner();
    out.put_u8(b'\n');
    Ok(out.freeze())
}

#[inline(never)]
fn encode_form(m: &Map) -> Bytes {
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
fn encode_multipart(
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

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Uint(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

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
