//! What the `http` and `proxy` nodes share: an HTTP payload (see `docs/nodes/listener.md`) turned into an
//! outgoing request, and a response turned back into a payload.
//!
//! Requests go through `reqwest`, one client per node, which pools connections per host. A
//! payload's `header` is sent without hop-by-hop headers (`Connection` and those it names,
//! `Keep-Alive`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`, `Proxy-*`), `Host` (the URL
//! decides it) and `Content-Length` (the encoded body decides it). A response body is decoded
//! by its `Content-Encoding` and `Content-Type` like a request body, and the coding is then
//! dropped from the payload's header, since the body it describes is gone.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use uniflow_value::{ErrorValue, Map, Value};

use crate::payload::{BodyLimits, decode_body, encode_typed, header_map, query_map};

/// The keys of an HTTP payload.
const PAYLOAD_KEYS: [&str; 9] = [
    "body", "header", "host", "method", "path", "protocol", "query", "scheme", "status",
];

/// Characters a URL path cannot hold as they are.
const PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'%');

/// The parts of a node's `url` that override or extend a payload's.
#[derive(Debug, Clone, Default)]
pub(crate) struct Target {
    pub(crate) scheme: Option<String>,
    pub(crate) authority: Option<String>,
    /// The path as written (already percent-encoded), empty when the URL has none.
    pub(crate) path: String,
    pub(crate) query: Option<String>,
}

impl Target {
    /// Parses an absolute URL (`https://host/base?x=1`) or a path (`/base`).
    ///
    /// # Errors
    /// Text that is neither, or a scheme other than `http`/`https`.
    pub(crate) fn parse(url: &str) -> Result<Target, String> {
        let uri: Uri = url
            .trim()
            .parse()
            .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        let scheme = uri.scheme_str().map(str::to_ascii_lowercase);
        if let Some(s) = &scheme
            && s != "http"
            && s != "https"
        {
            return Err(format!("unsupported scheme `{s}`: use http or https"));
        }
        let path = match uri.path() {
            // `Uri` reports `/` for `https://host`; only a path written out counts.
            "/" if !url.trim_end_matches(['?']).ends_with('/') && uri.authority().is_some() => {
                String::new()
            }
            p => p.to_owned(),
        };
        Ok(Target {
            scheme,
            authority: uri.authority().map(|a| a.as_str().to_owned()),
            path,
            query: uri.query().map(str::to_owned),
        })
    }
}

/// A request ready to send, and the request fields echoed into the answer's payload.
pub(crate) struct Outgoing {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) echo: Echo,
}

/// The request's fields as the answer repeats them (upstream answered with them too).
pub(crate) struct Echo {
    method: Value,
    scheme: Value,
    host: Value,
    path: Value,
    query: Value,
    protocol: Option<Value>,
}

/// Whether `value` reads as an HTTP payload rather than a bare body: a map with `status`
/// (upstream's rule), or a map whose keys are all payload keys and that names a `method`,
/// `path`, `header`, `query` or `body` (so `{method: POST, body: ..}` works without a status).
pub(crate) fn is_payload(value: &Value) -> bool {
    let Value::Map(m) = value else { return false };
    if m.get("status").is_some() {
        return true;
    }
    !m.is_empty()
        && m.iter()
            .all(|(k, _)| k.as_str().is_some_and(|k| PAYLOAD_KEYS.contains(&k)))
        && ["method", "path", "header", "query", "body"]
            .iter()
            .any(|k| m.get(k).is_some())
}

fn text_field<'v>(payload: &'v Value, key: &str) -> Result<Option<&'v str>, String> {
    match payload.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!(
            "`{key}` must be a string, not {}",
            other.kind_name()
        )),
    }
}

/// Builds the request for `input`, merged with the node's `target`: the
/// target's scheme and host win, its path is joined in front of the payload's, and its query is
/// added to the payload's.
///
/// # Errors
/// A payload field of the wrong type, no host, or a body its content type cannot carry.
pub(crate) fn outgoing(target: &Target, input: &Value) -> Result<Outgoing, String> {
    let payload = is_payload(input);
    let (body, mut headers) = if payload {
        let headers = match input.get("header") {
            None | Some(Value::Null) => HeaderMap::new(),
            Some(h) => to_headers(h)?,
        };
        (input.get("body").cloned().unwrap_or(Value::Null), headers)
    } else {
        (input.clone(), HeaderMap::new())
    };
    let field = |key| {
        if payload {
            text_field(input, key)
        } else {
            Ok(None)
        }
    };
    let method = match field("method")?.filter(|m| !m.is_empty()) {
        Some(m) => Method::from_bytes(m.as_bytes()).map_err(|_| format!("invalid method `{m}`"))?,
        None if matches!(&body, Value::Null)
            || matches!(&body, Value::Bytes(b) if b.is_empty()) =>
        {
            Method::GET
        }
        None => Method::POST,
    };
    let scheme = match &target.scheme {
        Some(s) => s.clone(),
        None => field("scheme")?
            .filter(|s| !s.is_empty())
            .unwrap_or("http")
            .to_ascii_lowercase(),
    };
    let host = match &target.authority {
        Some(a) => a.clone(),
        None => field("host")?
            .filter(|h| !h.is_empty())
            .ok_or("no host: the node's `url` names none and the payload has no `host`")?
            .to_owned(),
    };
    let given_path = field("path")?.unwrap_or("");
    let encoded = utf8_percent_encode(given_path, PATH).to_string();
    let path = if target.path.is_empty() {
        encoded
    } else if encoded.is_empty() {
        target.path.clone()
    } else {
        format!(
            "{}/{}",
            target.path.trim_end_matches('/'),
            encoded.trim_start_matches('/')
        )
    };
    let mut query = form_urlencoded::Serializer::new(String::new());
    let mut query_pairs = 0;
    if payload && let Some(q) = input.get("query") {
        match q {
            Value::Null => {}
            Value::Map(m) => {
                for (k, v) in m.iter() {
                    let Some(k) = k.as_str() else { continue };
                    for v in one_or_many(v) {
                        query.append_pair(k, &scalar(v, "query")?);
                        query_pairs += 1;
                    }
                }
            }
            other => return Err(format!("`query` must be a map, not {}", other.kind_name())),
        }
    }
    let mut query = query.finish();
    if let Some(extra) = target.query.as_deref().filter(|q| !q.is_empty()) {
        if query_pairs > 0 {
            query.push('&');
        }
        query.push_str(extra);
    }
    let path = if path.is_empty() {
        "/".to_owned()
    } else {
        path
    };
    let text = if query.is_empty() {
        format!("{scheme}://{host}{path}")
    } else {
        format!("{scheme}://{host}{path}?{query}")
    };
    let uri: Uri = text
        .parse()
        .map_err(|e| format!("invalid URL `{text}`: {e}"))?;
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    // No body (null, or the empty bytes a GET arrives with) sends none, and no Content-Type.
    let body = match &body {
        Value::Null => Bytes::new(),
        Value::Bytes(b) if b.is_empty() => Bytes::new(),
        body => encode_typed(body, &mut headers)?,
    };
    let echo = Echo {
        method: Value::from(method.as_str().to_owned()),
        scheme: Value::from(scheme),
        host: Value::from(host),
        path: Value::from(
            percent_encoding::percent_decode_str(uri.path())
                .decode_utf8_lossy()
                .into_owned(),
        ),
        query: Value::Map(query_map(uri.query())),
        protocol: field("protocol")?.map(|p| Value::from(p.to_owned())),
    };
    Ok(Outgoing {
        method,
        uri,
        headers,
        body,
        echo,
    })
}

fn one_or_many(value: &Value) -> &[Value] {
    match value {
        Value::List(l) => l,
        single => std::slice::from_ref(single),
    }
}

fn scalar(value: &Value, what: &str) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.to_string()),
        Value::Int(i) => Ok(i.to_string()),
        Value::Uint(u) => Ok(u.to_string()),
        Value::Float(f) => Ok(f.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!(
            "a {what} value must be text, not {}",
            other.kind_name()
        )),
    }
}

/// A payload's `header` map as a `HeaderMap`.
///
/// # Errors
/// A name or value that HTTP cannot carry.
pub(crate) fn to_headers(value: &Value) -> Result<HeaderMap, String> {
    let Value::Map(map) = value else {
        return Err(format!("`header` must be a map, not {}", value.kind_name()));
    };
    let mut headers = HeaderMap::with_capacity(map.len());
    for (name, values) in map.iter() {
        let Some(name) = name.as_str() else { continue };
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name `{name}`"))?;
        for v in one_or_many(values) {
            let text = scalar(v, "header")?;
            let v = HeaderValue::try_from(text)
                .map_err(|_| format!("invalid value for header `{name}`"))?;
            headers.append(name.clone(), v);
        }
    }
    Ok(headers)
}

/// Removes the headers that belong to one connection, not to the message (RFC 9110 §7.6.1).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// A client error as one line with its causes (reqwest's own text names only the outermost).
pub(crate) fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Sends `out` through `reqwest` (the `http` node) and reads the whole answer into a payload.
///
/// # Errors
/// A transport failure, a timeout, or a response body that does not decode.
pub(crate) async fn exchange(
    client: &reqwest::Client,
    mut out: Outgoing,
    timeout: Option<Duration>,
) -> Result<Value, ErrorValue> {
    crate::trace::inject(&mut out.headers);
    let url = reqwest::Url::parse(&out.uri.to_string())
        .map_err(|e| ErrorValue::new(format!("invalid URL `{}`: {e}", out.uri)))?;
    let mut request = client.request(out.method, url).headers(out.headers);
    if !out.body.is_empty() {
        request = request.body(out.body);
    }
    if let Some(timeout) = timeout {
        request = request.timeout(timeout);
    }
    let response = request
        .send()
        .await
        .map_err(|e| ErrorValue::new(error_text(&e)))?;
    let status = response.status();
    let mut headers = response.headers().clone();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| ErrorValue::new(error_text(&e)))?;
    answer(out.echo, status, &mut headers, bytes)
}

/// The payload for a response: the request's fields, the response's `header`, decoded `body`
/// and `status`.
///
/// # Errors
/// A body that does not decode as its `Content-Encoding` and `Content-Type` say.
pub(crate) fn answer(
    echo: Echo,
    status: http::StatusCode,
    headers: &mut HeaderMap,
    bytes: Bytes,
) -> Result<Value, ErrorValue> {
    strip_hop_by_hop(headers);
    let body = decode_body(headers, bytes, BodyLimits::NONE)
        .map_err(|e| ErrorValue::new(format!("the response body does not decode: {e}")))?;
    headers.remove(header::CONTENT_ENCODING);
    headers.remove(header::CONTENT_LENGTH);
    let mut entries = vec![
        ("body", body),
        ("header", Value::Map(header_map(headers))),
        ("host", echo.host),
        ("method", echo.method),
        ("path", echo.path),
        ("query", echo.query),
        ("scheme", echo.scheme),
        ("status", Value::Int(i64::from(status.as_u16()))),
    ];
    if let Some(protocol) = echo.protocol {
        entries.push(("protocol", protocol));
    }
    Ok(Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect::<Map>(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(yaml: &str) -> Value {
        yaml_serde::from_str(yaml).unwrap()
    }

    #[test]
    fn node_url_overrides_host_and_joins_paths() {
        let target = Target::parse("https://api.test/v1/?key=k").unwrap();
        let out = outgoing(
            &target,
            &value("{method: PUT, host: ignored:8000, path: /users/a b, query: {x: ['1', '2']}, status: 0, body: {n: 1}}"),
        )
        .unwrap();
        assert_eq!(out.method, Method::PUT);
        assert_eq!(out.uri, "https://api.test/v1/users/a%20b?x=1&x=2&key=k");
        assert_eq!(
            out.headers[header::CONTENT_TYPE],
            "application/json; charset=utf-8"
        );
        assert_eq!(out.body, "{\"n\":1}\n");
    }

    #[test]
    fn a_bare_value_is_the_body_and_picks_the_method() {
        let target = Target::parse("http://h:1").unwrap();
        let out = outgoing(&target, &Value::from("hi")).unwrap();
        assert_eq!(out.method, Method::POST);
        assert_eq!(out.uri, "http://h:1/");
        assert_eq!(out.body, "hi");
        assert_eq!(
            out.headers[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        let out = outgoing(&target, &Value::Null).unwrap();
        assert_eq!(out.method, Method::GET);
        assert!(out.body.is_empty() && out.headers.is_empty());
        // A map that is not a payload is a JSON body.
        let out = outgoing(&target, &value("{a: 1}")).unwrap();
        assert_eq!(out.body, "{\"a\":1}\n");
    }

    #[test]
    fn a_path_url_takes_the_payload_host() {
        let target = Target::parse("/base").unwrap();
        let out = outgoing(&target, &value("{host: up:9, path: /x, status: 0}")).unwrap();
        assert_eq!(out.uri, "http://up:9/base/x");
        let err = outgoing(&target, &value("{path: /x, status: 0}"))
            .err()
            .unwrap();
        assert!(err.starts_with("no host"), "{err}");
        assert!(Target::parse("ftp://x/").is_err());
    }

    #[test]
    fn hop_by_hop_headers_are_not_forwarded() {
        let target = Target::parse("http://h").unwrap();
        let out = outgoing(
            &target,
            &value("{status: 0, header: {Connection: [X-Secret], X-Secret: [s], Keep-Alive: [t], Host: [old], Content-Length: ['9'], X-Kept: [k]}}"),
        )
        .unwrap();
        assert_eq!(out.headers.len(), 1, "{:?}", out.headers);
        assert_eq!(out.headers["x-kept"], "k");
    }

    #[test]
    fn answers_decode_their_body_and_drop_the_coding() {
        let target = Target::parse("http://h").unwrap();
        let echo = outgoing(&target, &Value::Null).unwrap().echo;
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let body = crate::coding::Coding::Gzip.encode(b"{\"ok\": true}");
        let v = answer(echo, http::StatusCode::CREATED, &mut headers, body).unwrap();
        assert_eq!(v.get("status"), Some(&Value::Int(201)));
        assert_eq!(v.get("body"), Some(&value("{ok: true}")));
        assert_eq!(v.pick(&["header", "Content-Encoding"]), None);
        assert_eq!(v.get("method"), Some(&Value::from("GET")));
    }
}
