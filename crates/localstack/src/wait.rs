//! Bounded polling of conditions.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// A polled condition did not hold within its time limit.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {timeout:?} waiting for {what}")]
pub struct WaitTimeout {
    /// What was awaited, as the caller described it.
    pub what: String,
    /// The limit that passed.
    pub timeout: Duration,
}

/// Polls `condition` every `poll_interval` until it returns true, or fails after `timeout`.
///
/// `what` names the condition in the timeout error, e.g. "key note for 1111 on the broker".
/// The condition runs at least once, even with a zero timeout.
pub async fn await_condition<F, Fut>(
    what: &str,
    timeout: Duration,
    poll_interval: Duration,
    mut condition: F,
) -> Result<(), WaitTimeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    await_value(what, timeout, poll_interval, || {
        let check = condition();
        async move { check.await.then_some(()) }
    })
    .await
}

/// Polls `probe` every `poll_interval` until it returns `Some`, and returns that value; fails
/// after `timeout`.
pub async fn await_value<T, F, Fut>(
    what: &str,
    timeout: Duration,
    poll_interval: Duration,
    mut probe: F,
) -> Result<T, WaitTimeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        // A probe that hangs (e.g. a connect to a black hole) must not outlive the deadline.
        let remaining = deadline.saturating_duration_since(Instant::now());
        if let Ok(Some(value)) = tokio::time::timeout(remaining.max(poll_interval), probe()).await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(WaitTimeout {
                what: what.to_owned(),
                timeout,
            });
        }
        tokio::time::sleep(poll_interval.min(deadline.saturating_duration_since(Instant::now())))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn condition_that_becomes_true_is_awaited() {
        let calls = AtomicU32::new(0);
        await_condition(
            "third call",
            Duration::from_secs(5),
            Duration::from_millis(1),
            || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move { n >= 2 }
            },
        )
        .await
        .expect("condition holds on the third call");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn condition_that_never_holds_times_out_with_its_name() {
        let err = await_condition(
            "the impossible",
            Duration::from_millis(30),
            Duration::from_millis(5),
            || async { false },
        )
        .await
        .expect_err("never true");
        assert_eq!(err.what, "the impossible");
        assert!(err.to_string().contains("the impossible"), "{err}");
    }
}
