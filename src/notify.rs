//! systemd's readiness protocol (`sd_notify`, through the `sd-notify` crate):
//! `READY=1`, `STATUS=…`, `RELOADING=1` (with `MONOTONIC_USEC`), `STOPPING=1`
//! and `WATCHDOG=1` datagrams on `$NOTIFY_SOCKET`.
//!
//! Only the supervisor notifies (`run --watch`, `write --watch`): it calls
//! [`enable`] once, and from then on [`send`] and [`status`] reach systemd. In
//! exec mode nothing is ever sent and `NOTIFY_SOCKET` passes to the program
//! untouched: the program is the service there. The switch is process-wide
//! because `NOTIFY_SOCKET` is: the waits deep in the start-up (the Workload
//! API, Infisical's retries) report what they wait for with [`status`]
//! without every layer carrying a notifier. Our own environment is never
//! changed (the crate reads `NOTIFY_SOCKET` at each send); the supervisor
//! removes the variables from the program's environment instead.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

/// The variables that belong to the notifying process: under `--watch` the
/// program must not see them (it is not the service's main process).
pub const VARIABLES: &[&str] = &["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// Whether this process notifies (set by [`enable`]).
static ENABLED: AtomicBool = AtomicBool::new(false);
/// Whether a send has failed already (warned about once).
static FAILED: AtomicBool = AtomicBool::new(false);

/// Makes this process the notifying one, when systemd (or another service
/// manager) gave it a `NOTIFY_SOCKET`. Returns whether it did.
pub fn enable() -> bool {
    let on = std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty());
    ENABLED.store(on, Ordering::Relaxed);
    on
}

/// Whether [`enable`] found a socket.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Sends `states` in one datagram, if enabled. A failure is logged once (a
/// service manager that went away must not stop the supervisor).
pub fn send(states: &[NotifyState<'_>]) {
    if !enabled() {
        return;
    }
    if let Err(err) = sd_notify::notify(states) {
        if !FAILED.swap(true, Ordering::Relaxed) {
            tracing::warn!(%err, "could not notify the service manager on NOTIFY_SOCKET");
        }
    }
}

/// `STATUS=<text>`: what svid-exec is doing or waiting for (`systemctl status`).
pub fn status(text: &str) {
    // A status is one line: the protocol separates assignments with newlines.
    let line = text.replace('\n', " ");
    send(&[NotifyState::Status(&line)]);
}

/// `RELOADING=1` with the `MONOTONIC_USEC=` that systemd 253 and later require
/// beside it (the crate does not add it; older systemd ignores it).
pub fn reloading(text: &str) {
    let line = text.replace('\n', " ");
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now, NotifyState::Status(&line)]),
        Err(_) => send(&[NotifyState::Reloading, NotifyState::Status(&line)]),
    }
}

/// How often to send `WATCHDOG=1`: half the interval systemd asked for
/// (`WATCHDOG_USEC`, when `WATCHDOG_PID` is unset or names us), if enabled.
pub fn watchdog_period() -> Option<Duration> {
    if !enabled() {
        return None;
    }
    sd_notify::watchdog_enabled()
        .filter(|d| !d.is_zero())
        .map(|d| d / 2)
}
