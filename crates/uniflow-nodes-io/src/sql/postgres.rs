//! PostgreSQL for the `sql` node: sources, `BEGIN` by isolation level, binding and decoding.
//!
//! Arguments are encoded for the type the server inferred for each parameter (learnt when the
//! statement is first prepared), as pgx did: a route's `"42"` binds to an `integer` parameter,
//! and a parameter's type never depends on the value that happened to come first. Values
//! travel in PostgreSQL's binary formats, written and read here for the common types; a row's
//! value of another type comes back as its text when it is text, and as bytes otherwise.

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::pool::PoolOptions;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{
    PgArgumentBuffer, PgArguments, PgConnectOptions, PgQueryResult, PgRow, PgStatement, PgTypeInfo,
    PgValueFormat,
};
use sqlx::{Arguments, Column as _, Row as _, Statement as _};
use uniflow_value::{Bytes, ErrorValue, Value};

use super::Dialect;
use crate::format::sprint;

/// PostgreSQL.
pub(crate) struct Postgres;

/// Type OIDs, as fixed by PostgreSQL's catalog.
mod oid {
    pub(super) const BOOL: u32 = 16;
    pub(super) const BYTEA: u32 = 17;
    pub(super) const CHAR: u32 = 18;
    pub(super) const NAME: u32 = 19;
    pub(super) const INT8: u32 = 20;
    pub(super) const INT2: u32 = 21;
    pub(super) const INT4: u32 = 23;
    pub(super) const TEXT: u32 = 25;
    pub(super) const OID: u32 = 26;
    pub(super) const JSON: u32 = 114;
    pub(super) const FLOAT4: u32 = 700;
    pub(super) const FLOAT8: u32 = 701;
    pub(super) const UNKNOWN: u32 = 705;
    pub(super) const BPCHAR: u32 = 1042;
    pub(super) const VARCHAR: u32 = 1043;
    pub(super) const DATE: u32 = 1082;
    pub(super) const TIME: u32 = 1083;
    pub(super) const TIMESTAMP: u32 = 1114;
    pub(super) const TIMESTAMPTZ: u32 = 1184;
    pub(super) const NUMERIC: u32 = 1700;
    pub(super) const UUID: u32 = 2950;
    pub(super) const JSONB: u32 = 3802;
}

/// PostgreSQL's epoch, 2000-01-01, as days and microseconds go.
fn epoch() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2000, 1, 1)
        .expect("a date")
        .and_hms_opt(0, 0, 0)
        .expect("a time")
}

impl Dialect for Postgres {
    type Db = sqlx::Postgres;
    type Params = Vec<u32>;

    const FAILURE_ABORTS: bool = true;
    const DROP_ENDS_READS: bool = false;

    fn options(source: &str) -> Result<PgConnectOptions, String> {
        let source = source.trim();
        if source.starts_with("postgres://") || source.starts_with("postgresql://") {
            // sqlx's messages name the part that is wrong, never the password.
            return PgConnectOptions::from_str(source).map_err(|e| e.to_string());
        }
        if source.is_empty() {
            return Err("empty".to_owned());
        }
        // libpq's `key=value` form, as pgx took it.
        let mut options = PgConnectOptions::new_without_pgpass();
        for pair in source.split_whitespace() {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(format!(
                    "`{}` is not a postgres:// URL nor key=value pairs",
                    uniflow_spec::redact_credentials(pair)
                ));
            };
            options = match key {
                "host" => options.host(value),
                "port" => options.port(
                    value
                        .parse()
                        .map_err(|_| format!("invalid port `{value}`"))?,
                ),
                "user" => options.username(value),
                "password" => options.password(value),
                "dbname" => options.database(value),
                "application_name" => options.application_name(value),
                "sslmode" => options.ssl_mode(
                    value
                        .parse()
                        .map_err(|_| format!("invalid sslmode `{value}`"))?,
                ),
                other => return Err(format!("unknown key `{other}`")),
            };
        }
        Ok(options)
    }

    fn pool(_options: &PgConnectOptions) -> PoolOptions<sqlx::Postgres> {
        PoolOptions::new().max_connections(10)
    }

    fn begin(level: usize) -> Result<Option<&'static str>, String> {
        Ok(Some(match level {
            0 => return Ok(None),
            1 => "BEGIN ISOLATION LEVEL READ UNCOMMITTED",
            2 => "BEGIN ISOLATION LEVEL READ COMMITTED",
            // As pgx: a snapshot is what PostgreSQL's repeatable read gives.
            4 | 5 => "BEGIN ISOLATION LEVEL REPEATABLE READ",
            6 => "BEGIN ISOLATION LEVEL SERIALIZABLE",
            other => {
                return Err(format!(
                    "PostgreSQL has no isolation level `{}`",
                    super::LEVELS[other]
                ));
            }
        }))
    }

    fn placeholder(n: usize, out: &mut String) {
        out.push('$');
        out.push_str(&n.to_string());
    }

    fn params(statement: &PgStatement) -> Vec<u32> {
        match statement.parameters() {
            Some(sqlx::Either::Left(types)) => types
                .iter()
                .map(|t| t.oid().map_or(oid::UNKNOWN, |o| o.0))
                .collect(),
            Some(sqlx::Either::Right(n)) => vec![oid::UNKNOWN; n],
            None => Vec::new(),
        }
    }

    fn arity(params: &Vec<u32>) -> usize {
        params.len()
    }

    fn bind(params: &Vec<u32>, values: &[&Value]) -> Result<PgArguments, ErrorValue> {
        let mut args = PgArguments::default();
        for (i, (value, oid)) in values.iter().zip(params).enumerate() {
            let bytes = match value {
                Value::Null => None,
                value => Some(
                    encode(*oid, value)
                        .map_err(|why| ErrorValue::new(format!("argument ${}: {why}", i + 1)))?,
                ),
            };
            args.add(Param { oid: *oid, bytes })
                .map_err(|e| ErrorValue::new(format!("argument ${}: {e}", i + 1)))?;
        }
        Ok(args)
    }

    fn cell(row: &PgRow, i: usize) -> Result<Value, BoxDynError> {
        let raw = row.try_get_raw(i)?;
        let oid = row
            .column(i)
            .type_info()
            .oid()
            .map_or(oid::UNKNOWN, |o| o.0);
        decode(oid, raw.format() == PgValueFormat::Text, raw.as_bytes()?)
    }

    fn done(result: &PgQueryResult) -> (u64, Option<i64>) {
        (result.rows_affected(), None)
    }
}

/// An argument already encoded, with the type the server expects.
struct Param {
    oid: u32,
    bytes: Option<Vec<u8>>,
}

impl sqlx::Type<sqlx::Postgres> for Param {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(oid::UNKNOWN))
    }
}

impl sqlx::Encode<'_, sqlx::Postgres> for Param {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        match &self.bytes {
            None => Ok(IsNull::Yes),
            Some(bytes) => {
                buf.extend_from_slice(bytes);
                Ok(IsNull::No)
            }
        }
    }

    fn produces(&self) -> Option<PgTypeInfo> {
        Some(PgTypeInfo::with_oid(Oid(self.oid)))
    }
}

/// `value` in the binary format of type `oid`.
fn encode(oid: u32, value: &Value) -> Result<Vec<u8>, String> {
    let text = || match value {
        Value::String(s) => s.to_string(),
        Value::List(_) | Value::Map(_) => super::sqlite::json(value),
        other => sprint(other),
    };
    let cannot = |ty: &str| format!("a {} is not a {ty}", value.kind_name());
    Ok(match oid {
        oid::BOOL => vec![u8::from(match value {
            Value::Bool(b) => *b,
            Value::Int(n) => *n != 0,
            Value::String(s) if s.eq_ignore_ascii_case("true") || &**s == "t" || &**s == "1" => {
                true
            }
            Value::String(s) if s.eq_ignore_ascii_case("false") || &**s == "f" || &**s == "0" => {
                false
            }
            _ => return Err(cannot("boolean")),
        })],
        oid::INT2 => i16::try_from(integer(value)?)
            .map_err(|_| "out of range for smallint".to_owned())?
            .to_be_bytes()
            .to_vec(),
        oid::INT4 => i32::try_from(integer(value)?)
            .map_err(|_| "out of range for integer".to_owned())?
            .to_be_bytes()
            .to_vec(),
        oid::OID => u32::try_from(integer(value)?)
            .map_err(|_| "out of range for oid".to_owned())?
            .to_be_bytes()
            .to_vec(),
        oid::INT8 => integer(value)?.to_be_bytes().to_vec(),
        oid::FLOAT4 => (float(value)? as f32).to_be_bytes().to_vec(),
        oid::FLOAT8 => float(value)?.to_be_bytes().to_vec(),
        oid::BYTEA => match value {
            Value::Bytes(b) => b.to_vec(),
            _ => text().into_bytes(),
        },
        oid::JSON | oid::JSONB => {
            // A string is taken as JSON text, as pgx took a Go string.
            let json = match value {
                Value::String(s) => s.to_string(),
                other => super::sqlite::json(other),
            };
            let mut bytes = Vec::with_capacity(json.len() + 1);
            if oid == oid::JSONB {
                bytes.push(1);
            }
            bytes.extend_from_slice(json.as_bytes());
            bytes
        }
        oid::UUID => {
            let id = value
                .as_str()
                .and_then(|s| uuid::Uuid::parse_str(s).ok())
                .ok_or_else(|| cannot("UUID"))?;
            id.as_bytes().to_vec()
        }
        oid::TIMESTAMPTZ | oid::TIMESTAMP => {
            let at = timestamp(value).ok_or_else(|| cannot("timestamp (RFC 3339)"))?;
            (at - epoch())
                .num_microseconds()
                .ok_or("out of range")?
                .to_be_bytes()
                .to_vec()
        }
        oid::DATE => {
            let day = value
                .as_str()
                .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
                .ok_or_else(|| cannot("date (YYYY-MM-DD)"))?;
            i32::try_from((day - epoch().date()).num_days())
                .map_err(|_| "out of range".to_owned())?
                .to_be_bytes()
                .to_vec()
        }
        oid::TIME => {
            let time = value
                .as_str()
                .and_then(|s| NaiveTime::parse_from_str(s, "%H:%M:%S%.f").ok())
                .ok_or_else(|| cannot("time (HH:MM:SS)"))?;
            (time - NaiveTime::MIN)
                .num_microseconds()
                .ok_or("out of range")?
                .to_be_bytes()
                .to_vec()
        }
        oid::NUMERIC => numeric::encode(&text()).ok_or_else(|| cannot("number"))?,
        // Text, and the types whose binary format is their text (enums, citext, unknown).
        _ => text().into_bytes(),
    })
}

fn integer(value: &Value) -> Result<i64, String> {
    match value {
        Value::Int(n) => Ok(*n),
        Value::Uint(n) => i64::try_from(*n).map_err(|_| "out of range".to_owned()),
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(*f as i64),
        Value::Bool(b) => Ok(i64::from(*b)),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an integer")),
        other => Err(format!("a {} is not an integer", other.kind_name())),
    }
}

fn float(value: &Value) -> Result<f64, String> {
    match value {
        Value::Float(f) => Ok(*f),
        Value::Int(n) => Ok(*n as f64),
        Value::Uint(n) => Ok(*n as f64),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a number")),
        other => Err(format!("a {} is not a number", other.kind_name())),
    }
}

/// A timestamp from RFC 3339 text (or PostgreSQL's `YYYY-MM-DD HH:MM:SS`, taken as UTC) or
/// Unix seconds, as UTC.
fn timestamp(value: &Value) -> Option<NaiveDateTime> {
    match value {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.naive_utc())
            .ok()
            .or_else(|| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").ok()),
        Value::Int(secs) => DateTime::<Utc>::from_timestamp(*secs, 0).map(|t| t.naive_utc()),
        _ => None,
    }
}

/// A value of type `oid` from its bytes (binary format, or text when `text`).
fn decode(oid: u32, text: bool, bytes: &[u8]) -> Result<Value, BoxDynError> {
    if text {
        return Ok(Value::from(std::str::from_utf8(bytes)?.to_owned()));
    }
    let array = |n: usize| -> Result<&[u8], BoxDynError> {
        bytes
            .get(..n)
            .filter(|_| bytes.len() == n)
            .ok_or_else(|| "malformed value".into())
    };
    let utc = |micros: i64| {
        let at = epoch() + chrono::Duration::microseconds(micros);
        Value::from(
            at.and_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        )
    };
    Ok(match oid {
        oid::BOOL => Value::Bool(array(1)?[0] != 0),
        oid::INT2 => Value::Int(i64::from(i16::from_be_bytes(array(2)?.try_into()?))),
        oid::INT4 => Value::Int(i64::from(i32::from_be_bytes(array(4)?.try_into()?))),
        oid::OID => Value::Int(i64::from(u32::from_be_bytes(array(4)?.try_into()?))),
        oid::INT8 => Value::Int(i64::from_be_bytes(array(8)?.try_into()?)),
        oid::FLOAT4 => Value::Float(f64::from(f32::from_be_bytes(array(4)?.try_into()?))),
        oid::FLOAT8 => Value::Float(f64::from_be_bytes(array(8)?.try_into()?)),
        oid::BYTEA => Value::Bytes(Bytes::copy_from_slice(bytes)),
        oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME | oid::CHAR | oid::UNKNOWN => {
            Value::from(std::str::from_utf8(bytes)?.to_owned())
        }
        oid::JSON => serde_json::from_slice(bytes)?,
        oid::JSONB => serde_json::from_slice(bytes.get(1..).ok_or("malformed jsonb")?)?,
        oid::UUID => Value::from(uuid::Uuid::from_slice(bytes)?.hyphenated().to_string()),
        oid::TIMESTAMPTZ | oid::TIMESTAMP => utc(i64::from_be_bytes(array(8)?.try_into()?)),
        oid::DATE => {
            let days = i32::from_be_bytes(array(4)?.try_into()?);
            let day = epoch().date() + chrono::Duration::days(i64::from(days));
            Value::from(day.format("%Y-%m-%d").to_string())
        }
        oid::TIME => {
            let micros = i64::from_be_bytes(array(8)?.try_into()?);
            let time = NaiveTime::MIN + chrono::Duration::microseconds(micros);
            Value::from(time.format("%H:%M:%S%.f").to_string())
        }
        oid::NUMERIC => Value::from(numeric::decode(bytes).ok_or("malformed numeric")?),
        _ => match std::str::from_utf8(bytes) {
            Ok(text) => Value::from(text.to_owned()),
            Err(_) => Value::Bytes(Bytes::copy_from_slice(bytes)),
        },
    })
}

/// NUMERIC's binary format: `ndigits`, `weight`, `sign`, `dscale` (16 bits each), then
/// `ndigits` base-10000 digits, the first worth 10000^weight.
mod numeric {
    const NEGATIVE: u16 = 0x4000;
    const NAN: u16 = 0xC000;

    /// Decimal text (`-12.50`) in the binary format.
    pub(super) fn encode(text: &str) -> Option<Vec<u8>> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("nan") {
            return Some(
                [0u16, 0, NAN, 0]
                    .iter()
                    .flat_map(|w| w.to_be_bytes())
                    .collect(),
            );
        }
        let (negative, unsigned) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
        if int.is_empty() && frac.is_empty()
            || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let int = int.trim_start_matches('0');
        let dscale = u16::try_from(frac.len()).ok()?;
        let int_groups = int.len().div_ceil(4);
        let mut digits_text = "0".repeat(int_groups * 4 - int.len());
        digits_text.push_str(int);
        digits_text.push_str(frac);
        digits_text.push_str(&"0".repeat((4 - frac.len() % 4) % 4));
        let mut digits: Vec<i16> = digits_text
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).ok()?.parse().ok())
            .collect::<Option<_>>()?;
        let mut weight = i16::try_from(int_groups).ok()? - 1;
        while digits.first() == Some(&0) {
            digits.remove(0);
            weight -= 1;
        }
        while digits.last() == Some(&0) {
            digits.pop();
        }
        if digits.is_empty() {
            weight = 0;
        }
        let sign = if negative && !digits.is_empty() {
            NEGATIVE
        } else {
            0
        };
        let mut out = Vec::with_capacity(8 + digits.len() * 2);
        for word in [i16::try_from(digits.len()).ok()?, weight] {
            out.extend_from_slice(&word.to_be_bytes());
        }
        out.extend_from_slice(&sign.to_be_bytes());
        out.extend_from_slice(&dscale.to_be_bytes());
        for d in digits {
            out.extend_from_slice(&d.to_be_bytes());
        }
        Some(out)
    }

    /// The binary format as decimal text with `dscale` fraction digits.
    pub(super) fn decode(bytes: &[u8]) -> Option<String> {
        let word = |i: usize| {
            Some(u16::from_be_bytes(
                bytes.get(i * 2..i * 2 + 2)?.try_into().ok()?,
            ))
        };
        let (ndigits, weight, sign, dscale) = (word(0)?, word(1)? as i16, word(2)?, word(3)?);
        if sign == NAN {
            return Some("NaN".to_owned());
        }
        let digits: Vec<u16> = (0..usize::from(ndigits))
            .map(|i| word(4 + i))
            .collect::<Option<_>>()?;
        let digit = |position: i32| -> u16 {
            usize::try_from(i32::from(weight) - position)
                .ok()
                .and_then(|i| digits.get(i).copied())
                .unwrap_or(0)
        };
        let mut int = String::new();
        for position in (0..=i32::from(weight).max(0)).rev() {
            int.push_str(&format!("{:04}", digit(position)));
        }
        let int = int.trim_start_matches('0');
        let mut frac = String::new();
        let mut position = -1;
        while frac.len() < usize::from(dscale) {
            frac.push_str(&format!("{:04}", digit(position)));
            position -= 1;
        }
        frac.truncate(usize::from(dscale));
        let mut out = String::new();
        if sign == NEGATIVE {
            out.push('-');
        }
        out.push_str(if int.is_empty() { "0" } else { int });
        if !frac.is_empty() {
            out.push('.');
            out.push_str(&frac);
        }
        Some(out)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn numbers_survive_the_binary_format() {
            for text in [
                "0",
                "1",
                "-12.50",
                "10000",
                "123456789.000123",
                "0.0001",
                "-0.5",
                "NaN",
            ] {
                let bytes = super::encode(text).unwrap();
                assert_eq!(super::decode(&bytes).unwrap(), text, "{text}");
            }
            assert!(super::encode("12a").is_none());
        }
    }
}
