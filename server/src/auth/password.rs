//! Password policy (OWASP ASVS) and password hashing (SHA-256 pre-hash, then bcrypt).
//!
//! [`validate`] turns a candidate into a [`Password`] only if it meets the policy:
//! 12 to 128 characters (Unicode scalar values, taken exactly as typed: no trimming,
//! no normalisation, no composition rules), not in the shipped list of common
//! passwords, and not containing the account's email address or its local part.
//! [`hash`] and [`verify`] store and check passwords; [`verify_against_dummy`] spends
//! the same time for an email that has no account, so timing does not reveal which
//! emails exist.
//!
//! Every function here is synchronous and bcrypt is slow on purpose (about 250 ms at
//! cost 12): callers run them on a blocking thread, never on the async executor.
//!
//! This module must never log, print, return or put into an error a password or any
//! part of one. [`Password`] keeps its text in a [`SecretString`] and its `Debug`
//! output is redacted; [`PasswordError`] messages only describe the rule.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Mutex, OnceLock};

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// The fewest characters (Unicode scalar values) a password may have.
pub const MIN_CHARS: usize = 12;

/// The most characters (Unicode scalar values) a password may have.
pub const MAX_CHARS: usize = 128;

/// The shortest local part of an email (before the `@`) that a password may not contain;
/// shorter ones (`bob`) would forbid too many ordinary passwords.
pub const MIN_LOCAL_PART_CHARS: usize = 4;

/// The bcrypt cost used unless configured otherwise.
pub const DEFAULT_COST: u32 = 12;

/// Common passwords of at least [`MIN_CHARS`] characters, lowercase, one per line.
/// See `docs/passwords-and-lockout.md` for the source and licence.
const COMMON_PASSWORDS: &str = include_str!("../../assets/common-passwords.txt");

/// A password that passed [`validate`]. Its text is a secret: it is never shown by
/// `Debug` and can only be turned into a hash with [`hash`].
pub struct Password(SecretString);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([REDACTED])")
    }
}

/// Why a candidate password was refused. The messages are meant for the person
/// choosing the password and never repeat it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("The password must be at least {min} characters long.")]
    TooShort { min: usize },
    #[error("The password must be at most {max} characters long.")]
    TooLong { max: usize },
    #[error("This password is among the most commonly used passwords; choose another one.")]
    Common,
    #[error("The password must not contain your email address or the part before the @.")]
    ContainsEmail,
}

/// Checks `candidate` against the password policy for the account with `email`.
///
/// The length is counted in Unicode scalar values on the text exactly as given.
/// The common-password and email checks ignore case.
pub fn validate(candidate: &str, email: &str) -> Result<Password, PasswordError> {
    let chars = candidate.chars().count();
    if chars < MIN_CHARS {
        return Err(PasswordError::TooShort { min: MIN_CHARS });
    }
    if chars > MAX_CHARS {
        return Err(PasswordError::TooLong { max: MAX_CHARS });
    }
    let lowered = candidate.to_lowercase();
    if contains_email(&lowered, email) {
        return Err(PasswordError::ContainsEmail);
    }
    if is_common_lowercase(&lowered) {
        return Err(PasswordError::Common);
    }
    Ok(Password(SecretString::from(candidate.to_owned())))
}

/// Whether the lowercased password contains the email or its long-enough local part.
fn contains_email(lowered_password: &str, email: &str) -> bool {
    let email = email.trim().to_lowercase();
    if email.is_empty() {
        return false;
    }
    if lowered_password.contains(&email) {
        return true;
    }
    let local = email
        .rsplit_once('@')
        .map_or(email.as_str(), |(local, _)| local);
    local.chars().count() >= MIN_LOCAL_PART_CHARS && lowered_password.contains(local)
}

/// The common-password set, built once from the embedded list.
fn common_passwords() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| {
        COMMON_PASSWORDS
            .lines()
            .filter(|line| !line.is_empty())
            .collect()
    })
}

fn is_common_lowercase(lowered: &str) -> bool {
    common_passwords().contains(lowered)
}

/// The number of entries in the embedded common-password list.
pub fn common_password_count() -> usize {
    common_passwords().len()
}

/// What bcrypt actually sees: base64(SHA-256(password)), 44 ASCII bytes.
///
/// bcrypt silently ignores everything past 72 bytes and stops at a NUL byte; the
/// pre-hash makes every byte of a password up to [`MAX_CHARS`] characters (up to 512
/// bytes of UTF-8) count, and base64 keeps NUL bytes of the digest out of bcrypt.
/// Applied to every password, so there is a single hash format.
fn prehash(password: &str) -> String {
    let digest = Sha256::digest(password.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// Hashes a validated password for storage: bcrypt (`$2b$`, random salt) at `cost`
/// over the pre-hash. Fails only for a cost outside 4..=31 or if the system random
/// source fails.
pub fn hash(password: &Password, cost: u32) -> Result<String, bcrypt::BcryptError> {
    bcrypt::hash(prehash(password.0.expose_secret()), cost)
}

/// Whether `candidate` matches `stored_hash` (made by [`hash`]). Any error, such as a
/// malformed hash, counts as no match. The candidate is not checked against the
/// policy: an existing password is verified as it is.
pub fn verify(candidate: &str, stored_hash: &str) -> bool {
    bcrypt::verify(prehash(candidate), stored_hash).unwrap_or(false)
}

/// Spends the time of a real [`verify`] at `cost`, for a login whose email has no
/// account, so that the answer takes as long as for a wrong password. The result is
/// always a failure and is not returned.
///
/// The first call for a cost also creates that cost's dummy hash (one more bcrypt
/// run); call [`prepare_dummy`] at start-up to take that out of the first login.
pub fn verify_against_dummy(candidate: &str, cost: u32) {
    if let Some(dummy) = dummy_hash(cost) {
        // The result is meaningless: nobody knows the dummy password, and the
        // outcome is a failure either way.
        let _ = verify(candidate, &dummy);
    }
}

/// Creates and caches the dummy hash for `cost` ahead of the first unknown-email login.
pub fn prepare_dummy(cost: u32) {
    let _ = dummy_hash(cost);
}

/// The dummy hash for `cost`, made once per cost; `None` only for an invalid cost.
fn dummy_hash(cost: u32) -> Option<String> {
    static DUMMIES: OnceLock<Mutex<HashMap<u32, String>>> = OnceLock::new();
    let dummies = DUMMIES.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(found) = lock(dummies).get(&cost) {
        return Some(found.clone());
    }
    // Hash outside the lock so concurrent logins are not serialised; if two threads
    // race, both hashes are equally good and the first one stored is kept.
    let mut secret = [0u8; 32];
    rand::Rng::fill(&mut rand::thread_rng(), &mut secret[..]);
    let made = bcrypt::hash(prehash(&hex::encode(secret)), cost).ok()?;
    Some(lock(dummies).entry(cost).or_insert(made).clone())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cheapest cost bcrypt accepts, to keep the tests fast.
    const TEST_COST: u32 = 4;

    const EMAIL: &str = "Alice.Example@Example.com";

    #[test]
    fn accepts_a_good_password() {
        assert!(validate("correct horse battery staple", EMAIL).is_ok());
    }

    #[test]
    fn length_is_counted_in_chars_without_trimming() {
        assert_eq!(
            validate("Mxbdefghijk", EMAIL).unwrap_err(),
            PasswordError::TooShort { min: 12 }
        );
        assert!(validate("Mxbdefghijkq", EMAIL).is_ok());
        // Eleven characters plus a space: spaces count, nothing is trimmed.
        assert!(validate(" Xyzzyplughw", EMAIL).is_ok());
        // 12 characters but 24 bytes: counted as 12.
        assert!(validate("ééééééééééé1", EMAIL).is_ok());
        // 11 characters of 4 bytes each (44 bytes) is still too short.
        assert_eq!(
            validate(&"🦀".repeat(11), EMAIL).unwrap_err(),
            PasswordError::TooShort { min: 12 }
        );
        // A decomposed "é" is two scalar values: nothing is composed.
        assert!(validate(&"e\u{301}".repeat(6), EMAIL).is_ok());
        assert!(validate(&"🦀".repeat(128), EMAIL).is_ok());
        assert_eq!(
            validate(&"🦀".repeat(129), EMAIL).unwrap_err(),
            PasswordError::TooLong { max: 128 }
        );
    }

    #[test]
    fn refuses_common_passwords_whatever_the_case() {
        assert_eq!(
            validate("qwerty123456", EMAIL).unwrap_err(),
            PasswordError::Common
        );
        assert_eq!(
            validate("QwErTy123456", EMAIL).unwrap_err(),
            PasswordError::Common
        );
        assert_eq!(
            validate("1q2w3e4r5t6y", EMAIL).unwrap_err(),
            PasswordError::Common
        );
        // Also upper case, and further down the source list (rank 97,035).
        assert_eq!(
            validate("ABCDEFGHIJKL", EMAIL).unwrap_err(),
            PasswordError::Common
        );
    }

    #[test]
    fn common_list_is_loaded_and_lowercase() {
        assert!(common_password_count() > 40_000);
        assert!(common_passwords()
            .iter()
            .all(|p| p.chars().count() >= MIN_CHARS && p.to_lowercase() == *p));
    }

    #[test]
    fn refuses_passwords_containing_the_email() {
        assert_eq!(
            validate("xx alice.example@example.com xx", EMAIL).unwrap_err(),
            PasswordError::ContainsEmail
        );
        assert_eq!(
            validate("my name is ALICE.EXAMPLE!", EMAIL).unwrap_err(),
            PasswordError::ContainsEmail
        );
        // A short local part is not refused on its own...
        assert!(validate("bobsled racing team", "bob@example.com").is_ok());
        // ...but the whole email still is.
        assert_eq!(
            validate("bob@example.com!!", "bob@example.com").unwrap_err(),
            PasswordError::ContainsEmail
        );
        // A four-character local part is.
        assert_eq!(
            validate("carolsled racing", "carol@example.com").unwrap_err(),
            PasswordError::ContainsEmail
        );
        assert_eq!(
            validate("my dave password", "dave@example.com").unwrap_err(),
            PasswordError::ContainsEmail
        );
        // An empty email does not refuse everything.
        assert!(validate("correct horse battery staple", "").is_ok());
    }

    #[test]
    fn nothing_shows_the_password() {
        let secret = "correct horse battery staple";
        let password = validate(secret, EMAIL).unwrap();
        let shown = format!("{password:?}");
        assert!(!shown.contains("horse"), "{shown}");
        for error in [
            validate("short", EMAIL).unwrap_err(),
            validate(&"x".repeat(200), EMAIL).unwrap_err(),
            validate("qwerty123456", EMAIL).unwrap_err(),
            validate("alice.example-1234", EMAIL).unwrap_err(),
        ] {
            let text = format!("{error} {error:?}");
            for fragment in ["short", "xxxx", "qwerty", "1234"] {
                assert!(!text.contains(fragment), "{text}");
            }
        }
    }

    #[test]
    fn hash_and_verify_round_trip() {
        let password = validate("correct horse battery staple", EMAIL).unwrap();
        let stored = hash(&password, TEST_COST).unwrap();
        assert!(stored.starts_with("$2b$04$"), "{stored}");
        assert!(!stored.contains("horse"));
        assert!(verify("correct horse battery staple", &stored));
        assert!(!verify("correct horse battery stapl", &stored));
        assert!(!verify("Correct horse battery staple", &stored));
        // A second hash of the same password has its own salt.
        assert_ne!(stored, hash(&password, TEST_COST).unwrap());
    }

    #[test]
    fn bytes_past_72_still_count() {
        let head = "a".repeat(72);
        let one = validate(&format!("{head}-one"), EMAIL).unwrap();
        let stored = hash(&one, TEST_COST).unwrap();
        assert!(verify(&format!("{head}-one"), &stored));
        assert!(!verify(&format!("{head}-two"), &stored));
        assert!(!verify(&head, &stored));
    }

    #[test]
    fn verify_is_false_on_any_error() {
        assert!(!verify("anything at all", ""));
        assert!(!verify("anything at all", "not a bcrypt hash"));
        assert!(!verify("anything at all", "$2b$99$abcdefghijklmnopqrstuv"));
    }

    #[test]
    fn hash_refuses_an_invalid_cost() {
        let password = validate("correct horse battery staple", EMAIL).unwrap();
        assert!(hash(&password, 3).is_err());
        assert!(hash(&password, 32).is_err());
    }

    #[test]
    fn dummy_hash_is_made_once_per_cost() {
        let first = dummy_hash(TEST_COST).unwrap();
        assert_eq!(dummy_hash(TEST_COST).unwrap(), first);
        assert!(first.starts_with("$2b$04$"));
        assert_ne!(dummy_hash(5).unwrap(), first);
        assert!(dummy_hash(99).is_none());
        // Runs a full verify and never panics, also for an invalid cost.
        verify_against_dummy("whatever", TEST_COST);
        verify_against_dummy("whatever", 99);
        prepare_dummy(TEST_COST);
    }
}
