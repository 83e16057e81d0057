//! The examples in `examples/`, run against a real server.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::guarded_tool_example::{self as guarded, Outcome};
use crate::helpers::spawn_app;
use crate::relying_party_example as rp_example;

const README: &str = include_str!("../../README.md");
const QUICKSTART: &str = include_str!("../../examples/quickstart.rs");

/// An example program as `cargo test` and `cargo nextest run` build it for this
/// package (next to the test binary's directory).
fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing: `cargo test -p agentid` and `cargo nextest run -p agentid` build the examples",
        path.display()
    );
    path
}

/// Runs an example as a user would, with only the given environment.
async fn run_example(name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = std::process::Command::new(example_binary(name));
    command.args(args).env_clear();
    for (k, v) in env {
        command.env(k, v);
    }
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn stdout_lines(output: &Output) -> Vec<String> {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The fenced block of `README.md` that starts with `opening` (```rust,no_run, ```toml).
fn readme_block(opening: &str) -> &'static str {
    let start = README.find(opening).unwrap() + opening.len() + 1;
    let length = README[start..].find("```").unwrap();
    &README[start..start + length]
}

#[test]
fn the_readme_quick_start_is_the_quickstart_example() {
    let code = readme_block("```rust,no_run");
    assert!(
        QUICKSTART.ends_with(code),
        "sdk-rust/README.md's quick start and examples/quickstart.rs differ"
    );
    assert!(
        code.contains("println!(\"allowed"),
        "the quick start is silent on success"
    );
}

/// Every crate the quick start names is in the README's `[dependencies]`, at the
/// major version the workspace builds with; `agentid` comes by path (the crates.io
/// crate of that name is another project); tokio has what `#[tokio::main]` needs.
#[test]
fn the_readme_dependencies_cover_the_quick_start() {
    let toml = readme_block("```toml");
    assert!(toml.starts_with("[dependencies]\n"), "{toml}");
    let deps: Vec<(&str, &str)> = toml
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_once(" = ").unwrap())
        .collect();
    let spec = |name: &str| {
        deps.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s.split('#').next().unwrap().trim())
            .unwrap_or_else(|| panic!("{name} is not in the README's [dependencies]"))
    };
    assert!(spec("agentid").contains("path = \"") && spec("agentid").contains("sdk-rust\""));
    assert!(!spec("agentid").contains("version"), "{}", spec("agentid"));

    let code = readme_block("```rust,no_run");
    let mut used: Vec<&str> = code
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter_map(|word| word.split_once("::").map(|(krate, _)| krate))
        .filter(|krate| !krate.is_empty() && *krate != "std")
        .collect();
    used.sort_unstable();
    used.dedup();
    assert_eq!(used, ["agentid", "serde_json", "tokio"]);

    let workspace = include_str!("../../../Cargo.toml");
    for krate in ["serde_json", "tokio"] {
        let ours = workspace
            .lines()
            .find(|l| l.starts_with(&format!("{krate} = ")))
            .unwrap();
        let major = |s: &str| {
            let at = s.find('"').unwrap() + 1;
            s[at..].split(['.', '"']).next().unwrap().to_owned()
        };
        assert_eq!(major(spec(krate)), major(ours), "{krate}");
    }
    assert!(code.contains("#[tokio::main(flavor = \"current_thread\")]"));
    for feature in ["\"macros\"", "\"rt\""] {
        assert!(spec("tokio").contains(feature), "tokio needs {feature}");
    }
}

/// No key placeholder in the README or an example looks unlike a real API key.
#[test]
fn api_key_placeholders_look_like_api_keys() {
    let mut texts = vec![("README.md", README.to_owned())];
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for entry in std::fs::read_dir(examples).unwrap() {
        let path = entry.unwrap().path();
        texts.push((
            "example",
            std::fs::read_to_string(&path).unwrap_or_default(),
        ));
    }
    let prefix = agentid_server::auth::tokens::API_KEY_PREFIX;
    let mut seen = 0;
    for (name, text) in &texts {
        for (at, _) in text.match_indices("AGENTID_API_KEY=") {
            let value = &text[at + "AGENTID_API_KEY=".len()..];
            seen += 1;
            assert!(
                value.starts_with(prefix) || value.starts_with('$'),
                "{name}: AGENTID_API_KEY={}",
                value.lines().next().unwrap_or("")
            );
        }
    }
    assert!(seen >= 2);
}

/// The quick start, run as a program: the agent, then a denial, then (granted) the
/// decision and its receipt, which verifies; `check_receipt` verifies it offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_prints_its_decision_and_check_receipt_verifies_it_offline() {
    let app = spawn_app().await;
    let keys = app.key_dir("qs");
    let keys = keys.to_str().unwrap();
    let env = [
        ("AGENTID_URL", app.address.as_str()),
        ("AGENTID_API_KEY", app.api_key.as_str()),
        ("AGENTID_KEY_DIR", keys),
    ];
    let first = stdout_lines(&run_example("quickstart", &[], &env).await);
    assert_eq!(first.len(), 2, "{first:?}");
    let agent_id = first[0].strip_prefix("agent my-agent is ").unwrap();
    assert_eq!(first[1], "denied: capability_not_granted");

    app.grant(agent_id, "email:send", None).await;
    let second = stdout_lines(&run_example("quickstart", &[], &env).await);
    assert_eq!(second.len(), 3, "{second:?}");
    assert_eq!(second[0], first[0], "the same agent");
    let audit_seq = second[1].strip_prefix("allowed: audit record ").unwrap();
    let receipt = second[2].strip_prefix("receipt: ").unwrap();
    let rp = agentid::RelyingParty::new(&app.address).unwrap();
    let claims = rp.verify_receipt(receipt, None).await.unwrap();
    assert!(claims.allowed);
    assert_eq!(claims.sub, agent_id);
    assert_eq!(claims.audit_seq.to_string(), audit_seq);

    // Offline: a saved JWKS, and nothing else.
    let jwks = app.dir.join("jwks.json");
    std::fs::write(
        &jwks,
        serde_json::to_string(&*rp.jwks().await.unwrap()).unwrap(),
    )
    .unwrap();
    let jwks = jwks.to_str().unwrap();
    let env = [("AGENTID_URL", app.address.as_str())];
    let checked = stdout_lines(&run_example("check_receipt", &[jwks, receipt], &env).await);
    assert_eq!(
        checked,
        [format!(
            "receipt verified offline: allowed email:send on bob@example.com for agent {agent_id}, audit record {audit_seq}"
        )]
    );
    // A receipt whose payload was changed does not verify; neither does one from
    // another issuer.
    let parts: Vec<&str> = receipt.split('.').collect();
    let forged = format!("{}.{}x.{}", parts[0], parts[1], parts[2]);
    let refused = run_example("check_receipt", &[jwks, &forged], &env).await;
    assert_eq!(refused.status.code(), Some(1));
    let other = [("AGENTID_URL", "http://127.0.0.1:1")];
    let refused = run_example("check_receipt", &[jwks, receipt], &other).await;
    assert_eq!(refused.status.code(), Some(1));
    let usage = run_example("check_receipt", &[jwks], &env).await;
    assert_eq!(usage.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_tool_runs() {
    let app = spawn_app().await;
    let dir = app.key_dir("gt");
    let agent = app
        .agent("guarded-tool-agent", &dir)
        .connect()
        .await
        .unwrap();
    app.grant(agent.id(), "email:send", Some("*@example.com"))
        .await;
    let outcomes = guarded::run(app.agent("guarded-tool-agent", &dir))
        .await
        .unwrap();
    assert!(matches!(outcomes[0], Outcome::Sent { .. }), "{outcomes:?}");
    assert_eq!(
        outcomes[1],
        Outcome::Refused {
            reason: "resource_not_in_scope".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relying_party_runs() {
    let app = spawn_app().await;
    let dir = app.key_dir("rp");
    let agent = app.agent("rp-agent", &dir).connect().await.unwrap();
    app.grant(agent.id(), "docs:read", None).await;
    let verdict = rp_example::run(app.agent("rp-agent", &dir), &app.address)
        .await
        .unwrap();
    assert_eq!(verdict.agent_id, agent.id());
    assert!(verdict.allowed);
    assert_eq!(verdict.reason, "allowed");
}
