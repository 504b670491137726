//! A request as a value: the payload map, its path, query and header maps.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Version};
use uniflow_value::{Map, Str, Value};

use super::*;

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

pub(super) fn build(
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

pub(super) fn method_value(method: &Method) -> Value {
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

pub(super) fn protocol(version: Version) -> &'static str {
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
pub(super) fn form_map(text: &str, max: usize) -> Option<(Map, usize)> {
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
pub(super) fn canonical_name(name: &HeaderName) -> Value {
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
