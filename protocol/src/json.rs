//! Strict JSON reading for signed statements: bounded nesting, no duplicate
//! members, no unknown members, nothing after the value.

use serde::de::DeserializeOwned;

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

/// Parses `bytes` as `T` (whose serde derive must use `deny_unknown_fields`), after
/// [`check_depth`]. A member named twice is [`ProtocolErrorKind::DuplicateKey`]; any
/// other problem is `otherwise`.
pub fn parse_strict<T: DeserializeOwned>(
    bytes: &[u8],
    otherwise: ProtocolErrorKind,
) -> Result<T, ProtocolError> {
    check_depth(bytes)?;
    serde_json::from_slice(bytes).map_err(|e| {
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
