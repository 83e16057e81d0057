//! The `agentid-server` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    agentid_server::cli::main()
}
