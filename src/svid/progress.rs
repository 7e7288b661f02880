//! Progress while a source waits: one log line every [`PROGRESS_EVERY`] saying
//! what it still waits for and how much of `--startup-timeout` has gone, so a
//! launcher waiting on an agent that will never come is not silent for a minute.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often a waiting source says that it still waits.
pub(super) const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Runs `work` to its end, calling `tick` with the time elapsed every `every`
/// while it runs (also while one attempt hangs, e.g. on a slow attestation).
pub(super) async fn with_progress<T>(
    work: impl Future<Output = T>,
    every: Duration,
    mut tick: impl FnMut(Duration),
) -> T {
    let started = Instant::now();
    let mut ticks = tokio::time::interval_at(started + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(work);
    loop {
        tokio::select! {
            biased;
            out = &mut work => return out,
            _ = ticks.tick() => tick(started.elapsed()),
        }
    }
}

/// `20 s of 60 s`: whole seconds waited and the wait allowed, rounded (it is
/// measured from a deadline set a moment before, so 60 s arrives as 59.99 s).
pub(super) fn elapsed_of(elapsed: Duration, total: Duration) -> String {
    let total = (total + Duration::from_millis(500)).as_secs();
    format!("{} s of {total} s", elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_of_counts_whole_seconds() {
        assert_eq!(
            elapsed_of(Duration::from_millis(20_400), Duration::from_millis(59_990)),
            "20 s of 60 s"
        );
    }

    #[tokio::test]
    async fn ticks_come_while_the_work_runs_and_never_before_a_period() {
        let every = Duration::from_millis(40);
        let mut seen = Vec::new();
        let out = with_progress(
            async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                7
            },
            every,
            |elapsed| seen.push(elapsed),
        )
        .await;
        assert_eq!(out, 7);
        assert!(!seen.is_empty(), "no progress during 300 ms");
        assert!(seen[0] >= every, "{seen:?}");
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");

        let mut none = 0;
        let out = with_progress(async { 8 }, every, |_| none += 1).await;
        assert_eq!(
            (out, none),
            (8, 0),
            "work that is done at once logs nothing"
        );
    }
}
