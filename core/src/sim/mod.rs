//! Deterministic runs: one thread, virtual time, one seeded random source, so that a seed *is*
//! the run (the way FoundationDB's simulator or TigerBeetle's VOPR work).
//!
//! [`run`] builds a current-thread tokio runtime whose clock is paused (time moves only when
//! every task waits, straight to the next timer) and makes the calling thread the run's: while
//! it lasts, on that thread,
//! - every random draw of the core ([`random_u64`], openraft's through [`SimRuntime`]) comes
//!   from one generator seeded by the run's seed, and is counted;
//! - work that would go to another thread ([`blocking`], the node's log writer) runs inline or
//!   as a task, so virtual time never jumps over it;
//! - in-process messages, log writer rounds and applies take a seeded virtual duration
//!   ([`pause`]), so timeouts and elections behave as on a machine;
//! - the wall clock the nodes read ([`wall_ms`]) is virtual too;
//! - openraft's watch channels ([`SimWatch`]) wake their receivers in the order they began to
//!   wait (tokio's spread them over shards picked by tokio's own random generator, which only
//!   `--cfg tokio_unstable` can seed).
//!
//! Outside a run every function here falls back to the normal behaviour (OS randomness, the
//! blocking pool, no added pauses): the same code serves both. The run's state is the thread's
//! own, set by [`run`] and gone when it returns; nothing is shared between threads.

mod runtime;
mod watch;

pub use runtime::SimRuntime;
pub use watch::{SimWatch, SimWatchReceiver, SimWatchSender};

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The wall clock of a deterministic run starts here (2026-01-01T00:00:00Z), in Unix ms.
const SIM_EPOCH_MS: u64 = 1_767_225_600_000;

/// What the run's thread knows of it.
struct Sim {
    rng: StdRng,
    draws: u64,
    /// When the run started, in virtual time (set on first use inside the runtime).
    started: Option<tokio::time::Instant>,
}

thread_local! {
    static SIM: RefCell<Option<Sim>> = const { RefCell::new(None) };
}

/// How a deterministic run ended: the future's output and how many random draws it made.
#[derive(Debug)]
pub struct Finished<T> {
    pub output: T,
    pub draws: u64,
}

/// Removes the run's state from the thread, also when the run panics.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        SIM.with(|s| s.borrow_mut().take());
    }
}

/// Runs `future` deterministically (see the module's text) on this thread. Refused inside
/// another runtime or another deterministic run.
pub fn run<F: Future>(seed: u64, future: F) -> io::Result<Finished<F::Output>> {
    if tokio::runtime::Handle::try_current().is_ok() || is_deterministic() {
        return Err(io::Error::other(
            "a deterministic run needs a thread of its own (called inside a runtime)",
        ));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    SIM.with(|s| {
        *s.borrow_mut() = Some(Sim {
            rng: StdRng::seed_from_u64(seed),
            draws: 0,
            started: None,
        })
    });
    let _installed = Installed;
    let output = runtime.block_on(async {
        wall_ms(); // the run's clock starts here
        future.await
    });
    // Tasks still alive are dropped here, with the run's state in place.
    drop(runtime);
    Ok(Finished {
        output,
        draws: draws(),
    })
}

/// Whether this thread is running a deterministic run.
pub fn is_deterministic() -> bool {
    SIM.with(|s| s.borrow().is_some())
}

/// Random draws made so far by the run on this thread (0 outside one).
pub fn draws() -> u64 {
    SIM.with(|s| s.borrow().as_ref().map_or(0, |sim| sim.draws))
}

/// A random `u64`: the run's next draw, or the OS's randomness outside a run.
pub fn random_u64() -> u64 {
    with_rng(|rng| rng.random()).unwrap_or_else(rand::random)
}

fn with_rng<T>(f: impl FnOnce(&mut StdRng) -> T) -> Option<T> {
    SIM.with(|s| {
        s.borrow_mut().as_mut().map(|sim| {
            sim.draws += 1;
            f(&mut sim.rng)
        })
    })
}

/// What takes virtual time in a deterministic run, and how much (a range the draw falls in).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "embedded"), allow(dead_code))]
pub(crate) enum Cost {
    /// One in-process message, one way.
    Message,
    /// One round of a node's log writer (a write and an fsync).
    LogRound,
    /// One batch of applies.
    Apply,
}

#[cfg_attr(not(feature = "embedded"), allow(dead_code))]
impl Cost {
    fn micros(self) -> (u64, u64) {
        match self {
            Cost::Message => (20, 200),
            Cost::LogRound => (200, 1_500),
            Cost::Apply => (10, 100),
        }
    }
}

/// In a deterministic run, waits a seeded virtual duration for `cost`; outside one, nothing.
#[cfg_attr(not(feature = "embedded"), allow(dead_code))]
pub(crate) async fn pause(cost: Cost) {
    let (low, high) = cost.micros();
    if let Some(us) = with_rng(|rng| rng.random_range(low..=high)) {
        tokio::time::sleep(Duration::from_micros(us)).await;
    }
}

/// Runs blocking `f`: inline in a deterministic run (virtual time waits for it), on tokio's
/// blocking pool otherwise.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    if is_deterministic() {
        Ok(f())
    } else {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(io::Error::other)
    }
}

/// The wall clock in a deterministic run (virtual ms since the run's epoch); `None` outside.
pub(crate) fn wall_ms() -> Option<u64> {
    SIM.with(|s| {
        let mut s = s.borrow_mut();
        let sim = s.as_mut()?;
        let now = tokio::time::Instant::now();
        let started = *sim.started.get_or_insert(now);
        Some(SIM_EPOCH_MS + now.duration_since(started).as_millis() as u64)
    })
}

/// Where a deterministic run's clock started, as the process's monotonic clock reads it (the
/// paused clock's instants are that plus virtual time); `None` outside a run.
pub fn origin() -> Option<std::time::Instant> {
    SIM.with(|s| s.borrow().as_ref().and_then(|sim| sim.started))
        .map(tokio::time::Instant::into_std)
}

/// Milliseconds since the Unix epoch: the system clock, or a deterministic run's virtual one.
pub(crate) fn unix_ms() -> u64 {
    wall_ms().unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws_of(seed: u64) -> Vec<u64> {
        run(seed, async {
            let mut seen = Vec::new();
            for _ in 0..4 {
                pause(Cost::Message).await;
                seen.push(random_u64());
                seen.push(wall_ms().unwrap_or(0));
            }
            seen
        })
        .expect("run")
        .output
    }

    #[test]
    fn a_seed_gives_the_same_draws_and_virtual_times_and_another_seed_others() {
        assert_eq!(draws_of(7), draws_of(7));
        assert_ne!(draws_of(7), draws_of(8));
        assert!(!is_deterministic(), "the run's state is gone after it");
    }

    #[test]
    fn a_run_is_refused_inside_another_runtime() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let refused = rt.block_on(async { run(1, async {}).is_err() });
        assert!(refused);
    }
}
