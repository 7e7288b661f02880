//! Draining the program's process group once the program is gone: what is
//! left (a shell's background jobs, workers, all holding the secrets in their
//! environment) gets the stop signal, then SIGKILL, before the supervisor
//! restarts the program or exits. Probed with [`Action::ProbeGroup`], every
//! [`GROUP_PROBE_EVERY`] and whenever a descendant is reaped.

use std::time::Duration;

use tokio::time::Instant;

use super::{Action, AfterStop, Child, State};
use crate::launch::signals::{Signal, Target};

/// How far stopping the rest of a process group has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Drain {
    /// No signal sent to the group yet.
    Unsignalled,
    /// The stop signal reached the group; SIGKILL at `kill_at`.
    Stopping { kill_at: Instant },
    /// SIGKILL sent; stop waiting at `give_up_at` (a member we may not signal,
    /// or one stuck in the kernel).
    Killed { give_up_at: Instant },
}

/// While a group drains, ask this often whether anyone is left (members that
/// are our descendants are also noticed when reaped, at once).
const GROUP_PROBE_EVERY: Duration = Duration::from_millis(100);

/// After SIGKILL to the group, wait this long for it to empty.
pub(super) const KILLED_GROUP_WAIT: Duration = Duration::from_secs(5);

impl State {
    /// The answer to a probe of the draining group: gone (go on with the
    /// restart or the exit), or still there (stop it, then wait and ask again).
    pub(super) fn on_probed(
        &mut self,
        now: Instant,
        pgid: i32,
        alive: bool,
        out: &mut Vec<Action>,
    ) {
        let stop_signal = self.settings.stop_signal;
        let stop_timeout = self.settings.stop_timeout;
        let Child::Draining {
            pgid: draining,
            stage,
            probe_at,
            ..
        } = &mut self.child
        else {
            return;
        };
        if *draining != pgid {
            return;
        }
        if !alive {
            self.drained(now, out);
            return;
        }
        if *stage == Drain::Unsignalled {
            tracing::info!(
                pgid,
                signal = %stop_signal,
                timeout = ?stop_timeout,
                "the program is gone but processes of its group remain; stopping them"
            );
            out.push(Action::Send {
                signal: stop_signal,
                to: Target::Group(pgid),
            });
            *stage = Drain::Stopping {
                kill_at: now + stop_timeout,
            };
        }
        *probe_at = Some(now + GROUP_PROBE_EVERY);
    }

    /// The group is empty (or given up on): start the new child, or finish.
    fn drained(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Child::Draining { then, code, .. } = self.child else {
            return;
        };
        if then == AfterStop::Restart && !self.shutting_down {
            tracing::info!("starting the program with the new secrets");
            self.child = Child::Starting;
            out.push(Action::StartChild);
        } else {
            self.child = Child::Gone;
            self.finish(now, code, out);
        }
    }

    /// A tick while the group drains: SIGKILL when the stop timeout is over,
    /// give up when even that did not empty it, and probe when it is time.
    pub(super) fn drain_tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Child::Draining {
            pgid,
            stage,
            probe_at,
            ..
        } = &mut self.child
        else {
            return;
        };
        let pgid = *pgid;
        match *stage {
            Drain::Stopping { kill_at } if kill_at <= now => {
                tracing::warn!(pgid, timeout = ?self.settings.stop_timeout, "processes of the program's group did not stop in time; killing them");
                out.push(Action::Send {
                    signal: Signal::KILL,
                    to: Target::Group(pgid),
                });
                *stage = Drain::Killed {
                    give_up_at: now + KILLED_GROUP_WAIT,
                };
            }
            Drain::Killed { give_up_at } if give_up_at <= now => {
                tracing::warn!(pgid, "processes of the program's group are still there after SIGKILL; going on without them");
                self.drained(now, out);
                return;
            }
            _ => {}
        }
        if probe_at.is_some_and(|t| t <= now) {
            *probe_at = None;
            out.push(Action::ProbeGroup(pgid));
        }
    }
}
