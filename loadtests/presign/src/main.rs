//! `agentid-presign`: the load tests' agent side, built on the `agentid` SDK, so the
//! load generator (k6) spends no CPU on Ed25519.
//!
//! - `setup`: signs in as the organization's owner, creates an API key for the load
//!   tests, the capability `email:send`, N agents (`AgentBuilder` with a key
//!   directory: register + proof of possession), a grant for each, and a few
//!   denials so that alert and audit pages have something in them. Writes
//!   `<state>/state.json`.
//! - `actions`: reconnects those agents (idempotent: same name, same key) and writes
//!   N action envelopes, one per line, each with its own nonce and `iat` = now, for
//!   k6's `SharedArray`. The server refuses an `iat` older than
//!   `AGENTID_ACTION_MAX_AGE` (300 s by default): sign right before the run.
//! - `signer`: for the registration burst, whose challenges exist only at run time:
//!   writes N fresh public keys for k6 and answers `POST /sign` with a
//!   challenge-response envelope signed by key number `i` (the agents' side of the
//!   protocol, in a process of its own).

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentid::signing::{self, AgentKey};
use agentid::{AdminClient, Agent, AgentBuilder, Client, Error, RetryPolicy};
use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const CAPABILITY: &str = "email:send";
const RESOURCE: &str = "mailto:bob@example.com";
const RESOURCE_PATTERN: &str = "mailto:*@example.com";
/// What the load tests' API key may do: register agents (registration burst) and
/// read everything an administrator's dashboard reads.
const API_KEY_PERMISSIONS: &[&str] = &[
    "agents:read",
    "agents:write",
    "audit:read",
    "alerts:read",
    "users:read",
];

#[derive(Parser, Debug)]
#[command(about = "Sets up agents and pre-signs envelopes for the agentid load tests")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the API key, capability, agents and grants; write <state>/state.json.
    Setup {
        /// The server, e.g. http://127.0.0.1:18080
        #[arg(long)]
        url: String,
        /// The organization owner's email (made by `agentid-server admin create-owner`).
        #[arg(long)]
        email: String,
        /// The owner's password.
        #[arg(long, env = "PRESIGN_PASSWORD", hide_env_values = true)]
        password: String,
        /// Directory for state.json and the agents' key files.
        #[arg(long)]
        state: PathBuf,
        /// How many agents the actions are spread over.
        #[arg(long, default_value_t = 16)]
        agents: usize,
    },
    /// Write COUNT pre-signed action envelopes, one JSON document per line.
    Actions {
        #[arg(long)]
        state: PathBuf,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        out: PathBuf,
        /// Signing threads (default: all cores; the server is idle while this runs).
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
    /// Serve challenge-response signatures for COUNT fresh keys (registration burst).
    Signer {
        #[arg(long)]
        state: PathBuf,
        /// Where to listen, e.g. 127.0.0.1:18999
        #[arg(long)]
        listen: String,
        #[arg(long)]
        count: usize,
        /// The public keys, as a JSON array of {"name","public_key"}, for k6.
        #[arg(long)]
        keys_out: PathBuf,
    },
}

#[derive(Serialize, Deserialize, Debug)]
struct State {
    url: String,
    api_key: String,
    agents: Vec<StateAgent>,
}

#[derive(Serialize, Deserialize, Debug)]
struct StateAgent {
    name: String,
    id: String,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup {
            url,
            email,
            password,
            state,
            agents,
        } => runtime().and_then(|rt| rt.block_on(setup(&url, &email, &password, &state, agents))),
        Command::Actions {
            state,
            count,
            out,
            threads,
        } => runtime().and_then(|rt| rt.block_on(actions(&state, count, &out, threads))),
        Command::Signer {
            state,
            listen,
            count,
            keys_out,
        } => signer(&state, &listen, count, &keys_out),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agentid-presign: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("a tokio runtime: {e}"))
}

fn sdk(context: &str) -> impl Fn(Error) -> String + '_ {
    move |e| format!("{context}: {e}")
}

fn key_dir(state: &Path) -> PathBuf {
    state.join("keys")
}

/// Creates `dir` (and parents) with mode 0700 where that means something: the SDK
/// refuses a key directory others can read.
fn private_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}

fn agent_builder(url: &str, api_key: &str, state: &Path, name: &str) -> AgentBuilder {
    AgentBuilder::new(name)
        .url(url)
        .api_key(api_key)
        .key_dir(key_dir(state))
        .requested_capabilities(vec![CAPABILITY.to_owned()])
        .retry(RetryPolicy::none())
}

async fn setup(
    url: &str,
    email: &str,
    password: &str,
    state: &Path,
    agents: usize,
) -> Result<(), String> {
    private_dir(state)?;
    private_dir(&key_dir(state))?;
    let client = Client::builder(url)
        .retry(RetryPolicy::none())
        .build()
        .map_err(sdk("client"))?;
    let (owner, _) = AdminClient::login(client, email, password)
        .await
        .map_err(sdk("owner login"))?;
    let created = owner
        .create_api_key("load tests", API_KEY_PERMISSIONS, None)
        .await
        .map_err(sdk("API key"))?;
    match owner
        .create_capability(CAPABILITY, "Send email (load tests)", "medium", 0)
        .await
    {
        Ok(_) | Err(Error::Api { status: 409, .. }) => {}
        Err(e) => return Err(format!("capability: {e}")),
    }
    let mut connected = Vec::with_capacity(agents);
    for i in 0..agents {
        let name = format!("load-agent-{i}");
        let agent = agent_builder(url, &created.key, state, &name)
            .connect()
            .await
            .map_err(sdk("agent registration"))?;
        owner
            .grant_capability(agent.id(), CAPABILITY, Some(RESOURCE_PATTERN), None)
            .await
            .map_err(sdk("grant"))?;
        connected.push(agent);
    }
    // A few denials (out of scope, not granted) by two agents of their own, so
    // that the alerts and audit pages the management-read scenario lists are not
    // empty (each raises an alert) while the agents that sign the load keep their
    // trust score.
    let mut noisy = Vec::new();
    for i in 0..2 {
        let agent = agent_builder(url, &created.key, state, &format!("load-noisy-{i}"))
            .connect()
            .await
            .map_err(sdk("agent registration"))?;
        owner
            .grant_capability(agent.id(), CAPABILITY, Some(RESOURCE_PATTERN), None)
            .await
            .map_err(sdk("grant"))?;
        noisy.push(agent);
    }
    for agent in &noisy {
        for (action, resource) in [
            (CAPABILITY, "mailto:eve@elsewhere.example"),
            ("files:delete", "file:///etc/passwd"),
        ] {
            let decision = agent
                .verify(action, Some(resource), None)
                .await
                .map_err(sdk("seeding a denial"))?;
            if decision.allowed {
                return Err(format!(
                    "{action} on {resource} was allowed; expected a denial"
                ));
            }
        }
    }
    let out = State {
        url: url.to_owned(),
        api_key: created.key.clone(),
        agents: connected
            .iter()
            .map(|a| StateAgent {
                name: a.name().to_owned(),
                id: a.id().to_owned(),
            })
            .collect(),
    };
    write_json(&state.join("state.json"), &out)?;
    println!(
        "setup: {} agents granted {CAPABILITY} on {RESOURCE_PATTERN}; API key and state in {}",
        connected.len(),
        state.display()
    );
    Ok(())
}

fn read_state(state: &Path) -> Result<State, String> {
    let path = state.join("state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

async fn actions(state: &Path, count: usize, out: &Path, threads: usize) -> Result<(), String> {
    let st = read_state(state)?;
    let mut agents: Vec<Agent> = Vec::with_capacity(st.agents.len());
    for a in &st.agents {
        let agent = agent_builder(&st.url, &st.api_key, state, &a.name)
            .connect()
            .await
            .map_err(sdk("reconnecting an agent"))?;
        if agent.id() != a.id {
            return Err(format!("agent {} came back with another id", a.name));
        }
        agents.push(agent);
    }
    if agents.is_empty() {
        return Err("no agents in state.json; run setup first".to_owned());
    }
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        threads
    };
    let started = Instant::now();
    let args = serde_json::json!({"to": "bob@example.com", "subject": "Quarterly report"});
    let agents = Arc::new(agents);
    let chunk = count.div_ceil(threads.max(1)).max(1);
    let mut handles = Vec::new();
    for t in 0..threads.max(1) {
        let agents = agents.clone();
        let args = args.clone();
        let (from, to) = ((t * chunk).min(count), ((t + 1) * chunk).min(count));
        handles.push(std::thread::spawn(move || -> Result<String, String> {
            let mut text = String::with_capacity((to - from) * 700);
            for i in from..to {
                // Round robin over the agents: consecutive requests come from
                // different agents, as from a fleet.
                let agent = &agents[i % agents.len()];
                let signed = agent
                    .sign_action(CAPABILITY, Some(RESOURCE), Some(&args))
                    .map_err(|e| format!("signing: {e}"))?;
                text.push_str(signed.json());
                text.push('\n');
            }
            Ok(text)
        }));
    }
    let file = std::fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut w = BufWriter::new(file);
    for h in handles {
        let text = h
            .join()
            .map_err(|_| "a signing thread panicked".to_owned())??;
        w.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    }
    w.flush().map_err(|e| e.to_string())?;
    println!(
        "actions: {count} envelopes from {} agents in {:.1} s -> {}",
        agents.len(),
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// signer: challenge responses at run time

/// Key number `i` of this run: derived from a run secret, never written to disk.
fn burst_key(run: &[u8; 32], i: usize) -> Result<AgentKey, String> {
    let mut h = Sha256::new();
    h.update(run);
    h.update((i as u64).to_be_bytes());
    let seed: [u8; 32] = h.finalize().into();
    AgentKey::from_seed(&seed).map_err(|e| e.to_string())
}

#[derive(Deserialize)]
struct SignRequest {
    i: usize,
    agent_id: String,
    challenge: String,
    aud: String,
}

fn signer(state: &Path, listen: &str, count: usize, keys_out: &Path) -> Result<(), String> {
    private_dir(state)?;
    // A run secret from the OS (the SDK's key generation), hashed into per-key seeds.
    let run: [u8; 32] = Sha256::digest(AgentKey::generate().public_key().as_bytes()).into();
    let tag = hex::encode(&run[..4]);
    let mut keys = Vec::with_capacity(count);
    let mut public = Vec::with_capacity(count);
    for i in 0..count {
        let key = burst_key(&run, i)?;
        public.push(serde_json::json!({
            "name": format!("burst-{tag}-{i}"),
            "public_key": key.public_key(),
        }));
        keys.push(key);
    }
    write_json(keys_out, &public)?;
    let keys = Arc::new(keys);
    let listener = TcpListener::bind(listen).map_err(|e| format!("{listen}: {e}"))?;
    println!(
        "signer: {count} keys in {}; listening on {listen}",
        keys_out.display()
    );
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let keys = keys.clone();
        std::thread::spawn(move || {
            let _ = serve(stream, &keys);
        });
    }
    Ok(())
}

/// A minimal HTTP/1.1 keep-alive loop: `POST /sign` with a JSON body, nothing else.
fn serve(stream: TcpStream, keys: &[AgentKey]) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length.min(64 * 1024)];
        reader.read_exact(&mut body)?;
        let (status, text) = if line.starts_with("POST /sign ") {
            match sign(&body, keys) {
                Ok(envelope) => ("200 OK", envelope),
                Err(e) => ("400 Bad Request", e),
            }
        } else {
            ("404 Not Found", "POST /sign only".to_owned())
        };
        write!(
            writer,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        )?;
        writer.flush()?;
    }
}

fn sign(body: &[u8], keys: &[AgentKey]) -> Result<String, String> {
    let req: SignRequest = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let key = keys
        .get(req.i)
        .ok_or_else(|| format!("no key number {}", req.i))?;
    signing::challenge_response_envelope(
        key,
        &req.agent_id,
        &req.aud,
        &req.challenge,
        signing::now_unix(),
    )
    .map(signing::SignedEnvelope::into_json)
    .map_err(|e| e.to_string())
}
