//! Request rate limits: per route class, by client address, credential and agent.
//!
//! A request belongs to one [`Class`] and is counted under one key per
//! [`Dimension`] that class limits (its client address, the digest of the credential
//! it presents, the agent it speaks for). [`RateLimiter::check`] takes all of a
//! request's keys at once and admits the request only if every key admits it; only
//! then is anything consumed. The algorithm is GCRA (a leaky bucket kept as one
//! "theoretical arrival time" per key): `N` per period with a burst of `B`.
//!
//! Counters live in this process ([`LocalStore`]) unless `REDIS_URL` is set; then
//! they live in Redis, evaluated by one Lua script against Redis's own clock, so
//! every replica enforces one shared limit. Any Redis failure or slow answer makes
//! that request use the in-process counters instead (logged at most once per 10 s,
//! counted in `agentid_rate_limit_backend_errors_total`), and Redis is left alone for
//! a short back-off; a Redis outage never opens the door and never answers 500.
//!
//! This module must never see or keep a credential: callers pass the secret only to
//! [`Key::credential`], which keeps 16 bytes of its SHA-256.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::metrics::Metrics;

/// Longest a Redis evaluation may take before the request is decided in-process.
const REDIS_TIMEOUT: Duration = Duration::from_millis(100);
/// How long Redis is left alone after a failure.
const REDIS_BACKOFF: Duration = Duration::from_secs(1);
/// At most one outage warning per this interval.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// Shards of the in-process store (a power of two).
const SHARDS: usize = 64;
/// Calls to a shard between two sweeps of its replenished keys.
const SWEEP_EVERY: u32 = 1024;

/// The kinds of requests, each with its own limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// `POST /api/v1/actions/verify`, the hot path.
    Actions,
    /// The unauthenticated agent endpoints: challenge, verify, key rotation.
    AgentAuth,
    /// `/api/v1/auth/*`: login, refresh, sessions.
    Auth,
    /// Other management requests that change something (not GET or HEAD).
    Writes,
    /// Management reads (GET and HEAD).
    Reads,
}

impl Class {
    pub const ALL: [Class; 5] = [
        Class::Actions,
        Class::AgentAuth,
        Class::Auth,
        Class::Writes,
        Class::Reads,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Actions => "actions",
            Class::AgentAuth => "agent_auth",
            Class::Auth => "auth",
            Class::Writes => "writes",
            Class::Reads => "reads",
        }
    }

    /// The dimensions this class can be limited by.
    pub fn dimensions(self) -> &'static [Dimension] {
        match self {
            Class::Actions | Class::AgentAuth => &[Dimension::Address, Dimension::Agent],
            Class::Auth | Class::Writes | Class::Reads => {
                &[Dimension::Address, Dimension::Credential]
            }
        }
    }

    /// The class of a request, or `None` for unlimited paths (health, metrics, docs,
    /// the OpenAPI document, the JWKS: everything outside `/api/v1`).
    pub fn of(method: &actix_web::http::Method, path: &str) -> Option<Class> {
        use actix_web::http::Method;
        let rest = path.strip_prefix("/api/v1/")?;
        let read = *method == Method::GET || *method == Method::HEAD;
        if rest.starts_with("auth/") {
            return Some(Class::Auth);
        }
        if *method == Method::POST {
            if rest == "actions/verify" {
                return Some(Class::Actions);
            }
            if let Some(agent) = rest.strip_prefix("agents/") {
                if let Some((id, tail)) = agent.split_once('/') {
                    if !id.is_empty() && matches!(tail, "challenge" | "verify" | "keys/rotate") {
                        return Some(Class::AgentAuth);
                    }
                }
            }
        }
        Some(if read { Class::Reads } else { Class::Writes })
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What a key counts: who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    /// The client address (an IPv6 address counts as its /64).
    Address,
    /// The presented bearer token or API key (its digest).
    Credential,
    /// The agent the request speaks for.
    Agent,
}

impl Dimension {
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Address => "address",
            Dimension::Credential => "credential",
            Dimension::Agent => "agent",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// `(class, dimension)` as the policy name shown in headers and metrics.
fn policy_name(class: Class, dimension: Dimension) -> &'static str {
    match (class, dimension) {
        (Class::Actions, Dimension::Address) => "actions.address",
        (Class::Actions, _) => "actions.agent",
        (Class::AgentAuth, Dimension::Address) => "agent_auth.address",
        (Class::AgentAuth, _) => "agent_auth.agent",
        (Class::Auth, Dimension::Address) => "auth.address",
        (Class::Auth, _) => "auth.credential",
        (Class::Writes, Dimension::Address) => "writes.address",
        (Class::Writes, _) => "writes.credential",
        (Class::Reads, Dimension::Address) => "reads.address",
        (Class::Reads, _) => "reads.credential",
    }
}

/// `count` requests per `period`, with bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub count: u32,
    pub period: Duration,
    pub burst: u32,
}

impl Rule {
    const fn per(count: u32, period_secs: u64) -> Rule {
        Rule {
            count,
            period: Duration::from_secs(period_secs),
            burst: count,
        }
    }

    /// Microseconds between two requests at the sustained rate (at least 1).
    fn interval_us(&self) -> u64 {
        (self.period.as_micros() as u64 / u64::from(self.count.max(1))).max(1)
    }

    /// How far ahead of now the arrival time may run: the burst.
    fn tolerance_us(&self) -> u64 {
        self.interval_us().saturating_mul(u64::from(self.burst))
    }

    /// The window of the `RateLimit-Policy` header: the time a full burst takes to
    /// replenish, in whole seconds (at least 1).
    fn window_secs(&self) -> u64 {
        self.tolerance_us().div_ceil(1_000_000).max(1)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.period.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)?;
        if self.burst != self.count {
            write!(f, ":{}", self.burst)?;
        }
        Ok(())
    }
}

/// The limits in force: one optional rule per (class, dimension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    rules: [[Option<Rule>; 3]; 5],
}

impl Default for RateLimits {
    /// The documented production defaults (docs/rate-limits.md).
    fn default() -> Self {
        let mut limits = RateLimits::off();
        let defaults = [
            (Class::Actions, Dimension::Agent, Rule::per(500, 1)),
            (Class::Actions, Dimension::Address, Rule::per(5000, 1)),
            (Class::AgentAuth, Dimension::Agent, Rule::per(30, 60)),
            (Class::AgentAuth, Dimension::Address, Rule::per(600, 60)),
            (Class::Auth, Dimension::Address, Rule::per(60, 60)),
            (Class::Auth, Dimension::Credential, Rule::per(600, 60)),
            (Class::Writes, Dimension::Credential, Rule::per(300, 60)),
            (Class::Writes, Dimension::Address, Rule::per(1200, 60)),
            (Class::Reads, Dimension::Credential, Rule::per(1200, 60)),
            (Class::Reads, Dimension::Address, Rule::per(6000, 60)),
        ];
        for (class, dimension, rule) in defaults {
            limits.set(class, dimension, Some(rule));
        }
        limits
    }
}

impl RateLimits {
    /// No limits at all (`AGENTID_RATE_LIMITS=off`).
    pub fn off() -> RateLimits {
        RateLimits {
            rules: [[None; 3]; 5],
        }
    }

    pub fn get(&self, class: Class, dimension: Dimension) -> Option<Rule> {
        self.rules[class.index()][dimension.index()]
    }

    fn set(&mut self, class: Class, dimension: Dimension, rule: Option<Rule>) {
        self.rules[class.index()][dimension.index()] = rule;
    }

    /// Whether any rule is in force.
    pub fn any(&self) -> bool {
        self.rules.iter().flatten().any(Option::is_some)
    }

    /// Parses `AGENTID_RATE_LIMITS`: `off`, or comma-separated
    /// `class.dimension=N/s|m|h[:burst]` or `class.dimension=off` overriding the
    /// defaults. The error says what is wrong, for a message naming the variable.
    pub fn parse(value: Option<&str>) -> Result<RateLimits, String> {
        let Some(value) = value else {
            return Ok(RateLimits::default());
        };
        if value.trim() == "off" {
            return Ok(RateLimits::off());
        }
        let mut limits = RateLimits::default();
        for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, rule) = item
                .split_once('=')
                .ok_or_else(|| format!("`{item}` is not `class.dimension=N/unit`"))?;
            let (class, dimension) = name
                .trim()
                .split_once('.')
                .ok_or_else(|| format!("`{name}` is not `class.dimension`"))?;
            let class = Class::ALL
                .into_iter()
                .find(|c| c.as_str() == class)
                .ok_or_else(|| {
                    format!(
                        "unknown class `{class}` (one of actions, agent_auth, auth, writes, reads)"
                    )
                })?;
            let dimension = class
                .dimensions()
                .iter()
                .copied()
                .find(|d| d.as_str() == dimension)
                .ok_or_else(|| {
                    let names: Vec<_> = class.dimensions().iter().map(|d| d.as_str()).collect();
                    format!(
                        "class `{}` is not limited by `{dimension}` (only {})",
                        class.as_str(),
                        names.join(", ")
                    )
                })?;
            limits.set(class, dimension, parse_rule(rule.trim())?);
        }
        Ok(limits)
    }

    /// The rules as `AGENTID_RATE_LIMITS` would write them, for `config check`.
    pub fn describe(&self) -> String {
        if !self.any() {
            return "off".to_owned();
        }
        let mut parts = Vec::new();
        for class in Class::ALL {
            for &dimension in class.dimensions() {
                let rule = self
                    .get(class, dimension)
                    .map_or_else(|| "off".to_owned(), |r| r.to_string());
                parts.push(format!("{}={rule}", policy_name(class, dimension)));
            }
        }
        parts.join(",")
    }
}

fn parse_rule(text: &str) -> Result<Option<Rule>, String> {
    if text == "off" {
        return Ok(None);
    }
    let bad = || format!("`{text}` is not a rule such as 100/s, 30/m, 1000/h or 30/m:60, or off");
    let (rate, burst) = match text.split_once(':') {
        Some((rate, burst)) => (rate, Some(burst)),
        None => (text, None),
    };
    let (count, unit) = rate.split_once('/').ok_or_else(bad)?;
    let count: u32 = count.trim().parse().map_err(|_| bad())?;
    let period = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    let burst = match burst {
        Some(b) => b.trim().parse().map_err(|_| bad())?,
        None => count,
    };
    if count == 0 || burst == 0 || count > 1_000_000 || burst > 1_000_000 {
        return Err(format!(
            "`{text}`: the rate and the burst must be from 1 to 1000000 (use `off` to remove a limit)"
        ));
    }
    Ok(Some(Rule {
        count,
        period,
        burst,
    }))
}

/// One counted key: a class, a dimension and 16 bytes naming who.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    class: Class,
    dimension: Dimension,
    id: [u8; 16],
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Key({}, {})",
            policy_name(self.class, self.dimension),
            hex::encode(self.id)
        )
    }
}

impl Key {
    /// A client address; IPv4-mapped IPv6 counts as IPv4, other IPv6 as its /64.
    pub fn address(class: Class, address: IpAddr) -> Key {
        let id = match address.to_canonical() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                Ipv6Addr::from(bits).octets()
            }
        };
        Key {
            class,
            dimension: Dimension::Address,
            id,
        }
    }

    /// A credential, kept only as 16 bytes of its SHA-256.
    pub fn credential(class: Class, secret: &[u8]) -> Key {
        Key {
            class,
            dimension: Dimension::Credential,
            id: digest16(b"credential\0", secret),
        }
    }

    /// An agent, by its id.
    pub fn agent(class: Class, agent_id: &str) -> Key {
        Key {
            class,
            dimension: Dimension::Agent,
            id: digest16(b"agent\0", agent_id.as_bytes()),
        }
    }

    fn shard(&self) -> usize {
        let mut x = u64::from_le_bytes([
            self.id[0],
            self.id[5],
            self.id[9],
            self.id[11],
            self.id[12],
            self.id[13],
            self.id[14],
            self.id[15],
        ]);
        x ^= (self.class as u64) << 8 | self.dimension as u64;
        x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (x >> 58) as usize % SHARDS
    }

    fn redis_key(&self, prefix: &str) -> String {
        format!(
            "{prefix}:rl:{}:{}",
            policy_name(self.class, self.dimension),
            hex::encode(self.id)
        )
    }
}

fn digest16(domain: &[u8], data: &[u8]) -> [u8; 16] {
    let digest = Sha256::new()
        .chain_update(domain)
        .chain_update(data)
        .finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

/// The answer for one request: admitted or not, and the state of its most
/// constrained key (for the `RateLimit` headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// `class.dimension` of the most constrained key.
    pub policy: &'static str,
    pub class: Class,
    /// The burst (`q` of `RateLimit-Policy`).
    pub quota: u32,
    /// Seconds a full burst takes to replenish (`w` of `RateLimit-Policy`).
    pub window_secs: u64,
    /// Requests still admitted right now under that key.
    pub remaining: u64,
    /// Until that key is fully replenished.
    pub reset: Duration,
    /// When refused: until every key would admit the request.
    pub retry_after: Duration,
}

/// A key with its rule, ready to evaluate.
#[derive(Debug, Clone, Copy)]
struct Ruled {
    key: Key,
    rule: Rule,
}

impl Ruled {
    const PLACEHOLDER: Ruled = Ruled {
        key: Key {
            class: Class::Reads,
            dimension: Dimension::Address,
            id: [0; 16],
        },
        rule: Rule::per(1, 1),
    };
}

/// Turns each key's "debt" (its arrival time minus now, before this request) into
/// the verdict; the same arithmetic for both backends.
fn verdict(ruled: &[Ruled], debts: &[u64], allowed: bool) -> Verdict {
    let mut best: Option<(u64, u64, Duration, Duration, &Ruled)> = None;
    let mut retry_after = Duration::ZERO;
    for (r, &debt) in ruled.iter().zip(debts) {
        let interval = r.rule.interval_us();
        let tolerance = r.rule.tolerance_us();
        let after = debt.saturating_add(interval);
        let (remaining, reset) = if allowed {
            (tolerance.saturating_sub(after) / interval, after)
        } else {
            (tolerance.saturating_sub(debt) / interval, debt)
        };
        let wait = Duration::from_micros(after.saturating_sub(tolerance));
        retry_after = retry_after.max(wait);
        // The most constrained key: fewest remaining, then the longest wait.
        let candidate = (remaining, u64::MAX - wait.as_micros() as u64);
        let better = match &best {
            None => true,
            Some((rem, w, ..)) => candidate < (*rem, *w),
        };
        if better {
            best = Some((
                candidate.0,
                candidate.1,
                Duration::from_micros(reset),
                wait,
                r,
            ));
        }
    }
    match best {
        Some((remaining, _, reset, _, r)) => Verdict {
            allowed,
            policy: policy_name(r.key.class, r.key.dimension),
            class: r.key.class,
            quota: r.rule.burst,
            window_secs: r.rule.window_secs(),
            remaining,
            reset,
            retry_after: if allowed { Duration::ZERO } else { retry_after },
        },
        // Unreachable: callers pass at least one key.
        None => Verdict {
            allowed: true,
            policy: "",
            class: Class::Reads,
            quota: 0,
            window_secs: 0,
            remaining: 0,
            reset: Duration::ZERO,
            retry_after: Duration::ZERO,
        },
    }
}

/// In-process GCRA counters: sharded maps from key to arrival time (µs since the
/// store's origin). A key whose arrival time has passed holds nothing and is swept.
#[derive(Debug)]
pub struct LocalStore {
    origin: Instant,
    shards: Vec<Mutex<Shard>>,
}

#[derive(Debug, Default)]
struct Shard {
    tats: HashMap<Key, u64>,
    calls: u32,
}

impl Default for LocalStore {
    fn default() -> Self {
        LocalStore {
            origin: Instant::now(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl LocalStore {
    fn now_us(&self) -> u64 {
        // Offset by one second so "absent" (0) is always in the past.
        self.origin.elapsed().as_micros() as u64 + 1_000_000
    }

    /// Evaluates and, if every key admits, consumes; all under the keys' shard locks.
    fn check(&self, ruled: &[Ruled]) -> Verdict {
        self.check_at(ruled, self.now_us())
    }

    fn check_at(&self, ruled: &[Ruled], now: u64) -> Verdict {
        // Lock each needed shard once, in ascending order (no deadlock).
        let mut order: [usize; 4] = [usize::MAX; 4];
        let n = ruled.len().min(order.len());
        for (slot, r) in order.iter_mut().zip(&ruled[..n]) {
            *slot = r.key.shard();
        }
        order[..n].sort_unstable();
        // A fixed array of guards: no allocation on the hot path.
        let mut guards: [Option<(usize, MutexGuard<'_, Shard>)>; 4] = [const { None }; 4];
        let mut last = usize::MAX;
        for (slot, &index) in guards.iter_mut().zip(&order[..n]) {
            if index != last {
                let guard = self.shards[index]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                *slot = Some((index, guard));
                last = index;
            }
        }
        let mut debts = [0u64; 4];
        let mut allowed = true;
        for (i, r) in ruled[..n].iter().enumerate() {
            let shard = r.key.shard();
            let Some((_, guard)) = guards.iter().flatten().find(|(s, _)| *s == shard) else {
                continue;
            };
            let tat = guard.tats.get(&r.key).copied().unwrap_or(now).max(now);
            debts[i] = tat - now;
            if debts[i] + r.rule.interval_us() > r.rule.tolerance_us() {
                allowed = false;
            }
        }
        if allowed {
            for (i, r) in ruled[..n].iter().enumerate() {
                let shard = r.key.shard();
                if let Some((_, guard)) = guards.iter_mut().flatten().find(|(s, _)| *s == shard) {
                    guard
                        .tats
                        .insert(r.key, now + debts[i] + r.rule.interval_us());
                }
            }
        }
        for (_, guard) in guards.iter_mut().flatten() {
            guard.calls = guard.calls.wrapping_add(1);
            if guard.calls % SWEEP_EVERY == 0 {
                guard.tats.retain(|_, tat| *tat > now);
                let keep = guard.tats.len() * 2;
                guard.tats.shrink_to(keep);
            }
        }
        verdict(&ruled[..n], &debts[..n], allowed)
    }

    /// Keys currently held (for tests and the memory bound).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).tats.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// GCRA over all of a request's keys, atomically, on Redis's clock. ARGV holds
/// (interval µs, tolerance µs) per key. Returns {allowed, debt_1, ..., debt_n}.
const GCRA_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS
local tats = {}
local result = {1}
for i = 1, n do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now) or now
  if tat < now then tat = now end
  tats[i] = tat
  result[i + 1] = tat - now
  if tat - now + interval > tolerance then result[1] = 0 end
end
if result[1] == 1 then
  for i = 1, n do
    local new_tat = tats[i] + tonumber(ARGV[2 * i - 1])
    local ttl = math.ceil((new_tat - now) / 1000) + 1
    redis.call('SET', KEYS[i], string.format('%.0f', new_tat), 'PX', string.format('%.0f', ttl))
  end
end
return result
";

/// The shared backend and its health.
struct RedisBackend {
    connection: redis::aio::ConnectionManager,
    script: redis::Script,
    prefix: String,
    /// While `now_ms()` is below this, Redis is not tried.
    skip_until_ms: AtomicU64,
    /// The last outage warning, in ms since the limiter's origin.
    last_warning_ms: AtomicU64,
    /// Whether the last attempt failed (to log the recovery once).
    degraded: Arc<AtomicBool>,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Where the counters live.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://...`; may hold a password.
    pub url: SecretString,
    /// Prefix of every key, so deployments sharing a Redis do not collide.
    pub prefix: String,
}

/// Why the limiter could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("REDIS_URL: {0}")]
pub struct RedisSetupError(String);

/// The rate limiter every request passes.
#[derive(Debug)]
pub struct RateLimiter {
    limits: RateLimits,
    local: LocalStore,
    redis: Option<RedisBackend>,
    metrics: Arc<Metrics>,
}

impl RateLimiter {
    /// A limiter with in-process counters, or Redis ones when `redis` is given. The
    /// Redis connection is made lazily (start-up does not wait for Redis, and an
    /// unreachable Redis only means in-process counting until it answers). Must be
    /// called inside a Tokio runtime when `redis` is given.
    pub fn new(
        limits: RateLimits,
        redis: Option<&RedisSettings>,
        metrics: Arc<Metrics>,
    ) -> Result<RateLimiter, RedisSetupError> {
        let redis = match redis {
            None => None,
            Some(settings) => {
                let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
                    RedisSetupError(
                        "the rate limiter must be created inside a Tokio runtime".into(),
                    )
                })?;
                let client = redis::Client::open(settings.url.expose_secret())
                    .map_err(|e| RedisSetupError(e.to_string()))?;
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(REDIS_TIMEOUT))
                    .set_response_timeout(Some(REDIS_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(200));
                let connection =
                    redis::aio::ConnectionManager::new_lazy_with_config(client, config)
                        .map_err(|e| RedisSetupError(e.to_string()))?;
                let script = redis::Script::new(GCRA_LUA);
                // Connect and load the script now, so the first requests do not pay
                // for it (and fall back in-process if that takes too long).
                let mut warm = connection.clone();
                let degraded = Arc::new(AtomicBool::new(false));
                let warm_degraded = degraded.clone();
                let warm_metrics = metrics.clone();
                runtime.spawn(async move {
                    let load = redis::Script::new(GCRA_LUA);
                    match tokio::time::timeout(Duration::from_secs(5), load.load_async(&mut warm))
                    .await
                    {
                        Ok(Ok(_)) => {
                            tracing::info!("Redis answers: rate limits are shared");
                            return;
                        }
                        Ok(Err(e)) => tracing::warn!(
                            error.cause = %e,
                            "Redis is unavailable at start: rate limits are counted in this process until it answers"
                        ),
                        Err(_) => tracing::warn!(
                            "Redis did not answer at start: rate limits are counted in this process until it answers"
                        ),
                    }
                    if !warm_degraded.swap(true, Ordering::Relaxed) {
                        warm_metrics.set_rate_limit_degraded(true);
                    }
                });
                Some(RedisBackend {
                    connection,
                    script,
                    prefix: settings.prefix.clone(),
                    skip_until_ms: AtomicU64::new(0),
                    last_warning_ms: AtomicU64::new(0),
                    degraded,
                })
            }
        };
        Ok(RateLimiter {
            limits,
            local: LocalStore::default(),
            redis,
            metrics,
        })
    }

    pub fn limits(&self) -> &RateLimits {
        &self.limits
    }

    /// Whether `class` has any rule in force.
    pub fn limits_class(&self, class: Class) -> bool {
        class
            .dimensions()
            .iter()
            .any(|&d| self.limits.get(class, d).is_some())
    }

    /// Checks a request's keys together: `None` when none of them has a rule in
    /// force, else the verdict (consumed only when allowed). Never fails: when
    /// Redis cannot answer in time, the in-process counters decide.
    pub async fn check(&self, keys: &[Key]) -> Option<Verdict> {
        // A fixed array: no allocation on the hot path.
        let mut buffer = [Ruled::PLACEHOLDER; 4];
        let mut n = 0;
        for key in keys.iter().take(buffer.len()) {
            if let Some(rule) = self.limits.get(key.class, key.dimension) {
                buffer[n] = Ruled { key: *key, rule };
                n += 1;
            }
        }
        if n == 0 {
            return None;
        }
        let ruled = &buffer[..n];
        let verdict = match &self.redis {
            Some(redis) => match self.check_redis(redis, ruled).await {
                Some(verdict) => verdict,
                None => self.local.check(ruled),
            },
            None => self.local.check(ruled),
        };
        if !verdict.allowed {
            self.metrics.count_rate_limited(verdict.class.as_str());
        }
        Some(verdict)
    }

    fn now_ms(&self) -> u64 {
        self.local.origin.elapsed().as_millis() as u64
    }

    /// The Redis verdict, or `None` (after logging and counting) when Redis is in
    /// back-off, fails or is slow.
    async fn check_redis(&self, redis: &RedisBackend, ruled: &[Ruled]) -> Option<Verdict> {
        let now = self.now_ms();
        if now < redis.skip_until_ms.load(Ordering::Relaxed) {
            return None;
        }
        let mut invocation = redis.script.prepare_invoke();
        for r in ruled {
            invocation.key(r.key.redis_key(&redis.prefix));
        }
        for r in ruled {
            invocation
                .arg(r.rule.interval_us())
                .arg(r.rule.tolerance_us());
        }
        let mut connection = redis.connection.clone();
        let outcome = tokio::time::timeout(
            REDIS_TIMEOUT,
            invocation.invoke_async::<Vec<i64>>(&mut connection),
        )
        .await;
        let failure = match outcome {
            Ok(Ok(values)) if values.len() == ruled.len() + 1 => {
                if redis.degraded.swap(false, Ordering::Relaxed) {
                    self.metrics.set_rate_limit_degraded(false);
                    tracing::info!("Redis answers again: rate limits are shared again");
                }
                let debts: Vec<u64> = values[1..].iter().map(|&d| d.max(0) as u64).collect();
                return Some(verdict(ruled, &debts, values[0] == 1));
            }
            Ok(Ok(values)) => format!("unexpected answer of {} values", values.len()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", REDIS_TIMEOUT.as_millis()),
        };
        let now = self.now_ms();
        redis
            .skip_until_ms
            .store(now + REDIS_BACKOFF.as_millis() as u64, Ordering::Relaxed);
        self.metrics.count_rate_limit_backend_error();
        if !redis.degraded.swap(true, Ordering::Relaxed) {
            self.metrics.set_rate_limit_degraded(true);
        }
        let last = redis.last_warning_ms.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= WARN_EVERY.as_millis() as u64)
            && redis
                .last_warning_ms
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                error.cause = %failure,
                "Redis is unavailable: rate limits are counted in this process until it answers again"
            );
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ruled(key: Key, rule: Rule) -> Ruled {
        Ruled { key, rule }
    }

    const SECOND: u64 = 1_000_000;

    #[test]
    fn defaults_parse_and_overrides_apply() {
        let limits = RateLimits::parse(None).unwrap();
        assert_eq!(
            limits.get(Class::Actions, Dimension::Agent),
            Some(Rule::per(500, 1))
        );
        let limits =
            RateLimits::parse(Some("actions.agent=10/s:20, reads.credential=off")).unwrap();
        assert_eq!(
            limits.get(Class::Actions, Dimension::Agent),
            Some(Rule {
                count: 10,
                period: Duration::from_secs(1),
                burst: 20
            })
        );
        assert_eq!(limits.get(Class::Reads, Dimension::Credential), None);
        assert_eq!(
            limits.get(Class::Reads, Dimension::Address),
            Some(Rule::per(6000, 60))
        );
        assert!(!RateLimits::parse(Some("off")).unwrap().any());
        let described = RateLimits::default().describe();
        assert_eq!(
            RateLimits::parse(Some(&described)).unwrap(),
            RateLimits::default()
        );
    }

    #[test]
    fn bad_rules_are_refused_with_a_reason() {
        for bad in [
            "actions.agent",
            "actions=5/s",
            "nope.agent=5/s",
            "actions.credential=5/s",
            "reads.agent=5/s",
            "reads.address=5",
            "reads.address=5/d",
            "reads.address=0/s",
            "reads.address=5/s:0",
            "reads.address=x/s",
        ] {
            assert!(RateLimits::parse(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn classes_follow_method_and_path() {
        use actix_web::http::Method;
        let of = |m: Method, p: &str| Class::of(&m, p);
        assert_eq!(
            of(Method::POST, "/api/v1/actions/verify"),
            Some(Class::Actions)
        );
        assert_eq!(
            of(Method::POST, "/api/v1/agents/a1/challenge"),
            Some(Class::AgentAuth)
        );
        assert_eq!(
            of(Method::POST, "/api/v1/agents/a1/verify"),
            Some(Class::AgentAuth)
        );
        assert_eq!(
            of(Method::POST, "/api/v1/agents/a1/keys/rotate"),
            Some(Class::AgentAuth)
        );
        assert_eq!(of(Method::POST, "/api/v1/auth/login"), Some(Class::Auth));
        assert_eq!(of(Method::GET, "/api/v1/auth/me"), Some(Class::Auth));
        assert_eq!(of(Method::POST, "/api/v1/agents"), Some(Class::Writes));
        assert_eq!(
            of(Method::POST, "/api/v1/agents/a1/suspend"),
            Some(Class::Writes)
        );
        assert_eq!(of(Method::GET, "/api/v1/agents"), Some(Class::Reads));
        assert_eq!(of(Method::HEAD, "/api/v1/agents"), Some(Class::Reads));
        assert_eq!(of(Method::GET, "/health"), None);
        assert_eq!(of(Method::GET, "/metrics"), None);
        assert_eq!(of(Method::GET, "/.well-known/jwks.json"), None);
        assert_eq!(of(Method::GET, "/docs"), None);
    }

    #[test]
    fn gcra_admits_the_burst_then_the_rate() {
        let store = LocalStore::default();
        let rule = Rule::per(10, 60); // one every 6 s, burst 10
        let key = Key::address(Class::Reads, "192.0.2.1".parse().unwrap());
        let keys = [ruled(key, rule)];
        let t0 = 100 * SECOND;
        for i in 0..10 {
            let v = store.check_at(&keys, t0);
            assert!(v.allowed, "request {i}");
            assert_eq!(v.remaining, 9 - i);
        }
        let refused = store.check_at(&keys, t0);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Duration::from_secs(6));
        assert_eq!(refused.reset, Duration::from_secs(60));
        assert_eq!((refused.quota, refused.window_secs), (10, 60));
        assert!(!store.check_at(&keys, t0 + 5 * SECOND).allowed);
        assert!(store.check_at(&keys, t0 + 6 * SECOND).allowed);
        assert!(!store.check_at(&keys, t0 + 6 * SECOND).allowed);
    }

    #[test]
    fn nothing_is_consumed_unless_every_key_admits() {
        let store = LocalStore::default();
        let address = Key::address(Class::Actions, "192.0.2.1".parse().unwrap());
        let a = Key::agent(Class::Actions, "agent-a");
        let b = Key::agent(Class::Actions, "agent-b");
        let agent_rule = Rule::per(2, 60);
        let address_rule = Rule::per(3, 60);
        let t = 100 * SECOND;
        let with = |agent| [ruled(address, address_rule), ruled(agent, agent_rule)];
        assert!(store.check_at(&with(a), t).allowed);
        assert!(store.check_at(&with(a), t).allowed);
        // Agent a is exhausted: refused, and the address is not charged for it.
        let refused = store.check_at(&with(a), t);
        assert!(!refused.allowed);
        assert_eq!(refused.policy, "actions.agent");
        assert!(store.check_at(&with(b), t).allowed);
        // Now the address (3) is exhausted too.
        let refused = store.check_at(&with(b), t);
        assert!(!refused.allowed);
        assert_eq!(refused.policy, "actions.address");
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let a = Key::address(Class::Reads, "2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = Key::address(Class::Reads, "2001:db8:1:2:bbbb::2".parse().unwrap());
        let c = Key::address(Class::Reads, "2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        let v4 = Key::address(Class::Reads, "192.0.2.7".parse().unwrap());
        let mapped = Key::address(Class::Reads, "::ffff:192.0.2.7".parse().unwrap());
        assert_eq!(v4, mapped);
    }

    #[test]
    fn replenished_keys_are_swept() {
        let store = LocalStore::default();
        let rule = Rule::per(1000, 1);
        let t = 100 * SECOND;
        let calls = SWEEP_EVERY * SHARDS as u32 * 2;
        for i in 0..calls {
            let key = Key::credential(Class::Reads, &i.to_le_bytes());
            store.check_at(&[ruled(key, rule)], t + u64::from(i) * 10_000);
        }
        // Each key is replenished 1 ms after its request; only recent ones remain.
        assert!(store.len() < (calls / 4) as usize, "{}", store.len());
    }

    #[test]
    fn keys_never_hold_the_credential() {
        let key = Key::credential(Class::Reads, b"aid_secret_value");
        assert!(!format!("{key:?}").contains("secret"));
        assert!(!key.redis_key("agentid").contains("secret"));
    }
}
