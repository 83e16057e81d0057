//! The error codes: documented, and each one produced somewhere in the server.

use agentid_protocol::ErrorCode;

const ERRORS_MD: &str = include_str!("../../../docs/errors.md");

#[test]
fn every_code_is_documented() {
    for code in ErrorCode::ALL {
        assert!(
            ERRORS_MD.contains(&format!("| `{}` |", code.as_str())),
            "{code} is missing from docs/errors.md"
        );
    }
    // And nothing is documented that does not exist.
    for line in ERRORS_MD.lines().filter(|l| l.starts_with("| `")) {
        let documented = line.trim_start_matches("| `").split('`').next().unwrap();
        assert!(
            ErrorCode::ALL.iter().any(|c| c.as_str() == documented),
            "docs/errors.md lists `{documented}`, which is not a code"
        );
    }
}

#[test]
fn every_code_is_used_by_the_server() {
    let mut source = String::new();
    collect_sources(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        &mut source,
    );
    for code in ErrorCode::ALL {
        let variant = format!("ErrorCode::{code:?}");
        assert!(
            source.contains(&variant),
            "{variant} is never produced by the server: remove it or use it"
        );
    }
}

fn collect_sources(dir: &std::path::Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            // It names the codes each kind of operation can answer; naming is not producing.
            && !path.ends_with("openapi.rs")
        {
            out.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
}
