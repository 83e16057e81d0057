//! Capability names: `namespace:action`.

/// Longest namespace or action part.
pub const MAX_PART_LEN: usize = 64;

/// Whether `name` is a valid capability name: `namespace:action`, each part 1 to 64
/// characters of `a-z 0-9 _ . -` starting with a letter or digit, exactly one `:`.
pub fn is_valid_name(name: &str) -> bool {
    let Some((namespace, action)) = name.split_once(':') else {
        return false;
    };
    valid_part(namespace) && valid_part(action)
}

fn valid_part(part: &str) -> bool {
    let bytes = part.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_PART_LEN
        && bytes[0].is_ascii_lowercase() | bytes[0].is_ascii_digit()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_namespace_action_only() {
        for ok in [
            "email:send",
            "files:read",
            "db.prod:query_v2",
            "a:b",
            "k8s:pod-exec",
        ] {
            assert!(is_valid_name(ok), "{ok}");
        }
        let long = format!("{}:x", "a".repeat(65));
        for bad in [
            "",
            "email",
            ":send",
            "email:",
            "Email:send",
            "email:send:all",
            "email send:x",
            "-x:y",
            "x:.y",
            "é:x",
            &long,
        ] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }
}
