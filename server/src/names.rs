//! Names people read and compare: agent, API key and organization names, and email
//! addresses. Shown in the console, in lists and in the audit log, they must look like
//! what they are: one name must never pass for another, and nothing in a name may be
//! invisible.
//!
//! The rule follows PRECIS (RFC 8264, the FreeformClass with the NFKC normalization of
//! its Nickname profile, RFC 8266) and Unicode's security mechanisms (UTS #39), but
//! refuses instead of silently mapping, so every name has one accepted spelling:
//! - no control, format (bidirectional controls, zero-width characters, the BOM),
//!   other default-ignorable (Hangul fillers, variation selectors), private-use or
//!   unassigned code point, and no space but U+0020 (names; emails take none);
//! - the text is its own NFKC form: no full-width letters, ligatures, superscripts or
//!   decomposed accents;
//! - no two spaces in a row (a browser shows them as one);
//! - one script, UTS #39's "highly restrictive" level: every letter shares a script
//!   (characters of every script, such as digits and punctuation, go with any), or
//!   the letters are Latin with Han, Hiragana and Katakana (Japanese), Han and Bopomofo
//!   (Chinese) or Han and Hangul (Korean). So `pаypal` with a Cyrillic `а` is refused.
//!
//! Names written entirely in another script's look-alike letters, and names that differ
//! only in case, are not detected (that needs UTS #39's confusables data). Stored names
//! are never changed: the rule applies when a name is created. It must never be applied
//! to lookups (filters, login), so that anything stored stays reachable.

use icu_normalizer::ComposingNormalizerBorrowed;
use icu_properties::props::{DefaultIgnorableCodePoint, GeneralCategory, Script};
use icu_properties::script::ScriptWithExtensions;
use icu_properties::{CodePointMapData, CodePointSetData, PropertyNamesLong};

use crate::error::ApiError;

/// What makes a text unacceptable as a name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Problem {
    Control(char),
    Invisible(char),
    Space(char),
    Unassigned(char),
    PrivateUse(char),
    NotNfkc(String),
    RepeatedSpace,
    MixedScripts(Script, Script),
}

/// Refuses `name` unless it follows the rule of this module. `field` names the input
/// in the message (for example `` `name` ``). Spaces are allowed between words.
pub fn check_name(field: &str, name: &str) -> Result<(), ApiError> {
    match problem(name, true) {
        None => Ok(()),
        Some(p) => Err(ApiError::invalid(message(field, "name", &p))),
    }
}

/// Refuses an email address (trimmed and lowercased by the caller) unless its local
/// part and each label of its domain follow the rule of this module, without spaces.
pub fn check_email(field: &str, email: &str) -> Result<(), ApiError> {
    let found = match email.rsplit_once('@') {
        Some((local, domain)) => std::iter::once(local)
            .chain(domain.split('.'))
            .find_map(|part| problem(part, false)),
        None => problem(email, false),
    };
    match found {
        None => Ok(()),
        Some(p) => Err(ApiError::invalid(message(field, "address", &p))),
    }
}

fn problem(text: &str, spaces: bool) -> Option<Problem> {
    let categories = CodePointMapData::<GeneralCategory>::new();
    let ignorable = CodePointSetData::new::<DefaultIgnorableCodePoint>();
    for c in text.chars() {
        let found = match categories.get(c) {
            GeneralCategory::Control => Some(Problem::Control(c)),
            GeneralCategory::Format => Some(Problem::Invisible(c)),
            GeneralCategory::Unassigned => Some(Problem::Unassigned(c)),
            GeneralCategory::PrivateUse | GeneralCategory::Surrogate => {
                Some(Problem::PrivateUse(c))
            }
            GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator => {
                Some(Problem::Space(c))
            }
            GeneralCategory::SpaceSeparator if c != ' ' || !spaces => Some(Problem::Space(c)),
            _ if ignorable.contains(c) => Some(Problem::Invisible(c)),
            _ => None,
        };
        if found.is_some() {
            return found;
        }
    }
    let nfkc = ComposingNormalizerBorrowed::new_nfkc();
    if !nfkc.is_normalized(text) {
        return Some(Problem::NotNfkc(nfkc.normalize(text).into_owned()));
    }
    if text.contains("  ") {
        return Some(Problem::RepeatedSpace);
    }
    mixed_scripts(text)
}

/// UTS #39 §5.2 "highly restrictive": the letters' scripts (Script_Extensions, Common
/// and Inherited going with any) all meet in one script, or all fit one of the CJK
/// combinations with Latin. Returns two scripts that do not go together otherwise.
fn mixed_scripts(text: &str) -> Option<Problem> {
    const COMBINATIONS: [&[Script]; 3] = [
        &[
            Script::Latin,
            Script::Han,
            Script::Hiragana,
            Script::Katakana,
        ],
        &[Script::Latin, Script::Han, Script::Bopomofo],
        &[Script::Latin, Script::Han, Script::Hangul],
    ];
    let scripts = ScriptWithExtensions::new();
    let letters: Vec<_> = text
        .chars()
        .map(|c| scripts.get_script_extensions_val(c))
        .filter(|set| !set.contains(&Script::Common) && !set.contains(&Script::Inherited))
        .collect();
    let first = letters.first()?;
    let shared = first
        .iter()
        .any(|script| letters.iter().all(|set| set.contains(&script)));
    let combined = COMBINATIONS.iter().any(|allowed| {
        letters
            .iter()
            .all(|set| set.iter().any(|script| allowed.contains(&script)))
    });
    if shared || combined {
        return None;
    }
    let a = first.iter().next().unwrap_or(Script::Unknown);
    let b = letters
        .iter()
        .find(|set| !set.contains(&a))
        .and_then(|set| set.iter().next())
        .unwrap_or(Script::Unknown);
    Some(Problem::MixedScripts(a, b))
}

fn code_point(c: char) -> String {
    format!("U+{:04X}", c as u32)
}

fn script_name(script: Script) -> &'static str {
    PropertyNamesLong::<Script>::new()
        .get(script)
        .unwrap_or("another")
}

fn message(field: &str, what: &str, problem: &Problem) -> String {
    match problem {
        Problem::Control(c) => format!(
            "{field} contains {}, a control character, which is not allowed.",
            code_point(*c)
        ),
        Problem::Invisible(c) => format!(
            "{field} contains {}, an invisible or formatting character (such as a \
             bidirectional control or a zero-width space), which is not allowed: it could \
             make the {what} look like another.",
            code_point(*c)
        ),
        Problem::Space(c) if *c == ' ' => format!("{field} must not contain spaces."),
        Problem::Space(c) => format!(
            "{field} contains {}, a space or line break other than U+0020, which is not \
             allowed.",
            code_point(*c)
        ),
        Problem::Unassigned(c) => format!(
            "{field} contains {}, which is not an assigned Unicode character.",
            code_point(*c)
        ),
        Problem::PrivateUse(c) => format!(
            "{field} contains {}, a private-use character, which is not allowed.",
            code_point(*c)
        ),
        Problem::NotNfkc(normal) => format!(
            "{field} must be written in Unicode normalization form NFKC, that is \"{normal}\": \
             it contains compatibility characters (such as full-width letters, ligatures or \
             superscripts) or an accent not composed with its letter."
        ),
        Problem::RepeatedSpace => format!("{field} must not contain two spaces in a row."),
        Problem::MixedScripts(a, b) => format!(
            "{field} mixes the {} and {} scripts, which could make the {what} look like \
             another: write it in one script (digits and punctuation go with any; Latin \
             goes with Han, Hiragana, Katakana, Hangul or Bopomofo).",
            script_name(*a),
            script_name(*b)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Option<Problem> {
        problem(text, true)
    }

    #[test]
    fn ordinary_names_in_any_one_script_pass() {
        for ok in [
            "mail-assistant",
            "Mail assistant 2",
            "Zoë's agent (prod)",
            "почтовый агент",
            "Ελληνικός βοηθός",
            "وكيل البريد",
            "סוכן דואר",
            "メール担当エージェント",
            "邮件助手",
            "메일 도우미",
            "Outlook 邮件助手",
            "Deploy-Bot_v1.2 ✉",
            "a",
        ] {
            assert_eq!(name(ok), None, "{ok}");
        }
    }

    #[test]
    fn invisible_and_control_characters_are_refused() {
        assert_eq!(name("\u{202e}admin"), Some(Problem::Invisible('\u{202e}')));
        assert_eq!(name("ad\u{200b}min"), Some(Problem::Invisible('\u{200b}')));
        assert_eq!(
            name("\u{2066}admin\u{2069}"),
            Some(Problem::Invisible('\u{2066}'))
        );
        assert_eq!(name("admin\u{feff}"), Some(Problem::Invisible('\u{feff}')));
        assert_eq!(name("ad\u{ad}min"), Some(Problem::Invisible('\u{ad}')));
        // Default-ignorable without being a format character: the Hangul filler.
        assert_eq!(name("\u{3164}"), Some(Problem::Invisible('\u{3164}')));
        assert_eq!(name("x\u{fe0f}"), Some(Problem::Invisible('\u{fe0f}')));
        assert_eq!(name("a\u{7}b"), Some(Problem::Control('\u{7}')));
        assert_eq!(name("a\u{85}b"), Some(Problem::Control('\u{85}')));
        assert_eq!(name("a\u{2028}b"), Some(Problem::Space('\u{2028}')));
        assert_eq!(name("a\u{a0}b"), Some(Problem::Space('\u{a0}')));
        assert_eq!(name("a\u{e000}"), Some(Problem::PrivateUse('\u{e000}')));
        assert_eq!(name("a\u{10ffff}"), Some(Problem::Unassigned('\u{10ffff}')));
        assert_eq!(name("a  b"), Some(Problem::RepeatedSpace));
    }

    #[test]
    fn compatibility_forms_are_refused_naming_their_normal_form() {
        assert_eq!(
            name("ａｄｍｉｎ"),
            Some(Problem::NotNfkc("admin".to_owned()))
        );
        assert_eq!(name("ﬁle"), Some(Problem::NotNfkc("file".to_owned())));
        assert_eq!(name("x²"), Some(Problem::NotNfkc("x2".to_owned())));
        // An accent written as a combining mark after its letter.
        assert_eq!(name("Zoe\u{308}"), Some(Problem::NotNfkc("Zoë".to_owned())));
    }

    #[test]
    fn mixed_scripts_are_refused() {
        // A Cyrillic а among Latin letters; a Greek ο.
        assert_eq!(
            name("p\u{430}ypal"),
            Some(Problem::MixedScripts(Script::Latin, Script::Cyrillic))
        );
        assert!(matches!(
            name("g\u{3bf}ogle"),
            Some(Problem::MixedScripts(..))
        ));
        assert!(matches!(
            name("admin агент"),
            Some(Problem::MixedScripts(..))
        ));
        let message = message("`name`", "name", &name("p\u{430}ypal").unwrap());
        assert!(message.contains("Latin and Cyrillic"), "{message}");
    }

    #[test]
    fn emails_are_checked_part_by_part_without_spaces() {
        assert!(check_email("`email`", "admin@acme.example").is_ok());
        assert!(check_email("`email`", "иван@пример.рф").is_ok());
        assert!(check_email("`email`", "иван@example.com").is_ok());
        assert!(check_email("`email`", "zoë@bücher.example").is_ok());
        for bad in [
            "\u{202e}admin@acme.example",
            "ad\u{200b}min@acme.example",
            "\u{2066}admin@acme.example",
            "ａｄｍｉｎ@acme.example",
            "p\u{430}ypal@acme.example",
            "admin@p\u{430}ypal.example",
            "ad min@acme.example",
        ] {
            let error = check_email("`email`", bad).unwrap_err();
            assert_eq!(
                error.code(),
                crate::error::ErrorCode::InvalidRequest,
                "{bad}"
            );
        }
    }
}
