//! Strict JSON reading: one accepted spelling for every object, shared by the
//! protocol's signed statements and every JSON request body the server reads.
//!
//! [`from_slice_strict`] reads JSON like `serde_json::from_slice` but
//! - refuses a JSON array where an object (a Rust struct) is expected, at every depth:
//!   serde's derived struct visitors also accept the sequence form
//!   `[value1, value2, ...]`, a second spelling of the same object that nothing in our
//!   protocol or API defines;
//! - refuses any string (member names included) containing U+0000, which PostgreSQL
//!   cannot store in a text column and no identifier or text of ours needs.
//!
//! It does so by wrapping the deserializer (and every visitor, seed, map, sequence and
//! enum access it hands out), so the rules hold for every type without per-type code.
//! They cannot reach values serde buffers before deserializing them (`#[serde(flatten)]`,
//! untagged and internally tagged enums): types read through this module must not use
//! those. [`parse_strict`] adds the protocol's nesting limit and error kinds.
//! Nothing here may allocate per value or re-scan the input beyond what serde does:
//! envelopes are read on the hot path.

use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess,
    Unexpected, VariantAccess, Visitor,
};

use crate::protocol_error::{ProtocolError, ProtocolErrorKind};

/// How deeply objects and arrays may nest (the outermost value is depth 1).
pub const MAX_DEPTH: usize = 8;

/// Refuses JSON text nested deeper than [`MAX_DEPTH`]. A single pass over the bytes
/// that skips string contents, run before any parser so a hostile document cannot
/// make the parser recurse.
pub fn check_depth(bytes: &[u8]) -> Result<(), ProtocolError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(ProtocolError::new(
                        ProtocolErrorKind::NestingTooDeep,
                        format!("JSON nests deeper than {MAX_DEPTH} levels"),
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// The message of the error for a string containing U+0000.
pub const NUL_MESSAGE: &str = "a string contains U+0000 (NUL), which is not accepted";

/// Parses `bytes` as `T` by the strict rules of this module (no array for an object,
/// no U+0000 in a string) and serde_json's (nothing but whitespace after the value).
/// Unknown and repeated members are refused by `T`'s derive: use
/// `deny_unknown_fields`. Errors are serde_json's, so callers can tell a syntax error
/// ([`serde_json::Error::is_syntax`], [`serde_json::Error::is_eof`]) from a value of
/// the wrong shape ([`serde_json::Error::is_data`]).
pub fn from_slice_strict<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = T::deserialize(Strict(&mut deserializer))?;
    deserializer.end()?;
    Ok(value)
}

/// Parses `bytes` as `T` (whose serde derive must use `deny_unknown_fields`), after
/// [`check_depth`], by the rules of [`from_slice_strict`]. A member named twice is
/// [`ProtocolErrorKind::DuplicateKey`]; any other problem is `otherwise`.
pub fn parse_strict<T: DeserializeOwned>(
    bytes: &[u8],
    otherwise: ProtocolErrorKind,
) -> Result<T, ProtocolError> {
    check_depth(bytes)?;
    from_slice_strict(bytes).map_err(|e| {
        // serde's derive reports a repeated member as "duplicate field `name`".
        let message = e.to_string();
        let kind = if message.starts_with("duplicate field") {
            ProtocolErrorKind::DuplicateKey
        } else {
            otherwise
        };
        ProtocolError::new(kind, message)
    })
}

/// A deserializer that hands out only strict visitors (see the module documentation).
struct Strict<D>(D);

/// A visitor wrapper: checks strings for U+0000 and wraps whatever it hands on.
/// `object` is set when the value must be a JSON object (a struct or a struct variant).
struct StrictVisitor<V> {
    inner: V,
    object: bool,
}

impl<V> StrictVisitor<V> {
    fn any(inner: V) -> Self {
        StrictVisitor {
            inner,
            object: false,
        }
    }

    fn object(inner: V) -> Self {
        StrictVisitor {
            inner,
            object: true,
        }
    }
}

/// Wraps a seed so the deserializer it receives is strict too.
struct StrictSeed<S>(S);

/// Wraps map, sequence and enum accesses so every value they yield is read strictly.
struct StrictAccess<A>(A);

fn check_text<E: de::Error>(text: &str) -> Result<(), E> {
    if text.as_bytes().contains(&0) {
        Err(E::custom(NUL_MESSAGE))
    } else {
        Ok(())
    }
}

macro_rules! forward_deserialize {
    ($($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
                self.0.$method(StrictVisitor::any(visitor))
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Strict<D> {
    type Error = D::Error;

    forward_deserialize! {
        deserialize_any deserialize_bool
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
        deserialize_f32 deserialize_f64 deserialize_char deserialize_str deserialize_string
        deserialize_bytes deserialize_byte_buf deserialize_option deserialize_unit
        deserialize_seq deserialize_map deserialize_identifier deserialize_ignored_any
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0
            .deserialize_unit_struct(name, StrictVisitor::any(visitor))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0
            .deserialize_newtype_struct(name, StrictVisitor::any(visitor))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_tuple(len, StrictVisitor::any(visitor))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0
            .deserialize_tuple_struct(name, len, StrictVisitor::any(visitor))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0
            .deserialize_struct(name, fields, StrictVisitor::object(visitor))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0
            .deserialize_enum(name, variants, StrictVisitor::any(visitor))
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident: $ty:ty)*) => {
        $(
            fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
                self.inner.$method(v)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for StrictVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit! {
        visit_bool: bool
        visit_i8: i8 visit_i16: i16 visit_i32: i32 visit_i64: i64 visit_i128: i128
        visit_u8: u8 visit_u16: u16 visit_u32: u32 visit_u64: u64 visit_u128: u128
        visit_f32: f32 visit_f64: f64
        visit_bytes: &[u8] visit_borrowed_bytes: &'de [u8] visit_byte_buf: Vec<u8>
    }

    fn visit_char<E: de::Error>(self, v: char) -> Result<Self::Value, E> {
        if v == '\0' {
            return Err(E::custom(NUL_MESSAGE));
        }
        self.inner.visit_char(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        check_text(v)?;
        self.inner.visit_str(v)
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        check_text(v)?;
        self.inner.visit_borrowed_str(v)
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        check_text(&v)?;
        self.inner.visit_string(v)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_some(Strict(deserializer))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        self.inner.visit_newtype_struct(Strict(deserializer))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        if self.object {
            // Serde's second spelling of a struct; ours has only the object.
            return Err(de::Error::invalid_type(Unexpected::Seq, &self));
        }
        self.inner.visit_seq(StrictAccess(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_map(StrictAccess(map))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_enum(StrictAccess(data))
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for StrictSeed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(Strict(deserializer))
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for StrictAccess<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.0.next_element_seed(StrictSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for StrictAccess<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        self.0.next_key_seed(StrictSeed(seed))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<T::Value, Self::Error> {
        self.0.next_value_seed(StrictSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for StrictAccess<A> {
    type Error = A::Error;
    type Variant = StrictAccess<A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), Self::Error> {
        self.0
            .variant_seed(StrictSeed(seed))
            .map(|(value, variant)| (value, StrictAccess(variant)))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for StrictAccess<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), Self::Error> {
        self.0.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, Self::Error> {
        self.0.newtype_variant_seed(StrictSeed(seed))
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.tuple_variant(len, StrictVisitor::any(visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0
            .struct_variant(fields, StrictVisitor::object(visitor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "fields exist to be parsed")]
    struct T {
        a: u32,
        b: Option<String>,
    }

    fn kind(text: &str) -> Option<ProtocolErrorKind> {
        parse_strict::<T>(text.as_bytes(), ProtocolErrorKind::InvalidPayload)
            .err()
            .map(|e| e.kind)
    }

    #[test]
    fn refuses_duplicates_even_when_spelled_with_escapes() {
        assert_eq!(
            kind(r#"{"a":1,"a":2}"#),
            Some(ProtocolErrorKind::DuplicateKey)
        );
        assert_eq!(
            kind(r#"{"a":1,"\u0061":2}"#),
            Some(ProtocolErrorKind::DuplicateKey)
        );
        assert_eq!(kind(r#"{"a":1,"b":null}"#), None);
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        inner: Inner,
        list: Vec<Inner>,
        maybe: Option<Inner>,
        map: std::collections::BTreeMap<String, Inner>,
        choice: Option<Choice>,
        value: Option<serde_json::Value>,
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        x: u8,
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Choice {
        Plain,
        Shaped { y: u8 },
    }

    const OUTER: &str = r#"{"inner":{"x":1},"list":[{"x":2}],"maybe":{"x":3},"map":{"k":{"x":4}},"choice":{"shaped":{"y":5}},"value":{"a":["b",1]}}"#;

    fn outer(text: &str) -> Result<Outer, serde_json::Error> {
        from_slice_strict(text.as_bytes())
    }

    #[test]
    fn reads_objects_everywhere_an_object_is_expected() {
        let parsed = outer(OUTER).unwrap();
        assert_eq!(parsed.inner, Inner { x: 1 });
        assert_eq!(parsed.map["k"], Inner { x: 4 });
        assert_eq!(parsed.choice, Some(Choice::Shaped { y: 5 }));
        // Arrays stay arrays where the type is a sequence or free JSON.
        assert_eq!(parsed.value.unwrap()["a"][1], 1);
        let plain = OUTER.replace(r#"{"shaped":{"y":5}}"#, r#""plain""#);
        assert_eq!(outer(&plain).unwrap().choice, Some(Choice::Plain));
    }

    #[test]
    fn refuses_an_array_for_an_object_at_every_depth() {
        // serde_json alone accepts each of these (the sequence form of a struct).
        let cases = [
            r#"[{"x":1},[],null,{},null,null]"#.to_owned(),
            OUTER.replace(r#""inner":{"x":1}"#, r#""inner":[1]"#),
            OUTER.replace(r#""list":[{"x":2}]"#, r#""list":[[2]]"#),
            OUTER.replace(r#""maybe":{"x":3}"#, r#""maybe":[3]"#),
            OUTER.replace(r#""map":{"k":{"x":4}}"#, r#""map":{"k":[4]}"#),
            OUTER.replace(r#"{"shaped":{"y":5}}"#, r#"{"shaped":[5]}"#),
        ];
        for text in &cases {
            assert!(
                serde_json::from_str::<Outer>(text).is_ok(),
                "serde_json accepts {text}"
            );
            let error = outer(text).unwrap_err();
            assert!(error.is_data(), "{text}: {error}");
            assert!(
                error
                    .to_string()
                    .starts_with("invalid type: sequence, expected"),
                "{text}: {error}"
            );
        }
        assert_eq!(
            kind("[1,null]"),
            Some(ProtocolErrorKind::InvalidPayload),
            "through parse_strict too"
        );
    }

    #[test]
    fn refuses_nul_in_any_string() {
        let cases = [
            r#"{"a":1,"b":"x\u0000y"}"#,
            r#"{"a":1,"b":"\u0000"}"#,
            r#"{"a\u0000":1}"#,
        ];
        for text in cases {
            let error =
                parse_strict::<T>(text.as_bytes(), ProtocolErrorKind::InvalidPayload).unwrap_err();
            assert_eq!(error.kind, ProtocolErrorKind::InvalidPayload, "{text}");
            assert!(error.detail.contains("U+0000"), "{text}: {error}");
        }
        let nested = OUTER.replace(r#""b",1"#, r#""b\u0000",1"#);
        let error = outer(&nested).unwrap_err();
        assert!(
            error.is_data() && error.to_string().contains("U+0000"),
            "{error}"
        );
        let key = OUTER.replace(r#""k":"#, r#""k\u0000":"#);
        assert!(outer(&key).unwrap_err().to_string().contains("U+0000"));
        // Other escapes are still fine.
        assert_eq!(kind(r#"{"a":1,"b":"\u0001\n\u00e9"}"#), None);
    }

    #[test]
    fn refuses_unknown_members_trailing_data_and_deep_nesting() {
        assert_eq!(
            kind(r#"{"a":1,"c":2}"#),
            Some(ProtocolErrorKind::InvalidPayload)
        );
        assert_eq!(
            kind(r#"{"a":1} x"#),
            Some(ProtocolErrorKind::InvalidPayload)
        );
        let deep = format!("{}{}", "[".repeat(9), "]".repeat(9));
        assert_eq!(
            check_depth(deep.as_bytes()).unwrap_err().kind,
            ProtocolErrorKind::NestingTooDeep
        );
        let fine = format!("{}{}", "[".repeat(8), "]".repeat(8));
        assert!(check_depth(fine.as_bytes()).is_ok());
        // Brackets inside strings do not count, escaped quotes do not end strings.
        assert!(check_depth(br#"{"a":"[[[[[[[[[[\"[[[[[[[["}"#).is_ok());
    }
}
