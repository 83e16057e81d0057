//! The repository's README against the binary it describes. (Its "First hour" is
//! executed by `sdk-python/tests/test_readme.py`, which runs after this binary: the
//! README's `cargo run` re-links `target/debug/agentid-server`, which the tests here
//! start concurrently.)

use std::process::Command;

const README: &str = include_str!("../../../README.md");

/// Every command of the binary (as its `--help` lists them) has a row in the README's
/// command table.
#[test]
fn every_command_is_in_the_readme_table() {
    fn commands(path: &[String]) -> Vec<Vec<String>> {
        let output = Command::new(env!("CARGO_BIN_EXE_agentid-server"))
            .args(path)
            .arg("--help")
            .output()
            .unwrap();
        let help = String::from_utf8(output.stdout).unwrap();
        let Some(list) = help.split("Commands:\n").nth(1) else {
            return vec![path.to_vec()];
        };
        list.lines()
            .take_while(|l| !l.trim().is_empty())
            .filter_map(|l| l.split_whitespace().next())
            .filter(|name| *name != "help")
            .flat_map(|name| {
                let mut sub = path.to_vec();
                sub.push(name.to_owned());
                commands(&sub)
            })
            .collect()
    }
    let table = &README[README.find("\n## Commands\n").unwrap()..];
    let table = &table[..table[3..].find("\n## ").unwrap()];
    let all = commands(&[]);
    assert!(all.len() >= 8, "{all:?}");
    for command in all {
        let name = format!("`agentid-server {}", command.join(" "));
        assert!(
            table
                .lines()
                .any(|row| row.starts_with('|') && row.contains(&name)),
            "the README's command table has no row for {name}`"
        );
    }
}
