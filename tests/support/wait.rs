//! Waiting for a condition from async tests without blocking a runtime worker.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

/// How often [`eventually`] and [`eventually_ok`] try again.
const POLL: Duration = Duration::from_millis(20);

/// Poll `check` until it returns `Ok` and return its value, sleeping with
/// `tokio::time::sleep` between tries (the worker keeps running other tasks). When
/// `timeout` has passed, panic with the last `Err` message.
pub async fn eventually_ok<T, F, Fut>(timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(msg) if tokio::time::Instant::now() >= deadline => {
                panic!("timed out after {timeout:?}: {msg}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// Poll `cond` until it holds (see [`eventually_ok`]); after `timeout`, panic with
/// `what`.
pub async fn eventually<F, Fut>(timeout: Duration, what: impl Display, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_ok(timeout, || {
        let holds = cond();
        let what = &what;
        async move {
            if holds.await {
                Ok(())
            } else {
                Err(what.to_string())
            }
        }
    })
    .await
}

/// Run `f`, which blocks (a child process, a polling loop), from harness code that
/// async tests call: inside a multi-threaded tokio runtime the worker hands its other
/// tasks to another thread first (`block_in_place`), so they are not stalled.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}
