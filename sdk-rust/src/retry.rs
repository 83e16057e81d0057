//! When and how long to wait before trying a request again.
//!
//! Only transient failures are retried: a connection that could not be made, a
//! timeout, `429`, and `502`/`503`/`504`. A denial (a `200` decision with
//! `allowed: false`) and every other `4xx` are answers, never retried. A request
//! that may have changed something on the server (see [`Idempotency`]) is retried
//! only when the server certainly did not process it (the connection was never
//! made, or `429`). Waits grow exponentially with full jitter, capped, and a
//! `Retry-After` from the server is honoured (capped by [`RetryPolicy::max_delay`]).

use std::time::Duration;

use rand::Rng;

use crate::Error;

/// How the SDK retries transient failures.
///
/// ```
/// use std::time::Duration;
/// let policy = agentid::RetryPolicy {
///     max_retries: 5,
///     base_delay: Duration::from_millis(100),
///     max_delay: Duration::from_secs(5),
/// };
/// assert_eq!(agentid::RetryPolicy::none().max_retries, 0);
/// # let _ = policy;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 disables retrying).
    pub max_retries: u32,
    /// The first wait's upper bound; each retry doubles it.
    pub base_delay: Duration,
    /// No wait is longer than this, including one asked for by `Retry-After`.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 3 retries, waits drawn from 0–200 ms, 0–400 ms, 0–800 ms, at most 10 s.
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// Never retry.
    pub fn none() -> RetryPolicy {
        RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        }
    }

    /// The wait before retry number `retry` (0 for the first retry) after `error`:
    /// the server's `Retry-After` when it sent one, else a random duration
    /// between zero and `base_delay · 2^retry` ("full jitter"); never more than
    /// `max_delay`.
    pub fn delay(&self, retry: u32, error: &Error) -> Duration {
        if let Error::Api {
            retry_after: Some(wait),
            ..
        } = error
        {
            return (*wait).min(self.max_delay);
        }
        let ceiling = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(retry.min(20)))
            .min(self.max_delay);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::thread_rng().gen_range(0..=nanos))
    }
}

/// Whether sending a request twice is harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idempotency {
    /// Reads, and writes whose repetition answers the same (registration per name
    /// and key, a fresh challenge, a re-signed action).
    Safe,
    /// Writes that may take effect twice (creating an API key or a user).
    Unsafe,
}

/// Whether `error` may be retried for a request of this kind.
pub(crate) fn should_retry(error: &Error, idempotency: Idempotency) -> bool {
    match idempotency {
        Idempotency::Safe => error.is_transient(),
        // The server certainly did not act: no connection, or refused as too many.
        Idempotency::Unsafe => match error {
            Error::Transport(e) => e.is_connect(),
            Error::Api { status, .. } => *status == 429,
            _ => false,
        },
    }
}

/// Runs `attempt` until it succeeds, fails permanently, or the policy's retries
/// are spent. `attempt` is called anew each time, so it can re-sign a statement
/// (a retried action must carry a new nonce).
pub(crate) async fn run<T, F, Fut>(
    policy: &RetryPolicy,
    idempotency: Idempotency,
    mut attempt: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let mut retry = 0;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if retry < policy.max_retries && should_retry(&error, idempotency) => {
                tokio::time::sleep(policy.delay(retry, &error)).await;
                retry += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentid_protocol::ErrorCode;

    fn api(status: u16, retry_after: Option<Duration>) -> Error {
        Error::Api {
            status,
            code: ErrorCode::Unknown,
            message: String::new(),
            request_id: String::new(),
            retry_after,
        }
    }

    #[test]
    fn delays_grow_with_jitter_and_are_capped() {
        let policy = RetryPolicy {
            max_retries: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        let e = api(503, None);
        for retry in 0..10 {
            let ceiling = Duration::from_millis(100 * 2u64.pow(retry)).min(Duration::from_secs(1));
            for _ in 0..50 {
                assert!(policy.delay(retry, &e) <= ceiling);
            }
        }
        // Jitter: 200 draws from 0..=400 ms are not all equal.
        let draws: std::collections::BTreeSet<_> = (0..200).map(|_| policy.delay(2, &e)).collect();
        assert!(draws.len() > 1);
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let policy = RetryPolicy::default();
        assert_eq!(
            policy.delay(0, &api(429, Some(Duration::from_secs(2)))),
            Duration::from_secs(2)
        );
        assert_eq!(
            policy.delay(0, &api(429, Some(Duration::from_secs(3600)))),
            policy.max_delay
        );
    }

    #[test]
    fn unsafe_requests_retry_only_when_nothing_happened() {
        assert!(should_retry(&api(429, None), Idempotency::Unsafe));
        assert!(!should_retry(&api(503, None), Idempotency::Unsafe));
        assert!(should_retry(&api(503, None), Idempotency::Safe));
        assert!(!should_retry(&api(400, None), Idempotency::Safe));
        assert!(!should_retry(&api(404, None), Idempotency::Safe));
        assert!(!should_retry(&api(500, None), Idempotency::Safe));
    }

    #[tokio::test]
    async fn runs_until_success_or_a_permanent_failure() {
        let policy = RetryPolicy {
            max_retries: 5,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        };
        let mut calls = 0;
        let out: Result<u32, Error> = run(&policy, Idempotency::Safe, || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(api(503, None))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(out.ok(), Some(3));

        let mut calls = 0;
        let out: Result<u32, Error> = run(&policy, Idempotency::Safe, || {
            calls += 1;
            async { Err(api(409, None)) }
        })
        .await;
        assert!(out.is_err());
        assert_eq!(calls, 1, "a 409 is never retried");

        let mut calls = 0;
        let out: Result<u32, Error> = run(&policy, Idempotency::Safe, || {
            calls += 1;
            async { Err(api(502, None)) }
        })
        .await;
        assert!(out.is_err());
        assert_eq!(calls, 6, "first attempt and max_retries retries");
    }
}
