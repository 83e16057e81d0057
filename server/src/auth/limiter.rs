//! Brute-force protection for password login: failure counts and growing lockouts,
//! per account and per client address, kept in this process's memory.
//!
//! A login calls [`LoginLimiter::check`] before looking at the password, then
//! [`LoginLimiter::record_failure`] or [`LoginLimiter::record_success`] after. The
//! current time is always an argument, so the behaviour is tested without sleeping.
//!
//! The account key is the trimmed, lowercased email, whether or not an account has
//! it, so unknown emails are limited exactly like known ones and the limiter reveals
//! nothing about which accounts exist. Only a SHA-256 digest of that email is kept,
//! never the email itself, and a password never reaches this module. Client addresses
//! are kept as given, except that an IPv6 address counts as its /64 network.
//!
//! The counters are per process: with several replicas, each enforces its own limits.
//!
//! This module must never see, log or store a password, and never block on anything
//! but its own short-lived mutex.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// How many calls pass between two sweeps of idle entries.
const PURGE_EVERY: u64 = 1024;

/// The most doublings a lockout can get; far beyond any sensible `max_lockout`.
const MAX_LEVEL: u32 = 32;

/// Limits for [`LoginLimiter`]. [`Default`] gives the documented values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimiterConfig {
    /// Failures of one account within `window` that start a lockout (10). 0 disables
    /// the account limit.
    pub max_failures_per_account: u32,
    /// Failures from one address within `window` that start a lockout (50). 0
    /// disables the address limit.
    pub max_failures_per_address: u32,
    /// The sliding window over which failures are counted (60 s).
    pub window: Duration,
    /// The first lockout of a key (60 s); each further one doubles.
    pub base_lockout: Duration,
    /// The longest lockout (1 h), and also the quiet time after which growth resets.
    pub max_lockout: Duration,
    /// The most keys tracked at once (100,000); past it the least recently active
    /// ones are forgotten.
    pub max_entries: usize,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        LimiterConfig {
            max_failures_per_account: 10,
            max_failures_per_address: 50,
            window: Duration::from_secs(60),
            base_lockout: Duration::from_secs(60),
            max_lockout: Duration::from_secs(3600),
            max_entries: 100_000,
        }
    }
}

impl LimiterConfig {
    /// How long lockout number `level + 1` of a key lasts: base × 2^level, capped.
    fn lockout(&self, level: u32) -> Duration {
        let factor = 1u32.checked_shl(level).unwrap_or(u32::MAX);
        self.base_lockout
            .saturating_mul(factor)
            .min(self.max_lockout)
    }

    /// Idle time after which an entry holds nothing worth keeping: its failures have
    /// left the window and its lockout level has decayed.
    fn idle_limit(&self) -> Duration {
        self.max_lockout.saturating_add(self.window)
    }
}

/// What is being limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    /// SHA-256 of the normalised email.
    Account([u8; 32]),
    /// A client address; IPv6 reduced to its /64.
    Address(IpAddr),
}

impl Key {
    fn account(account: &str) -> Key {
        let normalized = account.trim().to_lowercase();
        Key::Account(Sha256::digest(normalized.as_bytes()).into())
    }

    fn address(address: IpAddr) -> Key {
        Key::Address(match address.to_canonical() {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(bits))
            }
        })
    }
}

/// The state of one key.
#[derive(Debug)]
struct Entry {
    /// Failures still inside the window, oldest first; never more than the limit.
    failures: VecDeque<Instant>,
    /// End of the current lockout, if any.
    locked_until: Option<Instant>,
    /// Lockouts so far (since the last decay); the next one lasts base × 2^level.
    level: u32,
    /// The later of the last failure and the end of the last lockout: the start of
    /// the quiet period that resets `level`, and the age used for eviction.
    last_activity: Instant,
    /// Attempts admitted by [`LoginLimiter::begin`] whose password is still being
    /// verified: they count against the limit until they are recorded, so guesses
    /// sent concurrently cannot all slip past the check while bcrypt runs.
    in_flight: u32,
}

impl Entry {
    fn new(now: Instant) -> Entry {
        Entry {
            failures: VecDeque::new(),
            locked_until: None,
            level: 0,
            last_activity: now,
            in_flight: 0,
        }
    }

    /// Drops what time has made obsolete: failures out of the window, an ended
    /// lockout, and the level after a quiet period of `max_lockout`.
    fn refresh(&mut self, now: Instant, config: &LimiterConfig) {
        while let Some(&oldest) = self.failures.front() {
            if now.saturating_duration_since(oldest) >= config.window {
                self.failures.pop_front();
            } else {
                break;
            }
        }
        if self.locked_until.is_some_and(|until| until <= now) {
            self.locked_until = None;
        }
        if self.locked_until.is_none()
            && now.saturating_duration_since(self.last_activity) >= config.max_lockout
        {
            self.level = 0;
        }
    }

    /// Time left on the lockout, if locked at `now`.
    fn remaining(&self, now: Instant) -> Option<Duration> {
        self.locked_until
            .map(|until| until.saturating_duration_since(now))
            .filter(|left| !left.is_zero())
    }

    /// Records one failure; returns the lockout it starts or extends.
    fn fail(&mut self, now: Instant, max: u32, config: &LimiterConfig) -> Option<Duration> {
        self.refresh(now, config);
        if let Some(until) = self.locked_until.filter(|until| *until > now) {
            // A failure that raced past `check` while the lockout began: extend the
            // lockout by its own length from now, without growing it further.
            let length = config.lockout(self.level.saturating_sub(1));
            let extended = later(now, length).max(until);
            self.locked_until = Some(extended);
            self.last_activity = self.last_activity.max(extended);
            return Some(extended.saturating_duration_since(now));
        }
        self.failures.push_back(now);
        self.last_activity = self.last_activity.max(now);
        if self.failures.len() < max as usize {
            return None;
        }
        let length = config.lockout(self.level);
        let until = later(now, length);
        self.level = (self.level + 1).min(MAX_LEVEL);
        self.failures.clear();
        self.locked_until = Some(until);
        self.last_activity = self.last_activity.max(until);
        Some(until.saturating_duration_since(now))
    }

    /// Whether the entry is indistinguishable from no entry at all.
    fn is_idle(&self, now: Instant, config: &LimiterConfig) -> bool {
        self.in_flight == 0
            && self.remaining(now).is_none()
            && now.saturating_duration_since(self.last_activity) >= config.idle_limit()
    }

    fn is_empty(&self) -> bool {
        self.failures.is_empty()
            && self.locked_until.is_none()
            && self.level == 0
            && self.in_flight == 0
    }
}

/// `now + length`, or as far as an `Instant` reaches.
fn later(now: Instant, length: Duration) -> Instant {
    now.checked_add(length)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(now)
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<Key, Entry>,
    calls: u64,
}

/// What a refused attempt is told to wait while the limit is taken up by attempts
/// still in flight (they settle within one password hash).
const IN_FLIGHT_RETRY: Duration = Duration::from_secs(1);

/// A login attempt admitted by [`LoginLimiter::begin`]: it holds its place in the
/// limits until it is resolved with [`Attempt::failed`] or [`Attempt::succeeded`];
/// dropped unresolved (an error before the password was judged), it just gives the
/// place back.
#[derive(Debug)]
pub struct Attempt<'a> {
    limiter: &'a LoginLimiter,
    account: String,
    address: Option<IpAddr>,
    keys: [Option<Key>; 2],
    settled: bool,
}

impl Attempt<'_> {
    /// The password was wrong (or the email unknown): see
    /// [`LoginLimiter::record_failure`].
    pub fn failed(mut self, now: Instant) -> Option<Duration> {
        self.settled = true;
        self.limiter.release(&self.keys);
        self.limiter
            .record_failure(&self.account, self.address, now)
    }

    /// The password was right: see [`LoginLimiter::record_success`].
    pub fn succeeded(mut self, now: Instant) {
        self.settled = true;
        self.limiter.release(&self.keys);
        self.limiter
            .record_success(&self.account, self.address, now);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.limiter.release(&self.keys);
        }
    }
}

/// In-process login limiter; share one per server (it is `Send + Sync`).
pub struct LoginLimiter {
    config: LimiterConfig,
    state: Mutex<State>,
}

impl fmt::Debug for LoginLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginLimiter")
            .field("config", &self.config)
            .field("tracked_keys", &self.tracked_keys())
            .finish()
    }
}

impl Default for LoginLimiter {
    fn default() -> Self {
        LoginLimiter::new(LimiterConfig::default())
    }
}

impl LoginLimiter {
    pub fn new(config: LimiterConfig) -> Self {
        LoginLimiter {
            config,
            state: Mutex::new(State::default()),
        }
    }

    pub fn config(&self) -> &LimiterConfig {
        &self.config
    }

    /// Called before the password is verified: `Err(retry_after)` while the account
    /// or the address is locked out, whatever the password. Changes no counter.
    pub fn check(
        &self,
        account: &str,
        address: Option<IpAddr>,
        now: Instant,
    ) -> Result<(), Duration> {
        let keys = self.keys(account, address);
        let mut state = self.lock();
        self.tick(&mut state, now);
        self.wait(&mut state, &keys, now, false).map_or(Ok(()), Err)
    }

    /// Called before the password is verified, like [`check`](Self::check), and
    /// also *reserves* the attempt: until the returned [`Attempt`] is resolved (or
    /// dropped), it counts against the account's and the address's limits as if it
    /// had failed. So however many guesses arrive at once, no more passwords are
    /// verified than the limit allows; the surplus is refused with a short
    /// `Retry-After` (the attempts in flight settle within a password hash).
    pub fn begin(
        &self,
        account: &str,
        address: Option<IpAddr>,
        now: Instant,
    ) -> Result<Attempt<'_>, Duration> {
        let keys = self.keys(account, address);
        let mut state = self.lock();
        self.tick(&mut state, now);
        if let Some(wait) = self.wait(&mut state, &keys, now, true) {
            return Err(wait);
        }
        for key in keys.iter().flatten() {
            let entry = self.entry(&mut state, *key, now);
            entry.in_flight = entry.in_flight.saturating_add(1);
        }
        Ok(Attempt {
            limiter: self,
            account: account.to_owned(),
            address,
            keys,
            settled: false,
        })
    }

    /// How long an attempt on `keys` must wait: the longest lockout among them, or,
    /// with `in_flight`, [`IN_FLIGHT_RETRY`] when attempts still being judged already
    /// take up a key's remaining allowance. `None`: it may go ahead.
    fn wait(
        &self,
        state: &mut State,
        keys: &[Option<Key>; 2],
        now: Instant,
        in_flight: bool,
    ) -> Option<Duration> {
        let limits = [
            self.config.max_failures_per_account,
            self.config.max_failures_per_address,
        ];
        let mut wait: Option<Duration> = None;
        for (key, max) in keys.iter().zip(limits) {
            let Some(entry) = key.as_ref().and_then(|k| state.entries.get_mut(k)) else {
                continue;
            };
            entry.refresh(now, &self.config);
            let left = entry.remaining(now).or_else(|| {
                (in_flight && entry.failures.len() + entry.in_flight as usize >= max as usize)
                    .then_some(IN_FLIGHT_RETRY)
            });
            if let Some(left) = left {
                wait = Some(wait.map_or(left, |w| w.max(left)));
            }
        }
        wait
    }

    /// Gives back the reservation of an attempt.
    fn release(&self, keys: &[Option<Key>; 2]) {
        let mut state = self.lock();
        for key in keys.iter().flatten() {
            if let Some(entry) = state.entries.get_mut(key) {
                entry.in_flight = entry.in_flight.saturating_sub(1);
            }
        }
    }

    /// Records a wrong password (or an unknown email). Returns `Some(retry_after)`
    /// when this failure starts or extends a lockout of the account or the address.
    ///
    /// The failure that starts a lockout (the 10th for an account) is still answered
    /// as a wrong password (the caller may add `Retry-After`); every attempt after it
    /// is refused by [`check`](Self::check) until the lockout ends.
    pub fn record_failure(
        &self,
        account: &str,
        address: Option<IpAddr>,
        now: Instant,
    ) -> Option<Duration> {
        let [account_key, address_key] = self.keys(account, address);
        let mut state = self.lock();
        self.tick(&mut state, now);
        let mut wait: Option<Duration> = None;
        let limits = [
            (account_key, self.config.max_failures_per_account),
            (address_key, self.config.max_failures_per_address),
        ];
        for (key, max) in limits {
            let Some(key) = key else { continue };
            if max == 0 {
                continue;
            }
            if let Some(left) = self
                .entry(&mut state, key, now)
                .fail(now, max, &self.config)
            {
                wait = Some(wait.map_or(left, |w| w.max(left)));
            }
        }
        wait
    }

    /// Records a correct password: forgets the account's failures in the window.
    /// Its lockout level is kept (it decays with time), and the address's failures
    /// are kept too, so one good account cannot launder guesses at others.
    pub fn record_success(&self, account: &str, _address: Option<IpAddr>, now: Instant) {
        let key = Key::account(account);
        let mut state = self.lock();
        self.tick(&mut state, now);
        if let Some(entry) = state.entries.get_mut(&key) {
            entry.refresh(now, &self.config);
            entry.failures.clear();
            if entry.is_empty() {
                state.entries.remove(&key);
            }
        }
    }

    /// How many accounts and addresses are tracked right now.
    pub fn tracked_keys(&self) -> usize {
        self.lock().entries.len()
    }

    /// The keys for an attempt; `None` where that limit does not apply.
    fn keys(&self, account: &str, address: Option<IpAddr>) -> [Option<Key>; 2] {
        [
            (self.config.max_failures_per_account > 0).then(|| Key::account(account)),
            address
                .filter(|_| self.config.max_failures_per_address > 0)
                .map(Key::address),
        ]
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a call and sweeps idle entries every [`PURGE_EVERY`] calls.
    fn tick(&self, state: &mut State, now: Instant) {
        state.calls += 1;
        if state.calls >= PURGE_EVERY {
            state.calls = 0;
            self.purge(state, now);
        }
    }

    fn purge(&self, state: &mut State, now: Instant) {
        state
            .entries
            .retain(|_, entry| !entry.is_idle(now, &self.config));
    }

    /// The entry for `key`, created if needed, making room within `max_entries`.
    fn entry<'s>(&self, state: &'s mut State, key: Key, now: Instant) -> &'s mut Entry {
        if !state.entries.contains_key(&key) && state.entries.len() >= self.config.max_entries {
            self.make_room(state, now);
        }
        match state.entries.entry(key) {
            MapEntry::Occupied(found) => found.into_mut(),
            MapEntry::Vacant(slot) => slot.insert(Entry::new(now)),
        }
    }

    /// Drops idle entries, then if still full the least recently active ones (a
    /// batch of about 1/64 of the capacity, so a flood does not sort on every call).
    fn make_room(&self, state: &mut State, now: Instant) {
        self.purge(state, now);
        let cap = self.config.max_entries.max(1);
        if state.entries.len() < cap {
            return;
        }
        let excess = state.entries.len() + 1 - cap;
        let evict = excess.max(cap / 64).min(state.entries.len());
        let mut ages: Vec<(Instant, Key)> = state
            .entries
            .iter()
            .map(|(key, entry)| (entry.last_activity, *key))
            .collect();
        if evict < ages.len() {
            ages.select_nth_unstable_by_key(evict, |(at, _)| *at);
        }
        for (_, key) in ages.iter().take(evict) {
            state.entries.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);
    const EMAIL: &str = "alice@example.com";
    const ADDR: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));

    fn limiter() -> LoginLimiter {
        LoginLimiter::new(LimiterConfig::default())
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// Fails `n` times one second apart starting at `start`; returns the last result.
    fn fail_n(
        limiter: &LoginLimiter,
        account: &str,
        address: Option<IpAddr>,
        start: Instant,
        n: u64,
    ) -> Option<Duration> {
        let mut last = None;
        for i in 0..n {
            let at = start + SECOND * i as u32;
            assert_eq!(limiter.check(account, address, at), Ok(()), "attempt {i}");
            last = limiter.record_failure(account, address, at);
        }
        last
    }

    #[test]
    fn the_eleventh_attempt_within_a_minute_is_refused() {
        let limiter = limiter();
        let t0 = Instant::now();
        for i in 0..9u32 {
            let at = t0 + SECOND * i;
            assert_eq!(limiter.check(EMAIL, ADDR, at), Ok(()));
            assert_eq!(limiter.record_failure(EMAIL, ADDR, at), None, "failure {i}");
        }
        // The 10th failure is still answered normally, and starts a 60 s lockout.
        let tenth = t0 + secs(9);
        assert_eq!(limiter.check(EMAIL, ADDR, tenth), Ok(()));
        assert_eq!(limiter.record_failure(EMAIL, ADDR, tenth), Some(secs(60)));
        // The 11th attempt is refused before any password check, right or wrong.
        assert_eq!(limiter.check(EMAIL, ADDR, tenth + SECOND), Err(secs(59)));
        assert_eq!(limiter.check(EMAIL, ADDR, tenth + secs(59)), Err(SECOND));
        // The lockout ends on time and a fresh window starts.
        assert_eq!(limiter.check(EMAIL, ADDR, tenth + secs(60)), Ok(()));
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let limiter = limiter();
        let t0 = Instant::now();
        // Nine failures, then a pause: they slide out of the window one by one.
        assert_eq!(fail_n(&limiter, EMAIL, None, t0, 9), None);
        let later = t0 + secs(70);
        assert_eq!(fail_n(&limiter, EMAIL, None, later, 9), None);
        // 9 in the last 60 s now; one more makes ten.
        assert_eq!(
            limiter.record_failure(EMAIL, None, later + secs(9)),
            Some(secs(60))
        );
    }

    #[test]
    fn the_window_slides() {
        let limiter = limiter();
        let t0 = Instant::now();
        // Failures at 0, 10, ..., 90 s: never ten within any 60 s.
        for i in 0..10u32 {
            assert_eq!(limiter.record_failure(EMAIL, None, t0 + secs(10) * i), None);
        }
        // At 91 s the last minute holds the six failures at 40..=90 s, so the fourth
        // quick failure makes ten.
        let t1 = t0 + secs(91);
        for i in 0..3u32 {
            assert_eq!(limiter.record_failure(EMAIL, None, t1 + SECOND * i), None);
        }
        assert_eq!(
            limiter.record_failure(EMAIL, None, t1 + secs(3)),
            Some(secs(60))
        );
    }

    #[test]
    fn lockouts_double_up_to_the_cap() {
        let limiter = limiter();
        let mut now = Instant::now();
        let mut lengths = Vec::new();
        for _ in 0..9 {
            let lockout = fail_n(&limiter, EMAIL, None, now, 10).unwrap();
            lengths.push(lockout.as_secs());
            now += secs(9) + lockout;
        }
        assert_eq!(lengths, [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
    }

    #[test]
    fn growth_decays_after_a_quiet_hour() {
        let limiter = limiter();
        let t0 = Instant::now();
        assert_eq!(fail_n(&limiter, EMAIL, None, t0, 10), Some(secs(60)));
        let end = t0 + secs(9) + secs(60);
        assert_eq!(fail_n(&limiter, EMAIL, None, end, 10), Some(secs(120)));
        let end = end + secs(9) + secs(120);
        // Less than an hour of quiet after the lockout: still growing.
        let soon = end + secs(3599);
        assert_eq!(fail_n(&limiter, EMAIL, None, soon, 10), Some(secs(240)));
        let end = soon + secs(9) + secs(240);
        // A full hour of quiet after the end of the lockout: back to the base.
        let quiet = end + secs(3600);
        assert_eq!(fail_n(&limiter, EMAIL, None, quiet, 10), Some(secs(60)));
    }

    #[test]
    fn failures_below_the_limit_delay_the_decay() {
        let limiter = limiter();
        let t0 = Instant::now();
        assert_eq!(fail_n(&limiter, EMAIL, None, t0, 10), Some(secs(60)));
        let end = t0 + secs(69);
        // One failure half an hour later restarts the quiet period.
        let mid = end + secs(1800);
        assert_eq!(limiter.record_failure(EMAIL, None, mid), None);
        let after = end + secs(3600);
        assert_eq!(fail_n(&limiter, EMAIL, None, after, 10), Some(secs(120)));
    }

    #[test]
    fn success_clears_the_failure_count_but_not_the_level() {
        let limiter = limiter();
        let t0 = Instant::now();
        assert_eq!(fail_n(&limiter, EMAIL, None, t0, 9), None);
        limiter.record_success(EMAIL, None, t0 + secs(9));
        assert_eq!(fail_n(&limiter, EMAIL, None, t0 + secs(10), 9), None);
        assert_eq!(
            limiter.record_failure(EMAIL, None, t0 + secs(19)),
            Some(secs(60))
        );
        let end = t0 + secs(79);
        limiter.record_success(EMAIL, None, end);
        // The level survived the success: the next lockout is twice as long.
        assert_eq!(fail_n(&limiter, EMAIL, None, end, 10), Some(secs(120)));
    }

    #[test]
    fn success_does_not_clear_the_address() {
        let limiter = limiter();
        let t0 = Instant::now();
        for i in 0..49u32 {
            let account = format!("user{i}@example.com");
            assert_eq!(limiter.record_failure(&account, ADDR, t0), None);
        }
        limiter.record_success("mine@example.com", ADDR, t0);
        assert_eq!(
            limiter.record_failure("user50@example.com", ADDR, t0),
            Some(secs(60))
        );
    }

    #[test]
    fn the_account_key_is_the_normalised_email() {
        let limiter = limiter();
        let t0 = Instant::now();
        for (i, spelling) in [
            "alice@example.com",
            " Alice@Example.com",
            "ALICE@EXAMPLE.COM ",
            "\talice@example.COM\n",
        ]
        .iter()
        .cycle()
        .take(9)
        .enumerate()
        {
            assert_eq!(
                limiter.record_failure(spelling, None, t0 + secs(i as u64)),
                None
            );
        }
        assert_eq!(
            limiter.record_failure("AlIcE@eXaMpLe.CoM", None, t0 + secs(9)),
            Some(secs(60))
        );
        assert!(limiter
            .check("alice@example.com", None, t0 + secs(10))
            .is_err());
        assert_eq!(
            limiter.check("bob@example.com", None, t0 + secs(10)),
            Ok(())
        );
    }

    #[test]
    fn unknown_and_known_emails_are_limited_alike() {
        // The limiter has no notion of existence: any string is an account key.
        let limiter = limiter();
        let t0 = Instant::now();
        assert_eq!(
            fail_n(&limiter, "nobody@nowhere.invalid", None, t0, 10),
            Some(secs(60))
        );
        assert!(limiter
            .check("nobody@nowhere.invalid", None, t0 + secs(10))
            .is_err());
    }

    #[test]
    fn an_address_is_locked_after_fifty_failures_on_any_accounts() {
        let limiter = limiter();
        let t0 = Instant::now();
        for i in 0..49u32 {
            let account = format!("user{i}@example.com");
            assert_eq!(limiter.check(&account, ADDR, t0), Ok(()));
            assert_eq!(limiter.record_failure(&account, ADDR, t0), None);
        }
        assert_eq!(
            limiter.record_failure("user49@example.com", ADDR, t0),
            Some(secs(60))
        );
        // Every account is refused from that address, none from another one.
        assert_eq!(
            limiter.check("fresh@example.com", ADDR, t0 + SECOND),
            Err(secs(59))
        );
        let other = Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)));
        assert_eq!(
            limiter.check("fresh@example.com", other, t0 + SECOND),
            Ok(())
        );
        assert_eq!(
            limiter.check("fresh@example.com", None, t0 + SECOND),
            Ok(())
        );
    }

    #[test]
    fn ipv6_addresses_count_per_64_and_mapped_ipv4_as_ipv4() {
        let limiter = limiter();
        let t0 = Instant::now();
        let base: Ipv6Addr = "2001:db8:1:2::".parse().unwrap();
        for i in 0..50u32 {
            let address = IpAddr::V6(Ipv6Addr::from(u128::from(base) | u128::from(i + 1)));
            limiter.record_failure(&format!("u{i}@example.com"), Some(address), t0);
        }
        let same_net: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        let other_net: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(limiter.check("x@example.com", Some(same_net), t0).is_err());
        assert_eq!(limiter.check("x@example.com", Some(other_net), t0), Ok(()));

        assert_eq!(
            Key::address("::ffff:192.0.2.1".parse().unwrap()),
            Key::address("192.0.2.1".parse().unwrap())
        );
    }

    #[test]
    fn the_lockout_reported_is_the_longer_of_account_and_address() {
        let limiter = limiter();
        let mut now = Instant::now();
        // Lock the account twice, so that its next lockout lasts 240 s...
        for _ in 0..2 {
            let lockout = fail_n(&limiter, EMAIL, None, now, 10).unwrap();
            now += secs(9) + lockout;
        }
        assert_eq!(fail_n(&limiter, EMAIL, None, now, 9), None);
        // ...and bring the address to the brink of its first (60 s) lockout.
        for i in 0..49u32 {
            let account = format!("other{i}@example.com");
            assert_eq!(limiter.record_failure(&account, ADDR, now), None);
        }
        // One failure locks both; the answer is the longer wait.
        let at = now + secs(9);
        assert_eq!(limiter.record_failure(EMAIL, ADDR, at), Some(secs(240)));
        assert_eq!(limiter.check(EMAIL, ADDR, at + SECOND), Err(secs(239)));
        assert_eq!(
            limiter.check("other0@example.com", ADDR, at + SECOND),
            Err(secs(59))
        );
        assert_eq!(limiter.check(EMAIL, None, at + secs(100)), Err(secs(140)));
    }

    #[test]
    fn a_failure_racing_into_a_lockout_extends_it_without_growing_it() {
        let limiter = limiter();
        let t0 = Instant::now();
        assert_eq!(fail_n(&limiter, EMAIL, None, t0, 10), Some(secs(60)));
        // A request that passed `check` just before the lockout fails 5 s into it.
        let raced = t0 + secs(14);
        assert_eq!(limiter.record_failure(EMAIL, None, raced), Some(secs(60)));
        assert_eq!(limiter.check(EMAIL, None, raced + secs(59)), Err(SECOND));
        assert_eq!(limiter.check(EMAIL, None, raced + secs(60)), Ok(()));
        // The next real lockout is the second one: 120 s, not 240 s.
        assert_eq!(
            fail_n(&limiter, EMAIL, None, raced + secs(60), 10),
            Some(secs(120))
        );
    }

    #[test]
    fn check_changes_nothing() {
        let limiter = limiter();
        let t0 = Instant::now();
        for i in 0..100u32 {
            assert_eq!(limiter.check(EMAIL, ADDR, t0 + SECOND * i), Ok(()));
        }
        assert_eq!(limiter.tracked_keys(), 0);
    }

    #[test]
    fn zero_disables_a_limit() {
        let limiter = LoginLimiter::new(LimiterConfig {
            max_failures_per_account: 0,
            max_failures_per_address: 0,
            ..LimiterConfig::default()
        });
        let t0 = Instant::now();
        assert_eq!(fail_n(&limiter, EMAIL, ADDR, t0, 100), None);
        assert_eq!(limiter.tracked_keys(), 0);
    }

    #[test]
    fn idle_entries_are_purged() {
        let limiter = limiter();
        let t0 = Instant::now();
        // Lock one account out; leave another with one failure.
        fail_n(&limiter, EMAIL, ADDR, t0, 10);
        limiter.record_failure("bob@example.com", None, t0);
        assert_eq!(limiter.tracked_keys(), 3);
        // Long after everything decayed, enough calls trigger a sweep.
        let late = t0 + secs(10) + secs(60) + secs(3600) + secs(60);
        for _ in 0..PURGE_EVERY {
            let _ = limiter.check("someone@example.com", None, late);
        }
        assert_eq!(limiter.tracked_keys(), 0);
    }

    #[test]
    fn entries_still_useful_are_not_purged() {
        let limiter = limiter();
        let t0 = Instant::now();
        fail_n(&limiter, EMAIL, None, t0, 10);
        // The lockout ended at 69 s; the level decays only at 69 + 3600 s.
        let before_decay = t0 + secs(69) + secs(3599);
        for _ in 0..PURGE_EVERY {
            let _ = limiter.check("someone@example.com", None, before_decay);
        }
        assert_eq!(limiter.tracked_keys(), 1);
        assert_eq!(
            fail_n(&limiter, EMAIL, None, before_decay, 10),
            Some(secs(120))
        );
    }

    #[test]
    fn the_number_of_entries_is_capped_evicting_the_oldest() {
        let limiter = LoginLimiter::new(LimiterConfig {
            max_entries: 128,
            ..LimiterConfig::default()
        });
        let t0 = Instant::now();
        // Lock an account first (its activity lies in the future, at the lockout end).
        fail_n(&limiter, EMAIL, None, t0, 10);
        for i in 0..1000u32 {
            let at = t0 + secs(10) + Duration::from_millis(u64::from(i));
            limiter.record_failure(&format!("user{i}@example.com"), None, at);
            assert!(limiter.tracked_keys() <= 128);
        }
        // The locked account survived; the oldest one-off failures did not.
        assert!(limiter.check(EMAIL, None, t0 + secs(11)).is_err());
        let state = limiter.lock();
        assert!(state
            .entries
            .contains_key(&Key::account("user999@example.com")));
        assert!(!state
            .entries
            .contains_key(&Key::account("user0@example.com")));
    }

    #[test]
    fn time_going_backwards_does_not_panic() {
        let limiter = limiter();
        let t0 = Instant::now() + secs(100);
        fail_n(&limiter, EMAIL, ADDR, t0, 10);
        let earlier = t0 - secs(50);
        assert!(limiter.check(EMAIL, ADDR, earlier).is_err());
        let _ = limiter.record_failure(EMAIL, ADDR, earlier);
        limiter.record_success(EMAIL, ADDR, earlier);
    }

    #[test]
    fn debug_shows_no_keys() {
        let limiter = limiter();
        limiter.record_failure(EMAIL, ADDR, Instant::now());
        let shown = format!("{limiter:?}");
        assert!(!shown.contains("alice"), "{shown}");
        assert!(!shown.contains("192.0.2.1"), "{shown}");
        assert!(shown.contains("tracked_keys: 2"), "{shown}");
    }

    #[test]
    fn limiter_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<LoginLimiter>();
    }

    #[test]
    fn concurrent_attempts_count_while_their_passwords_are_checked() {
        let limiter = limiter();
        let now = Instant::now();
        // Thirty guesses at one account arrive before any password is judged: only
        // as many as the limit allows get to a password check.
        let admitted: Vec<Attempt<'_>> = (0..30)
            .filter_map(|i| {
                let address = Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, i)));
                limiter.begin(EMAIL, address, now).ok()
            })
            .collect();
        assert_eq!(admitted.len(), 10);
        assert_eq!(
            limiter.begin(EMAIL, ADDR, now).map(|_| ()),
            Err(IN_FLIGHT_RETRY)
        );
        // They all fail: the account is locked out, as if they had come one by one.
        let lockouts: Vec<Option<Duration>> = admitted.into_iter().map(|a| a.failed(now)).collect();
        assert_eq!(lockouts.iter().filter(|l| l.is_some()).count(), 1);
        assert_eq!(limiter.check(EMAIL, ADDR, now), Err(secs(60)));

        // Per address too: 60 guesses from one address at 60 accounts.
        let limiter = LoginLimiter::new(LimiterConfig::default());
        let admitted: Vec<Attempt<'_>> = (0..60)
            .filter_map(|i| limiter.begin(&format!("u{i}@example.com"), ADDR, now).ok())
            .collect();
        assert_eq!(admitted.len(), 50);
    }

    #[test]
    fn an_unresolved_attempt_gives_its_place_back() {
        let limiter = limiter();
        let now = Instant::now();
        for _ in 0..100 {
            // An error before the password was judged (dropped without a verdict).
            drop(limiter.begin(EMAIL, ADDR, now).unwrap());
        }
        let attempt = limiter.begin(EMAIL, ADDR, now).unwrap();
        attempt.succeeded(now);
        assert_eq!(limiter.check(EMAIL, ADDR, now), Ok(()));
        assert_eq!(limiter.tracked_keys(), 1, "the address entry only");
    }
}
