//! Content codings (`Content-Encoding`, `Accept-Encoding`): gzip, deflate and br.
//!
//! Bodies are whole buffers here: requests are read before they are decoded, and responses are
//! built from a value, so the codings run synchronously over bytes. `deflate` is the zlib
//! stream (RFC 9110), as upstream and browsers send it; a raw deflate stream, which some old
//! clients send instead, is accepted too when decoding. Decoding stops at a size limit, so a
//! small compressed body cannot expand into gigabytes.

use std::io::{Read, Write};

use bytes::Bytes;
use http::HeaderValue;

/// A content coding other than `identity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// `gzip` (RFC 1952).
    Gzip,
    /// `deflate`: a zlib stream (RFC 1950).
    Deflate,
    /// `br`: Brotli (RFC 7932).
    Br,
}

/// Why a body could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// A coding this server does not know (answered 415).
    Unsupported(String),
    /// The decoded body is larger than the limit (answered 413).
    TooLarge,
    /// The bytes are not valid for their coding (answered 400).
    Invalid(String),
}

/// Brotli quality for responses: 11 (the format's default) costs tens of milliseconds per
/// megabyte; 5 compresses dynamic content nearly as well at a fraction of the time.
const BROTLI_QUALITY: u32 = 5;
const BROTLI_WINDOW: u32 = 22;

impl Coding {
    /// The coding's token, as in `Content-Encoding`.
    pub fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Br => "br",
        }
    }

    /// The coding as a header value.
    pub fn header(self) -> HeaderValue {
        HeaderValue::from_static(self.name())
    }

    /// The coding named `token`; `Ok(None)` for `identity`.
    ///
    /// # Errors
    /// An unknown coding.
    pub fn parse(token: &str) -> Result<Option<Coding>, DecodeError> {
        let token = token.trim();
        if token.eq_ignore_ascii_case("gzip") || token.eq_ignore_ascii_case("x-gzip") {
            Ok(Some(Coding::Gzip))
        } else if token.eq_ignore_ascii_case("deflate") {
            Ok(Some(Coding::Deflate))
        } else if token.eq_ignore_ascii_case("br") {
            Ok(Some(Coding::Br))
        } else if token.is_empty() || token.eq_ignore_ascii_case("identity") {
            Ok(None)
        } else {
            Err(DecodeError::Unsupported(token.to_owned()))
        }
    }

    /// Compresses `data`.
    pub fn encode(self, data: &[u8]) -> Bytes {
        let out = Vec::with_capacity(data.len() / 2 + 32);
        let out = match self {
            Coding::Gzip => {
                let mut w = flate2::write::GzEncoder::new(out, flate2::Compression::default());
                w.write_all(data).expect("writing to a Vec cannot fail");
                w.finish().expect("writing to a Vec cannot fail")
            }
            Coding::Deflate => {
                let mut w = flate2::write::ZlibEncoder::new(out, flate2::Compression::default());
                w.write_all(data).expect("writing to a Vec cannot fail");
                w.finish().expect("writing to a Vec cannot fail")
            }
            Coding::Br => {
                let mut w = brotli::CompressorWriter::new(out, 4096, BROTLI_QUALITY, BROTLI_WINDOW);
                w.write_all(data).expect("writing to a Vec cannot fail");
                w.into_inner()
            }
        };
        Bytes::from(out)
    }

    /// Decompresses `data`, failing once the output passes `limit` bytes.
    ///
    /// # Errors
    /// Invalid input, or output over `limit`.
    pub fn decode(self, data: &[u8], limit: usize) -> Result<Bytes, DecodeError> {
        match self {
            Coding::Gzip => read_limited(flate2::read::MultiGzDecoder::new(data), limit),
            Coding::Deflate => match read_limited(flate2::read::ZlibDecoder::new(data), limit) {
                Err(DecodeError::Invalid(_)) if !looks_like_zlib(data) => {
                    read_limited(flate2::read::DeflateDecoder::new(data), limit)
                }
                other => other,
            },
            Coding::Br => read_limited(brotli::Decompressor::new(data, 4096), limit),
        }
    }
}

/// A zlib stream starts with a CMF/FLG pair whose 16-bit value is a multiple of 31.
fn looks_like_zlib(data: &[u8]) -> bool {
    data.len() >= 2
        && data[0] & 0x0f == 8
        && (u16::from(data[0]) << 8 | u16::from(data[1])) % 31 == 0
}

fn read_limited(reader: impl Read, limit: usize) -> Result<Bytes, DecodeError> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Invalid(e.to_string()))?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge);
    }
    Ok(Bytes::from(out))
}

/// Decodes a body whose `Content-Encoding` is `header` (codings listed in the order they were
/// applied, so they are undone from the last).
///
/// # Errors
/// An unknown coding, invalid data, or output over `limit`.
pub fn decode(header: &HeaderValue, body: Bytes, limit: usize) -> Result<Bytes, DecodeError> {
    let text = header
        .to_str()
        .map_err(|_| DecodeError::Invalid("Content-Encoding is not ASCII".into()))?;
    let mut body = body;
    for token in text.rsplit(',') {
        if let Some(coding) = Coding::parse(token)? {
            body = coding.decode(&body, limit)?;
        }
    }
    Ok(body)
}

/// The entries of a header such as `Accept` or `Accept-Encoding` (`a;q=0.5, b`) with their
/// weight (`q`, 1 when absent), leaving out those weighted 0 (refused).
pub(crate) fn weighted(list: &str) -> impl Iterator<Item = (&str, f32)> {
    list.split(',').filter_map(|range| {
        let mut parts = range.split(';');
        let token = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        (q > 0.0).then_some((token, q))
    })
}

/// Picks the response coding from `Accept-Encoding`, as upstream does: the offers are
/// `identity, gzip, deflate, br` in that order; each listed coding (in the header's order)
/// selects the first offer it names (`*` names `identity`), and the highest `q` wins, stopping
/// at `q=1`. `None` means identity.
pub fn negotiate(accept_encoding: &HeaderValue) -> Option<Coding> {
    let text = accept_encoding.to_str().ok()?;
    // Most clients send one of a few fixed strings; they all start with `gzip` at q=1.
    if text.starts_with("gzip,") || text == "gzip" {
        return Some(Coding::Gzip);
    }
    let mut best: Option<(Option<Coding>, f32)> = None;
    for (token, q) in weighted(text) {
        let offer = if token == "*" {
            None
        } else {
            match Coding::parse(token) {
                Ok(coding) => coding,
                Err(_) => continue,
            }
        };
        if best.is_none_or(|(_, bq)| q > bq) {
            best = Some((offer, q));
            if q >= 1.0 {
                break;
            }
        }
    }
    best.and_then(|(c, _)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ae(text: &str) -> Option<Coding> {
        negotiate(&HeaderValue::from_str(text).unwrap())
    }

    #[test]
    fn accept_encoding_picks_the_first_best_offer() {
        assert_eq!(ae("gzip"), Some(Coding::Gzip));
        assert_eq!(ae("gzip, deflate, br"), Some(Coding::Gzip));
        assert_eq!(ae("br"), Some(Coding::Br));
        assert_eq!(ae("deflate;q=0.5, br;q=0.8"), Some(Coding::Br));
        assert_eq!(ae("identity"), None);
        assert_eq!(ae("*"), None);
        assert_eq!(ae("zstd, br;q=0.1"), Some(Coding::Br));
        assert_eq!(ae("gzip;q=0"), None);
    }

    #[test]
    fn codings_round_trip() {
        let data = b"hello hello hello hello".repeat(100);
        for coding in [Coding::Gzip, Coding::Deflate, Coding::Br] {
            let packed = coding.encode(&data);
            assert!(packed.len() < data.len(), "{coding:?} compresses");
            assert_eq!(coding.decode(&packed, 1 << 20).unwrap(), data, "{coding:?}");
            assert_eq!(
                coding.decode(&packed, 100),
                Err(DecodeError::TooLarge),
                "{coding:?} stops at the limit"
            );
        }
    }

    #[test]
    fn gzip_output_is_gzip_and_deflate_is_zlib() {
        assert_eq!(&Coding::Gzip.encode(b"x")[..2], &[0x1f, 0x8b]);
        assert!(looks_like_zlib(&Coding::Deflate.encode(b"x")));
    }

    #[test]
    fn raw_deflate_is_accepted_for_deflate() {
        let mut w = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        w.write_all(b"raw deflate").unwrap();
        let raw = w.finish().unwrap();
        assert_eq!(
            Coding::Deflate.decode(&raw, 100).unwrap(),
            &b"raw deflate"[..]
        );
    }

    #[test]
    fn stacked_codings_are_undone_from_the_last() {
        let once = Coding::Gzip.encode(b"twice");
        let twice = Coding::Br.encode(&once);
        let header = HeaderValue::from_static("gzip, br");
        assert_eq!(decode(&header, twice, 100).unwrap(), &b"twice"[..]);
        assert!(matches!(
            decode(&HeaderValue::from_static("zstd"), Bytes::new(), 100),
            Err(DecodeError::Unsupported(_))
        ));
        assert!(matches!(
            Coding::Gzip.decode(b"not gzip", 100),
            Err(DecodeError::Invalid(_))
        ));
    }
}
