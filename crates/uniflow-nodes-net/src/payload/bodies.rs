//! Bodies by `Content-Encoding` and `Content-Type`: decoding a request body within its
//! limits, and encoding a body for an outgoing request.

use crate::coding::{self, DecodeError};
use crate::multipart;
use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};
use uniflow_value::{Map, Value};

use super::*;

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

pub(super) fn decode_as(
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
