//! Decoding typed structs out of a [`Value`], with upstream's lenient scalar conversions.
//!
//! Upstream's decoder parses strings into numbers and booleans and prints numbers into strings,
//! because templated fields (`port: "{{ .PORT }}"`) always render to strings. A single value
//! where a list is expected decodes as a one-element list. The same rules hold here.

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess,
    SeqAccess, VariantAccess, Visitor,
};

use crate::{Error, Value};

/// Decodes `T` from a value.
///
/// # Errors
/// When the value does not have the shape `T` needs; the message names the expected type. Wrap
/// the call in `serde_path_to_error` to learn the field path.
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, Error> {
    T::deserialize(value)
}

impl Value {
    fn invalid_type<E: de::Error>(&self, exp: &dyn de::Expected) -> E {
        let unexpected = match self {
            Value::Null => de::Unexpected::Unit,
            Value::Bool(b) => de::Unexpected::Bool(*b),
            Value::Int(i) => de::Unexpected::Signed(*i),
            Value::Uint(u) => de::Unexpected::Unsigned(*u),
            Value::Float(f) => de::Unexpected::Float(*f),
            Value::String(s) => de::Unexpected::Str(s),
            Value::Bytes(b) => de::Unexpected::Bytes(b),
            Value::List(_) => de::Unexpected::Seq,
            Value::Map(_) => de::Unexpected::Map,
            Value::Error(_) => de::Unexpected::Other("error"),
        };
        E::invalid_type(unexpected, exp)
    }
}

macro_rules! deserialize_integer {
    ($($method:ident => $visit:ident : $t:ty),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            let parsed: Option<$t> = match self {
                Value::Int(i) => <$t>::try_from(*i).ok(),
                Value::Uint(u) => <$t>::try_from(*u).ok(),
                Value::Float(f) if f.fract() == 0.0 => <$t>::try_from(*f as i128).ok(),
                Value::String(s) => s.trim().parse::<$t>().ok(),
                _ => None,
            };
            match parsed {
                Some(n) => visitor.$visit(n),
                None => Err(self.invalid_type(&visitor)),
            }
        }
    )*};
}

impl<'de> Deserializer<'de> for &'de Value {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::Uint(u) => visitor.visit_u64(*u),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Bytes(b) => visitor.visit_borrowed_bytes(b),
            Value::List(l) => visitor.visit_seq(Seq(l.iter())),
            Value::Map(m) => visitor.visit_map(Entries {
                iter: m.entries().iter(),
                value: None,
            }),
            Value::Error(e) => visitor.visit_borrowed_str(e.message()),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::String(s) => match s.trim() {
                "true" | "TRUE" | "True" | "1" => visitor.visit_bool(true),
                "false" | "FALSE" | "False" | "0" => visitor.visit_bool(false),
                _ => Err(self.invalid_type(&visitor)),
            },
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    deserialize_integer!(
        deserialize_i8 => visit_i8: i8,
        deserialize_i16 => visit_i16: i16,
        deserialize_i32 => visit_i32: i32,
        deserialize_i64 => visit_i64: i64,
        deserialize_u8 => visit_u8: u8,
        deserialize_u16 => visit_u16: u16,
        deserialize_u32 => visit_u32: u32,
        deserialize_u64 => visit_u64: u64
    );

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Value::Int(i) => visitor.visit_f64(*i as f64),
            Value::Uint(u) => visitor.visit_f64(*u as f64),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::String(s) => match s.trim().parse::<f64>() {
                Ok(f) => visitor.visit_f64(f),
                Err(_) => Err(self.invalid_type(&visitor)),
            },
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Int(i) => visitor.visit_string(i.to_string()),
            Value::Uint(u) => visitor.visit_string(u.to_string()),
            Value::Float(f) => visitor.visit_string(f.to_string()),
            Value::Bool(b) => visitor.visit_string(b.to_string()),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Value::Bytes(b) => visitor.visit_borrowed_bytes(b),
            Value::String(s) => visitor.visit_borrowed_bytes(s.as_bytes()),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Value::Null => visitor.visit_unit(),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Value::List(l) => visitor.visit_seq(Seq(l.iter())),
            Value::Null => visitor.visit_seq(Seq([].iter())),
            // A single value where a list is expected is a one-element list, as upstream.
            other => visitor.visit_seq(Seq(std::slice::from_ref(other).iter())),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Value::Map(m) => visitor.visit_map(Entries {
                iter: m.entries().iter(),
                value: None,
            }),
            Value::Null => visitor.visit_map(Entries {
                iter: [].iter(),
                value: None,
            }),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self {
            Value::String(s) => {
                let variant: de::value::StrDeserializer<'_, Error> = (&**s).into_deserializer();
                visitor.visit_enum(variant)
            }
            Value::Map(m) if m.len() == 1 => {
                let (k, v) = &m.entries()[0];
                visitor.visit_enum(Enum {
                    variant: k,
                    value: v,
                })
            }
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
}

struct Seq<'de>(std::slice::Iter<'de, Value>);

impl<'de> SeqAccess<'de> for Seq<'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.0.next().map(|v| seed.deserialize(v)).transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Entries<'de> {
    iter: std::slice::Iter<'de, (Value, Value)>,
    value: Option<&'de Value>,
}

impl<'de> MapAccess<'de> for Entries<'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.iter.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(k).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, Error> {
        let value = self
            .value
            .take()
            .ok_or_else(|| <Error as de::Error>::custom("value requested before key"))?;
        seed.deserialize(value)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct Enum<'de> {
    variant: &'de Value,
    value: &'de Value,
}

impl<'de> EnumAccess<'de> for Enum<'de> {
    type Error = Error;
    type Variant = &'de Value;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, &'de Value), Error> {
        Ok((seed.deserialize(self.variant)?, self.value))
    }
}

impl<'de> VariantAccess<'de> for &'de Value {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        Ok(())
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, Error> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Listener {
        port: u16,
        host: Option<String>,
        tls: bool,
        names: Vec<String>,
    }

    #[test]
    fn strings_decode_into_numbers_and_bools() {
        let v: Value = yaml_serde::from_str("port: '8000'\ntls: 'false'\nnames: solo\n").unwrap();
        let l: Listener = from_value(&v).unwrap();
        assert_eq!(
            l,
            Listener {
                port: 8000,
                host: None,
                tls: false,
                names: vec!["solo".into()]
            }
        );
    }

    #[test]
    fn numbers_decode_into_strings() {
        let v: Value =
            yaml_serde::from_str("port: 1\ntls: true\nnames: [1, x]\nhost: 2\n").unwrap();
        let l: Listener = from_value(&v).unwrap();
        assert_eq!(l.names, ["1", "x"]);
        assert_eq!(l.host.as_deref(), Some("2"));
    }

    #[test]
    fn out_of_range_and_missing_fields_fail() {
        let v: Value = yaml_serde::from_str("port: 70000\ntls: true\nnames: []\n").unwrap();
        let err = from_value::<Listener>(&v).unwrap_err().to_string();
        assert!(err.contains("70000"), "{err}");
        let v: Value = yaml_serde::from_str("tls: true\nnames: []\n").unwrap();
        let err = from_value::<Listener>(&v).unwrap_err().to_string();
        assert!(err.contains("missing field `port`"), "{err}");
    }
}
