//! The thin async driver: turns signals, reaped children, network replies and
//! deadlines into [`Event`]s for the state machine and performs its
//! [`Action`]s, one network request at a time.

use std::collections::VecDeque;
use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{Expiration, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::process::spawn_child;
use super::state::{Action, Event, State};
use super::{
    ChildCommand, Content, Deliver, Network, OnChange, Reply, Request, Settings, SignalReader,
};
use crate::error::ExitClass;
use crate::launch::readiness::Readiness;
use crate::launch::reaper;
use crate::launch::signals::{self, Signal};
use crate::sys;

/// When the driver wakes without an event: at the state machine's next
/// deadline or at the watchdog's, whichever is first; `None` (only a signal,
/// a reaped child or a reply wakes it) when neither has one. There is no
/// reaping tick: SIGCHLD is blocked and read with `sigwaitinfo`, so it cannot
/// be lost (only coalesced, and every wake-up drains all zombies), and an
/// idle supervisor must not wake between polls (a 60 s safety net did, four
/// times per default poll interval of 60 s jittered, up to every time between
/// longer ones).
fn wake_at(deadline: Option<Instant>, watchdog: Option<Instant>) -> Option<Instant> {
    deadline.into_iter().chain(watchdog).min()
}

/// The driver's one deadline (next poll, renewal, kill), kept on a timerfd rather than Tokio's timer wheel. The wheel files a
/// deadline more than 64 ms away in a coarser level and wakes the thread at that
/// level's slot boundaries to move it down: `strace -f -tt` of an idle supervisor
/// polling every 10 s showed three `epoll_wait` time-outs per poll (the last 1.6 to
/// 4 s and ~50 ms before it). The kernel's timer wakes the thread once, at the
/// deadline. Falls back to Tokio's sleep if there is no timerfd. Needs a runtime
/// with I/O enabled (every runtime the supervisor runs on has it).
struct Alarm(Option<AsyncFd<sys::Timer>>);

impl Alarm {
    fn new() -> Self {
        let timer = sys::async_timer();
        if let Err(err) = &timer {
            tracing::debug!(%err, "no timerfd: deadlines use Tokio's timer");
        }
        Self(timer.ok())
    }

    /// Returns at `deadline` (at once if it has passed), never without one.
    /// Cancel-safe: the next call re-arms (or disarms) the timer, which also
    /// resets a stale expiry.
    async fn sleep_until_some(&self, deadline: Option<Instant>) {
        if let Some(deadline) = deadline {
            return self.sleep_until(deadline).await;
        }
        // Disarmed, so a deadline armed earlier cannot wake the thread for
        // nothing.
        if let Some(timer) = &self.0 {
            let _ = timer.get_ref().fd().unset();
        }
        std::future::pending::<()>().await;
    }

    /// Returns at `deadline` (at once if it has passed). Cancel-safe: the next
    /// call re-arms the timer, which also resets a stale expiry.
    async fn sleep_until(&self, deadline: Instant) {
        let Some(timer) = &self.0 else {
            return tokio::time::sleep_until(deadline).await;
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            // A zero one-shot would disarm rather than fire. Disarm explicitly, so
            // a stale deadline armed earlier does not wake the thread for nothing.
            let _ = timer.get_ref().fd().unset();
            return;
        }
        let armed = timer.get_ref().fd().set(
            Expiration::OneShot(TimeSpec::from_duration(left)),
            TimerSetTimeFlags::empty(),
        );
        if armed.is_err() {
            return tokio::time::sleep_until(deadline).await;
        }
        loop {
            let Ok(mut ready) = timer.readable().await else {
                return tokio::time::sleep_until(deadline).await;
            };
            // Reading the expiry count; EAGAIN (not expired yet: readiness left
            // over from an earlier arming) clears the readiness and waits again.
            match ready.try_io(|fd| fd.get_ref().fd().wait().map_err(std::io::Error::from)) {
                Ok(Ok(())) => return,
                Ok(Err(_)) => return tokio::time::sleep_until(deadline).await,
                Err(_would_block) => {}
            }
        }
    }
}

type InFlight<N> = Pin<Box<dyn Future<Output = (N, Reply)>>>;

/// Whether `request` may be abandoned at shutdown: every one but the revoke.
/// A poll's answer no longer matters. A renewal (which may be a re-login,
/// when the token's budget is near its end) leaves the current token, which
/// is what gets revoked: a renewed string belongs to the same server-side
/// token, which the old string still revokes; a login that had already
/// reached the server when it was abandoned leaves that one new token to
/// expire on its own.
fn cancellable(request: Request) -> bool {
    request != Request::Revoke
}

/// Supervises `child` until it exits, and returns the exit code: the child's own
/// (128+N when killed by signal N), or 126/127 when it cannot be started, or 78
/// when the first file delivery fails. Without a child (`write --watch`) it keeps
/// the files fresh until SIGTERM/SIGINT and returns 0. `readiness` hears when
/// the first delivery is complete, when a change is applied and when shutdown
/// begins (ready file, `sd_notify`).
///
/// [`prepare`](super::prepare) must have run. It runs on the caller's runtime
/// (current-thread, with time and I/O: the timerfd), the one the network side
/// was built on: `run --watch` logs in and fetches on it first, and an HTTP
/// connection pool must not outlive the runtime it was made on.
// Each argument is a part the driver plugs together; a struct holding them
// would only rename them.
#[allow(clippy::too_many_arguments)]
pub async fn supervise<N, D>(
    signals: SignalReader,
    child: Option<&ChildCommand>,
    settings: Settings,
    secrets: Content,
    renew_in: Option<Duration>,
    network: N,
    delivery: D,
    readiness: Readiness,
) -> u8
where
    N: Network + 'static,
    D: Deliver,
{
    let now = Instant::now();
    let restarts_on_change = child.is_some() && settings.on_change == OnChange::Restart;
    let (state, first) = if child.is_some() {
        State::new(settings, secrets, renew_in, now)
    } else {
        State::new_sidecar(settings, secrets, renew_in, now)
    };
    let mut driver = Driver {
        state,
        child,
        delivery,
        signals: signals.0,
        alarm: Alarm::new(),
        idle: Some(network),
        in_flight: None,
        cancel: None,
        requests: VecDeque::new(),
        first_delivery: true,
        readiness,
        restarts_on_change,
    };
    let mut actions: VecDeque<Action> = first.into();
    loop {
        while let Some(action) = actions.pop_front() {
            match driver.perform(action) {
                ControlFlow::Continue(None) => {}
                ControlFlow::Continue(Some(event)) => {
                    actions.extend(driver.state.step(Instant::now(), event));
                }
                ControlFlow::Break(code) => return code,
            }
        }
        driver.send_next_request();
        let events = match driver.wait().await {
            Ok(events) => events,
            Err(code) => return code,
        };
        for event in events {
            actions.extend(driver.state.step(Instant::now(), event));
        }
    }
}

/// What the driver holds besides the state machine: the child to start, the
/// delivery, the signal channel, the timer, and the network side (idle, or
/// answering the one request in flight, with the rest queued).
struct Driver<'c, N, D> {
    state: State,
    child: Option<&'c ChildCommand>,
    delivery: D,
    signals: UnboundedReceiver<Signal>,
    alarm: Alarm,
    idle: Option<N>,
    in_flight: Option<InFlight<N>>,
    /// Abandons the request in flight, when it may be abandoned (see
    /// [`cancellable`]).
    cancel: Option<Rc<Notify>>,
    requests: VecDeque<Request>,
    first_delivery: bool,
    readiness: Readiness,
    /// A change ends with the child's restart (else with the files written).
    restarts_on_change: bool,
}

impl<N, D> Driver<'_, N, D>
where
    N: Network + 'static,
    D: Deliver,
{
    /// Performs one action of the state machine. Every action is performed
    /// here, in one place, so a hook that follows the child or the secrets (a
    /// ready file, `sd_notify` READY/RELOADING/STOPPING) is one more arm (or one
    /// more action). Continues with the event the action produced, if any, or
    /// breaks with the exit code.
    fn perform(&mut self, action: Action) -> ControlFlow<u8, Option<Event>> {
        // Readiness: the state machine has already stepped when its actions
        // are performed, so the first action of a shutdown sees it.
        if self.state.is_shutting_down() {
            self.readiness.stopping();
        }
        match action {
            Action::WriteFiles => {
                let change = !self.first_delivery;
                if change {
                    self.readiness.reloading();
                }
                if let Err(err) = self.delivery.write_files(self.state.secrets()) {
                    tracing::error!(%err, "could not write the secret files");
                    if self.first_delivery {
                        self.readiness.stopping();
                        return ControlFlow::Break(ExitClass::Config.code());
                    }
                }
                self.first_delivery = false;
                // Without a child, or with a change that does not restart it,
                // the delivery is complete once the files are written.
                if self.child.is_none() || (change && !self.restarts_on_change) {
                    let count = self.state.secrets().len();
                    self.readiness.ready(&format!("{count} secrets delivered"));
                }
            }
            Action::StartChild => {
                let child = self
                    .child
                    .expect("UNWRAP: the sidecar state never starts a child");
                let event = match spawn_child(child, &self.delivery, self.state.secrets()) {
                    Ok(pid) => {
                        let count = self.state.secrets().len();
                        self.readiness
                            .ready(&format!("program running (pid {pid}) with {count} secrets"));
                        Event::Spawned { pid }
                    }
                    Err(code) => Event::SpawnFailed { code },
                };
                return ControlFlow::Continue(Some(event));
            }
            Action::Send { signal, to } => signals::send(to, signal),
            Action::Request(Request::Revoke) => {
                // Shutting down: queued polls or renewals no longer matter,
                // and the request in flight is abandoned: revoke what is
                // current rather than wait for a re-login only to revoke
                // its token.
                self.requests.clear();
                self.requests.push_back(Request::Revoke);
                if let Some(cancel) = self.cancel.take() {
                    cancel.notify_one();
                }
            }
            Action::Request(request) => self.requests.push_back(request),
            Action::RemoveFiles => self.delivery.remove_files(),
            Action::ProbeGroup(pgid) => {
                return ControlFlow::Continue(Some(Event::GroupProbed {
                    pgid,
                    alive: signals::group_alive(pgid),
                }));
            }
            Action::Exit(code) => return ControlFlow::Break(code),
        }
        ControlFlow::Continue(None)
    }

    /// Hands the next queued request to the network side, if it is idle.
    fn send_next_request(&mut self) {
        if self.in_flight.is_some() {
            return;
        }
        if let Some(request) = self.requests.pop_front() {
            let mut network = self.idle.take().expect("UNWRAP: no request is in flight");
            tracing::debug!(?request, "network request");
            // A fresh one per request: a cancellation meant for an earlier
            // request must not linger and cancel this one.
            let cancel = cancellable(request).then(|| Rc::new(Notify::new()));
            self.cancel.clone_from(&cancel);
            self.in_flight = Some(Box::pin(async move {
                let reply = {
                    let call = network.call(request);
                    match cancel {
                        Some(cancel) => tokio::select! {
                            reply = call => reply,
                            () = cancel.notified() => Reply::Cancelled,
                        },
                        None => call.await,
                    }
                };
                (network, reply)
            }));
        }
    }

    /// Waits for what happens next (a signal, a reaped child, a reply, a
    /// deadline) and returns it as events; `Err` with the exit code when the
    /// signal thread is gone.
    async fn wait(&mut self) -> Result<Vec<Event>, u8> {
        let wake = wake_at(self.state.next_deadline(), self.readiness.watchdog_due());
        let mut events = Vec::new();
        tokio::select! {
            signal = self.signals.recv() => match signal {
                Some(Signal::CHLD) => events.extend(reaper::reap_all().into_iter().map(Event::Reaped)),
                Some(signal) => events.push(Event::Signal(signal)),
                None => {
                    tracing::error!("the signal thread stopped; exiting");
                    return Err(ExitClass::Internal.code());
                }
            },
            (network, reply) = async { self.in_flight.as_mut().expect("UNWRAP: guarded").await }, if self.in_flight.is_some() => {
                self.in_flight = None;
                self.cancel = None;
                self.idle = Some(network);
                events.push(Event::Reply(reply));
            },
            () = self.alarm.sleep_until_some(wake) => {
                events.extend(reaper::reap_all().into_iter().map(Event::Reaped));
                events.push(Event::Tick);
            },
        }
        self.readiness.watchdog(Instant::now());
        Ok(events)
    }
}

/// The timerfd behind the driver's deadlines. Lower bounds only (never before
/// the deadline); every wait is bounded by a generous time-out.
#[cfg(test)]
mod tests {
    use super::{wake_at, Alarm};
    use std::time::Duration;
    use tokio::time::{timeout, Instant};

    const BOUND: Duration = Duration::from_secs(10);

    fn on_runtime<F: std::future::Future<Output = ()>>(test: F) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(test);
    }

    #[test]
    fn alarm_is_a_timerfd_and_returns_at_its_deadline_not_before() {
        on_runtime(async {
            let alarm = Alarm::new();
            assert!(
                alarm.0.is_some(),
                "no timerfd: the driver would fall back to the timer wheel"
            );
            let deadline = Instant::now() + Duration::from_millis(30);
            timeout(BOUND, alarm.sleep_until(deadline))
                .await
                .expect("the alarm fired");
            assert!(Instant::now() >= deadline);
        });
    }

    #[test]
    fn alarm_with_a_past_deadline_returns_at_once() {
        on_runtime(async {
            let alarm = Alarm::new();
            let past = Instant::now()
                .checked_sub(Duration::from_secs(1))
                .expect("uptime");
            timeout(BOUND, alarm.sleep_until(past))
                .await
                .expect("returned");
        });
    }

    #[test]
    fn alarm_rearmed_after_a_cancelled_sleep_uses_the_new_deadline() {
        on_runtime(async {
            let alarm = Alarm::new();
            // Cancelled, as when a signal or a reply wins the driver's select.
            let far = Instant::now() + Duration::from_secs(3600);
            assert!(timeout(Duration::from_millis(20), alarm.sleep_until(far))
                .await
                .is_err());
            let near = Instant::now() + Duration::from_millis(20);
            timeout(BOUND, alarm.sleep_until(near))
                .await
                .expect("the re-armed alarm fired");
            assert!(Instant::now() >= near);
        });
    }

    #[test]
    fn alarm_ignores_an_expiry_left_from_an_earlier_arming() {
        on_runtime(async {
            let alarm = Alarm::new();
            // 50 ms, not less: on a loaded machine the test thread can be
            // descheduled for several milliseconds between arming and the
            // 1 ms timeout, and the alarm must not fire first (it did at 5 ms).
            let short = Instant::now() + Duration::from_millis(50);
            // Armed, then abandoned before it fires; it expires while the runtime
            // waits on something else, which records the timerfd as readable.
            assert!(timeout(Duration::from_millis(1), alarm.sleep_until(short))
                .await
                .is_err());
            tokio::time::sleep(Duration::from_millis(100)).await;
            let deadline = Instant::now() + Duration::from_millis(200);
            timeout(BOUND, alarm.sleep_until(deadline))
                .await
                .expect("the alarm fired");
            assert!(Instant::now() >= deadline, "returned on the stale expiry");
        });
    }

    #[test]
    fn an_idle_supervisor_wakes_only_at_its_own_deadlines() {
        let now = Instant::now();
        let poll = now + Duration::from_secs(600);
        let watchdog = now + Duration::from_secs(15);
        // No reaping tick in between: a poll ten minutes away is the wake-up.
        assert_eq!(wake_at(Some(poll), None), Some(poll));
        assert_eq!(wake_at(Some(poll), Some(watchdog)), Some(watchdog));
        assert_eq!(wake_at(None, Some(watchdog)), Some(watchdog));
        // Nothing due: only a signal, a reaped child or a reply wakes it.
        assert_eq!(wake_at(None, None), None);
    }

    #[test]
    fn alarm_without_a_deadline_disarms_an_earlier_one() {
        on_runtime(async {
            let alarm = Alarm::new();
            let near = Instant::now() + Duration::from_millis(50);
            // Armed, then abandoned before it fires (the select took another branch).
            assert!(timeout(Duration::from_millis(1), alarm.sleep_until(near))
                .await
                .is_err());
            // A slow machine can only make this pass more easily, never fail.
            assert!(
                timeout(Duration::from_millis(250), alarm.sleep_until_some(None))
                    .await
                    .is_err(),
                "no deadline, yet the alarm fired"
            );
            assert!(Instant::now() >= near);
        });
    }
}
