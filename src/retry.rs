//! The one retry policy of the program: capped exponential backoff
//! ([`Backoff::ceiling`]), drawn with full jitter, bounded by a deadline,
//! honouring a minimum wait the server asks for (`Retry-After`) with a widening
//! spread on top; and the one definition of a failure worth retrying
//! ([`Transient`]).
//!
//! Why full jitter: when a thousand pods start at once, every launcher hits the
//! agent and Infisical at the same instant; drawing each wait uniformly from
//! `[0, ceiling]` spreads the retries instead of moving the whole herd together.
//!
//! Why a loop of our own rather than `backon`: of `backon`, only its ceilings
//! (`initial * factor^n`, capped) were left in use. Its jitter is additive
//! (`[d, 2d)`) and, without its `std` feature, seeded the same in every process,
//! so the draw was already ours; the wait is reshaped by the deadline and the
//! server's minimum ([`next_wait`]); and the supervisor, a pure state machine
//! with time as an input, needs the same ceilings without an async retry loop.
//! One formula and a ten-line loop serve both, with one dependency less.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Exponential backoff: the n-th retry waits at most
/// [`ceiling(n)`](Self::ceiling) `= min(initial * factor^n, max)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Ceiling of the first wait.
    pub initial: Duration,
    /// Largest ceiling.
    pub max: Duration,
    /// Growth of the ceiling per attempt.
    pub factor: f32,
}

impl Backoff {
    /// The program's policy: 200 ms doubling up to 5 s. Short enough that a
    /// launcher notices the agent coming up within seconds, long enough that a
    /// fleet waiting on a down server does not hammer it.
    pub const DEFAULT: Self = Self {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(5),
        factor: 2.0,
    };

    /// The ceiling of the wait before retry `n` (0 for the first retry):
    /// `min(initial * factor^n, max)`, never overflowing.
    pub fn ceiling(&self, n: u32) -> Duration {
        let exponent = i32::try_from(n).unwrap_or(i32::MAX);
        let secs = self.initial.as_secs_f64() * f64::from(self.factor).powi(exponent);
        if secs.is_finite() && secs < self.max.as_secs_f64() {
            Duration::from_secs_f64(secs)
        } else {
            self.max
        }
    }

    /// The endless sequence of jittered waits (full jitter, seeded per process).
    pub fn waits(&self) -> impl Iterator<Item = Duration> + '_ {
        let mut rng = fastrand::Rng::new();
        (0..).map(move |n| jitter(self.ceiling(n), rng.f64()))
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// `ceiling * unit`, with `unit` in `[0, 1]` (clamped).
fn jitter(ceiling: Duration, unit: f64) -> Duration {
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

/// The time left for the last attempt when a backoff is shortened to fit
/// before the deadline.
pub const LAST_ATTEMPT: Duration = Duration::from_millis(500);

/// Largest spread added after a server's minimum wait (see [`next_wait`]).
pub const RATE_LIMIT_SPREAD_MAX: Duration = Duration::from_secs(30);

/// The wait before the next attempt, or `None` when that attempt could not
/// start before the deadline (then the caller gives up with the last error).
///
/// `proposed` is the jittered backoff, used when the server named no wait.
/// `min_wait` is what the server asked for (`Retry-After`, or the seconds in
/// a 429 message); `retry` counts the retries so far (0 before the first) and
/// `unit` is a uniform draw in `[0, 1]`.
///
/// A rate limiter tells every client of a herd the same "retry in 1 s", and
/// it is saturated: waiting exactly that long brings the herd back at one
/// instant, to be refused again. So after a server's minimum `m` the wait is
/// `m` plus a draw from `[0, min(m * 2^(retry + 5), 30 s)]` (`m` counted as at
/// least 1 s there, so "retry in 0 s" still spreads): the first refusal
/// already spreads the herd over 30 of the server's windows. A client cannot
/// know the herd's size; what it can control is how many retries land in an
/// already full window. A launcher admitted after a refusal then sends two
/// more requests (the listing and the revoke before exec), so the retries
/// must arrive at about a third of the limit: over 16 windows (the previous
/// spread, from when a launcher needed two requests) they arrived at about
/// half of it, and `bench/load.sh --release` (1,000 launchers against 100
/// requests/s) saw 400 to 470 refused retries, 0.13x to 0.16x beyond the
/// floor; over 30, simulated (`a_herd_retries_close_to_the_floor` below), 50
/// to 100. The floor is the refusals of first attempts, which no client
/// policy can avoid. The price is latency for a small herd: a launcher
/// refused once waits 16 s on average, not 9 s.
///
/// When the spread would pass the deadline but `m` alone would not, the wait
/// is `m`: one more attempt beats giving up early. Likewise a plain backoff
/// that would pass the deadline is shortened to leave [`LAST_ATTEMPT`] for a
/// final try. A server's minimum is never shortened.
pub fn next_wait(
    proposed: Duration,
    min_wait: Option<Duration>,
    retry: u32,
    unit: f64,
    remaining: Duration,
) -> Option<Duration> {
    let wait = match min_wait {
        None if proposed >= remaining && remaining > LAST_ATTEMPT * 2 => {
            remaining.saturating_sub(LAST_ATTEMPT)
        }
        None => proposed,
        Some(m) => {
            let widening = 1u32
                .checked_shl(retry.saturating_add(5))
                .unwrap_or(u32::MAX);
            let ceiling = m
                .max(Duration::from_secs(1))
                .saturating_mul(widening)
                .min(RATE_LIMIT_SPREAD_MAX);
            let spread = m.saturating_add(jitter(ceiling, unit));
            if spread < remaining {
                spread
            } else {
                m
            }
        }
    };
    (wait < remaining).then_some(wait)
}

/// `d` rounded down to whole milliseconds, for messages ("1s 750ms", not
/// "1s 749ms 424us 766ns").
pub fn to_millis(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What an error says about trying again: the one definition of "transient",
/// used by the retry loop below, the session (keep a still-valid token through
/// a failed renewal) and the supervisor's network side.
pub trait Transient {
    /// Whether a later attempt may succeed where this one failed (agent
    /// starting, 429, 5xx, timeouts, or retries that ran out of time for them).
    fn is_transient(&self) -> bool;
    /// A wait the other side asked for before the next attempt.
    fn min_wait(&self) -> Option<Duration> {
        None
    }
}

/// Why [`retry_until`] stopped without a result.
#[derive(Debug)]
pub enum Stop<E> {
    /// A non-transient error: retrying would not help.
    Fatal(E),
    /// The last transient error, when the deadline left no room for another attempt.
    Deadline(E),
}

impl<E> Stop<E> {
    /// The underlying error, whatever the reason.
    pub fn into_inner(self) -> E {
        match self {
            Self::Fatal(e) | Self::Deadline(e) => e,
        }
    }
}

/// Runs `attempt` until it succeeds, fails for good, or the deadline leaves no
/// room for another try. Each attempt receives its own time bound: at most
/// `per_attempt`, never past the deadline (the caller applies it, since only
/// the caller knows how to turn a timeout into its own error).
/// `on_retry(error, wait)` is called before each wait, for logging.
pub async fn retry_until<T, E, F, Fut>(
    backoff: &Backoff,
    deadline: Instant,
    per_attempt: Duration,
    mut attempt: F,
    mut on_retry: impl FnMut(&E, Duration),
) -> Result<T, Stop<E>>
where
    E: Transient,
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut rng = fastrand::Rng::new();
    let mut retries = 0u32;
    loop {
        let bound = per_attempt.min(deadline.saturating_duration_since(Instant::now()));
        let err = match attempt(bound).await {
            Ok(value) => return Ok(value),
            Err(err) if !err.is_transient() => return Err(Stop::Fatal(err)),
            Err(err) => err,
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let proposed = jitter(backoff.ceiling(retries), rng.f64());
        let Some(wait) = next_wait(proposed, err.min_wait(), retries, rng.f64(), remaining) else {
            return Err(Stop::Deadline(err));
        };
        on_retry(&err, wait);
        tokio::time::sleep(wait).await;
        retries = retries.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_zero_and_the_ceiling() {
        let c = Duration::from_secs(4);
        assert_eq!(jitter(c, 0.0), Duration::ZERO);
        assert_eq!(jitter(c, 1.0), c);
        assert_eq!(jitter(c, 0.5), Duration::from_secs(2));
        assert_eq!(jitter(c, 7.0), c, "out-of-range draws are clamped");
    }

    #[test]
    fn waits_are_capped_and_never_above_the_growing_ceiling() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(800),
            factor: 2.0,
        };
        let ceilings = [100u64, 200, 400, 800, 800, 800, 800];
        for (wait, ceiling) in b.waits().zip(ceilings) {
            assert!(
                wait <= Duration::from_millis(ceiling),
                "{wait:?} > {ceiling}ms"
            );
        }
        assert!(b.waits().take(1000).all(|w| w <= b.max));
    }

    #[test]
    fn ceilings_grow_by_the_factor_up_to_the_cap_and_never_overflow() {
        let ms = Duration::from_millis;
        let ceilings: Vec<_> = (0..7).map(|n| Backoff::DEFAULT.ceiling(n)).collect();
        assert_eq!(
            ceilings,
            [
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(3200),
                ms(5000),
                ms(5000)
            ]
        );
        assert_eq!(Backoff::DEFAULT.ceiling(u32::MAX), Backoff::DEFAULT.max);
    }

    #[test]
    fn durations_in_messages_are_whole_milliseconds() {
        let d = Duration::new(1, 749_424_766);
        assert_eq!(
            humantime::format_duration(to_millis(d)).to_string(),
            "1s 749ms"
        );
    }

    #[test]
    fn waits_are_spread_not_all_equal() {
        let waits: Vec<_> = Backoff::DEFAULT.waits().skip(5).take(50).collect();
        assert!(
            waits.iter().any(|w| *w != waits[0]),
            "full jitter spreads waits"
        );
    }

    #[test]
    fn next_wait_honours_the_server_minimum_and_the_deadline() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        // plain backoff
        assert_eq!(next_wait(s(1), None, 0, 0.7, s(10)), Some(s(1)));
        // Retry-After is a minimum; the spread after it starts at 16x the
        // minimum (at least 1 s), doubles per retry, and is capped at 30 s
        assert_eq!(next_wait(s(1), Some(s(3)), 0, 0.0, s(60)), Some(s(3)));
        assert_eq!(next_wait(s(1), Some(s(1)), 0, 1.0, s(60)), Some(s(31)));
        assert_eq!(next_wait(s(1), Some(s(1)), 0, 0.5, s(60)), Some(s(16)));
        assert_eq!(next_wait(s(1), Some(s(1)), 1, 1.0, s(60)), Some(s(31)));
        assert_eq!(next_wait(s(1), Some(s(1)), 2, 1.0, s(60)), Some(s(31)));
        assert_eq!(next_wait(s(1), Some(s(1)), 40, 0.5, s(60)), Some(s(16)));
        assert_eq!(next_wait(s(1), Some(s(2)), 0, 0.5, s(60)), Some(s(17)));
        assert_eq!(next_wait(s(1), Some(s(1)), 0, 0.25, s(60)), Some(ms(8500)));
        assert_eq!(next_wait(s(1), Some(s(60)), 0, 0.5, s(120)), Some(s(75)));
        // "retry in 0 s" from a saturated limiter still spreads the herd
        assert_eq!(next_wait(s(1), Some(s(0)), 0, 0.5, s(60)), Some(s(15)));
        // spread past the deadline, minimum not: wait just the minimum
        assert_eq!(next_wait(s(4), Some(s(5)), 0, 1.0, s(10)), Some(s(5)));
        // an attempt that could not start before the deadline is not made
        assert_eq!(next_wait(s(1), Some(s(30)), 0, 0.0, s(10)), None);
        assert_eq!(
            next_wait(Duration::ZERO, None, 0, 0.0, Duration::ZERO),
            None
        );
        // a backoff past the deadline leaves time for one last attempt…
        assert_eq!(next_wait(s(4), None, 0, 0.0, s(3)), Some(ms(2500)));
        assert_eq!(next_wait(s(10), None, 0, 0.0, s(10)), Some(ms(9500)));
        // …unless too little is left for one
        assert_eq!(next_wait(s(4), None, 0, 0.0, ms(900)), None);
    }

    /// A fleet restart, simulated with [`next_wait`] as the only policy: `n`
    /// launchers send their first request at instants spread uniformly over
    /// `arrive`; each needs three requests (login, then at once the listing,
    /// then at once the revoke before exec); the server admits `limit` per
    /// fixed 1 s window (opened by the first request after the previous one
    /// closed, as `@fastify/rate-limit` and the stand-in do) and answers the
    /// rest 429 "Retry-After: 1". A launcher gives up 60 s after its start
    /// (the default `--startup-timeout`); a revoke gives up after 2 s (the
    /// program then starts anyway). Returns (requests the server saw, first
    /// attempts of a call refused, launchers that gave up).
    fn herd(n: usize, limit: u32, arrive: Duration, seed: u64) -> (usize, usize, usize) {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let window = Duration::from_secs(1);
        let deadline = Duration::from_secs(60);
        let revoke_deadline = Duration::from_secs(2);
        let mut rng = fastrand::Rng::with_seed(seed);
        // (when, launcher, call (0 login, 1 listing, 2 revoke), retries of
        // this call, when the launcher started, when this call started)
        let mut queue = BinaryHeap::new();
        for i in 0..n {
            let start = arrive.mul_f64(rng.f64());
            queue.push(Reverse((start, i, 0u8, 0u32, start, start)));
        }
        let (mut opened, mut admitted) = (None::<Duration>, 0u32);
        let (mut requests, mut refused_first, mut gave_up) = (0, 0, 0);
        while let Some(Reverse((now, i, call, retries, started, call_started))) = queue.pop() {
            requests += 1;
            if opened.is_none_or(|o| now >= o + window) {
                opened = Some(now);
                admitted = 0;
            }
            admitted += 1;
            if admitted <= limit {
                if call < 2 {
                    let next = now + Duration::from_millis(5);
                    queue.push(Reverse((next, i, call + 1, 0, started, next)));
                }
                continue;
            }
            refused_first += usize::from(retries == 0);
            let remaining = if call == 2 {
                (call_started + revoke_deadline).saturating_sub(now)
            } else {
                (started + deadline).saturating_sub(now)
            };
            let proposed = Duration::from_millis(200);
            match next_wait(proposed, Some(window), retries, rng.f64(), remaining) {
                Some(wait) => {
                    let entry = (now + wait, i, call, retries + 1, started, call_started);
                    queue.push(Reverse(entry));
                }
                None => gave_up += usize::from(call < 2),
            }
        }
        (requests, refused_first, gave_up)
    }

    /// The load target (1,000 launchers against 100 requests/s) comes down to
    /// this policy: no client can avoid the refusals of first attempts (the
    /// herd knows nothing before its first answer), but every retry it sends
    /// into a full window is its own fault. With the first spread over 16
    /// windows (the previous policy, from when a launcher needed two
    /// requests) the refused retries cost 0.12x to 0.16x of the minimum here;
    /// now they must stay under 0.05x (the bound of the load test in
    /// tests/integration/faults.rs), and nobody gives up.
    #[test]
    fn a_herd_retries_close_to_the_floor() {
        for (n, limit, arrive_ms) in [(1000, 100, 2000), (1000, 100, 8000), (200, 50, 1000)] {
            for seed in 1..=3 {
                let arrive = Duration::from_millis(arrive_ms);
                let (seen, refused_first, gave_up) = herd(n, limit, arrive, seed);
                let minimum = 3 * n;
                let retries_refused = seen - minimum - refused_first;
                assert_eq!(gave_up, 0, "{n} launchers vs {limit}/s: some gave up");
                assert!(
                    retries_refused * 20 <= minimum,
                    "{n} launchers vs {limit}/s arriving over {arrive_ms} ms (seed {seed}): \
                     {seen} requests for a minimum of {minimum}, {refused_first} first \
                     attempts refused, {retries_refused} refused retries"
                );
            }
        }
    }

    #[derive(Debug)]
    struct E(bool);
    impl Transient for E {
        fn is_transient(&self) -> bool {
            self.0
        }
    }

    #[tokio::test]
    async fn retry_until_stops_at_once_on_a_fatal_error() {
        let mut calls = 0;
        let r: Result<(), _> = retry_until(
            &Backoff::DEFAULT,
            Instant::now() + Duration::from_secs(60),
            Duration::from_secs(1),
            |_| {
                calls += 1;
                async { Err(E(false)) }
            },
            |_, _| {},
        )
        .await;
        assert!(matches!(r, Err(Stop::Fatal(E(false)))));
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn retry_until_gives_up_with_the_last_error_at_the_deadline() {
        let fast = Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(5),
            factor: 2.0,
        };
        let mut calls = 0;
        let r: Result<(), _> = retry_until(
            &fast,
            Instant::now() + Duration::from_millis(200),
            Duration::from_secs(1),
            |bound| {
                calls += 1;
                assert!(bound <= Duration::from_millis(200));
                async { Err(E(true)) }
            },
            |_, _| {},
        )
        .await;
        assert!(matches!(r, Err(Stop::Deadline(E(true)))));
        assert!(calls > 1, "transient errors are retried");
    }

    #[tokio::test]
    async fn retry_until_returns_the_first_success() {
        let fast = Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(2),
            factor: 2.0,
        };
        let mut calls = 0;
        let r = retry_until(
            &fast,
            Instant::now() + Duration::from_secs(30),
            Duration::from_secs(1),
            |_| {
                calls += 1;
                let n = calls;
                async move {
                    if n < 3 {
                        Err(E(true))
                    } else {
                        Ok(n)
                    }
                }
            },
            |_, _| {},
        )
        .await;
        assert_eq!(r.unwrap(), 3);
    }
}
