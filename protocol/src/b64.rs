//! Base64url without padding (RFC 4648 §5), the only base64 the protocol uses.
//!
//! Decoding is strict: padding, characters outside the URL-safe alphabet and
//! non-zero trailing bits are all refused, so every byte string has exactly one
//! accepted encoding.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Encodes bytes as base64url without padding.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding; `None` for anything else.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_other_spellings() {
        assert_eq!(encode([0xfb, 0xff]), "-_8");
        assert_eq!(decode("-_8"), Some(vec![0xfb, 0xff]));
        assert_eq!(decode("-_8="), None, "padding");
        assert_eq!(decode("+/8"), None, "standard alphabet");
        assert_eq!(decode("-_9"), None, "non-zero trailing bits");
        assert_eq!(decode("a b"), None);
    }
}
