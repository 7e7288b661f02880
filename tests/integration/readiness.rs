//! Readiness, end to end with the real binary: `svid-exec ready` (each exit
//! code, no request to any stand-in, another user's directory), the
//! `--ready-file` lifecycle (one-shot `write`, `write --watch`, `run
//! --watch`), and systemd notifications read from a test datagram socket
//! (READY only once the files are complete, RELOADING/READY around a change,
//! and with templates only around a change that shows in a rendering,
//! STOPPING at shutdown, WATCHDOG when asked, STATUS while waiting, and who
//! sees `NOTIFY_SOCKET`). Every wait is bounded.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use svid_exec_testkit::infisical::Fault;
use svid_exec_testkit::stack::{Stack, DEMO_SECRETS};

use crate::util::{parse_env0, secret_requests, tmpfs_scratch, wait_for, Launcher, Scratch};
use crate::watch::{set, stack_with, Watched, WAIT};

/// `svid-exec ready ARGS` with nothing but `PATH` in its environment.
fn ready(args: &[&str]) -> crate::util::Outcome {
    Launcher::new().arg("ready").args(args).limit(WAIT).run()
}

/// `write --dir DIR` against `stack`, expected to succeed.
fn write_dir(stack: &Stack, dir: &Path, extra: &[&str]) {
    Launcher::on(stack)
        .args(["write", "--dir"])
        .arg(dir)
        .args(extra)
        .limit(WAIT)
        .audited()
        .run()
        .expect_code(0);
}

fn dir_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

mod ready_probe {
    use super::*;

    #[test]
    fn ready_says_not_yet_with_69_until_a_complete_generation_is_there_then_0() {
        let Some(scratch) = tmpfs_scratch() else {
            return;
        };
        let stack = Stack::start();
        let dir = scratch.path().join("secrets");

        let missing = ready(&["--dir", dir_str(&dir)]);
        missing.expect_code(69);
        assert!(
            missing.stdout_text().contains("does not exist yet"),
            "{missing:?}"
        );
        fs::create_dir(&dir).unwrap();
        let empty = ready(&["--dir", dir_str(&dir)]);
        empty.expect_code(69);
        assert!(
            empty.stdout_text().contains("nothing has been written"),
            "{empty:?}"
        );
        assert_eq!(empty.stdout_text().lines().count(), 1, "one line says why");

        write_dir(&stack, &dir, &[]);
        let before = stack.infisical.requests().len();
        let agent_before = stack.agent.calls().len();
        let ok = ready(&["--dir", dir_str(&dir)]);
        ok.expect_code(0);
        assert!(
            ok.stdout_text()
                .contains(&format!("holds {} secrets", DEMO_SECRETS.len())),
            "{ok:?}"
        );
        // Fresh within an hour; not within a millisecond a while later.
        ready(&["--dir", dir_str(&dir), "--max-age", "1h"]).expect_code(0);
        std::thread::sleep(Duration::from_millis(20));
        let stale = ready(&["--dir", dir_str(&dir), "--max-age", "1ms"]);
        stale.expect_code(69);
        assert!(stale.stdout_text().contains("--max-age"), "{stale:?}");
        assert_eq!(
            stack.infisical.requests().len(),
            before,
            "ready made a request"
        );
        assert_eq!(
            stack.agent.calls().len(),
            agent_before,
            "ready asked the agent"
        );
        // A generation being replaced: ..data names another one.
        let real = fs::read_link(dir.join("..data")).unwrap();
        fs::remove_file(dir.join("..data")).unwrap();
        let removed = ready(&["--dir", dir_str(&dir)]);
        removed.expect_code(69);
        std::os::unix::fs::symlink(&real, dir.join("..data")).unwrap();
        ready(&["--dir", dir_str(&dir)]).expect_code(0);
    }

    #[test]
    fn ready_answers_78_for_a_directory_svid_exec_did_not_write() {
        let Some(scratch) = tmpfs_scratch() else {
            return;
        };
        // A Kubernetes projected volume: ..data, no state file.
        let projected = scratch.path().join("projected");
        fs::create_dir(&projected).unwrap();
        fs::create_dir(projected.join("..2026_01_01_00_00_00.1")).unwrap();
        std::os::unix::fs::symlink("..2026_01_01_00_00_00.1", projected.join("..data")).unwrap();
        let out = ready(&["--dir", dir_str(&projected)]);
        out.expect_code(78)
            .expect_stderr("not written by svid-exec");
        assert!(out.stderr.contains("hint:"), "{out:?}");
        // A file, a link to a directory, a state file that is not one.
        let file = scratch.path().join("file");
        fs::write(&file, "x").unwrap();
        ready(&["--dir", dir_str(&file)]).expect_code(78);
        let link = scratch.path().join("link");
        std::os::unix::fs::symlink(&projected, &link).unwrap();
        ready(&["--dir", dir_str(&link)])
            .expect_code(78)
            .expect_stderr("symbolic link");
        let garbage = scratch.path().join("garbage");
        fs::create_dir(&garbage).unwrap();
        fs::write(garbage.join("..svid-exec"), "hello\n").unwrap();
        ready(&["--dir", dir_str(&garbage)])
            .expect_code(78)
            .expect_stderr("not a state file");
        ready(&["--dir", dir_str(&garbage), "--max-age", "soon"]).expect_code(78);
        // A missing required option is 78 like every command's, not clap's 2.
        ready(&[])
            .expect_code(78)
            .expect_stderr("no directory to probe: neither --dir nor SVID_EXEC_FILES_DIR is set");
    }

    /// Written by root, probed as nobody (65534): not ours, although nobody
    /// may read the directory and its state file.
    #[test]
    fn ready_as_another_user_than_the_writer_is_78_not_ours() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: needs root to write as one user and probe as another");
            return;
        }
        let Some(scratch) = tmpfs_scratch() else {
            return;
        };
        let stack = Stack::start();
        let dir = scratch.path().join("secrets");
        write_dir(&stack, &dir, &["--file-mode", "0444"]);
        for d in [scratch.path(), dir.as_path()] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let out = Launcher::new()
            .via(&[
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
            ])
            .args(["ready", "--dir", dir_str(&dir)])
            .limit(WAIT)
            .run();
        out.expect_code(78).expect_stderr("owned by uid 0");
        // The writer itself: ready.
        ready(&["--dir", dir_str(&dir)]).expect_code(0);
    }

    #[test]
    fn a_poll_that_finds_nothing_changed_keeps_ready_fresh_under_max_age() {
        let Some(scratch) = tmpfs_scratch() else {
            return;
        };
        let stack = stack_with((3600, 86_400), false);
        let dir = scratch.path().join("secrets");
        let dir_arg = dir_str(&dir).to_owned();
        let mut sidecar = Watched::start(
            &stack,
            &[
                "write",
                "--watch",
                "--poll-interval",
                "1s",
                "--dir",
                &dir_arg,
            ],
        );
        wait_for("the first delivery", WAIT, || {
            (ready(&["--dir", &dir_arg]).code() == 0).then_some(())
        });
        let written = fs::read_to_string(dir.join("..svid-exec")).unwrap();
        assert!(!written.contains("confirmed"), "{written}");
        let confirmed = wait_for("a poll recorded as a confirmation", WAIT, || {
            fs::read_to_string(dir.join("..svid-exec"))
                .ok()
                .filter(|s| s.contains("\nconfirmed "))
        });
        assert!(
            confirmed.contains(&written.lines().nth(1).unwrap().to_owned()),
            "the same generation:\n{written}\n{confirmed}"
        );
        // Nothing in it is a secret.
        for (_, value) in DEMO_SECRETS {
            assert!(!confirmed.contains(value));
        }
        assert_eq!(sidecar.stop(), 0, "{}", sidecar.stderr());
        // The sidecar leaves the files; a run --watch removes them (below).
        ready(&["--dir", &dir_arg]).expect_code(0);
    }

    #[test]
    fn after_run_watch_stops_its_files_are_gone_and_ready_says_not_yet() {
        let Some(scratch) = tmpfs_scratch() else {
            return;
        };
        let stack = stack_with((3600, 86_400), false);
        let dir = scratch.path().join("secrets");
        let dir_arg = dir_str(&dir).to_owned();
        let mut launcher = Watched::start(
            &stack,
            &[
                "run",
                "--watch",
                "--files-dir",
                &dir_arg,
                "--",
                "sleep",
                "60",
            ],
        );
        wait_for("the first delivery", WAIT, || {
            (ready(&["--dir", &dir_arg]).code() == 0).then_some(())
        });
        launcher.stop();
        let after = ready(&["--dir", &dir_arg]);
        after.expect_code(69);
        assert!(
            fs::read_dir(&dir).unwrap().next().is_none(),
            "left behind: {:?}",
            fs::read_dir(&dir).unwrap().collect::<Vec<_>>()
        );
    }
}

mod ready_file {
    use super::*;

    #[test]
    fn one_shot_write_creates_it_after_the_files_and_leaves_it_and_a_failure_removes_a_stale_one() {
        let Some(scratch) = tmpfs_scratch() else {
            return;
        };
        let stack = Stack::start();
        let dir = scratch.path().join("secrets");
        let flag = scratch.path().join("ready");
        fs::write(&flag, "stale").unwrap();
        Launcher::on(&stack)
            .args(["write", "--dir", dir_str(&dir), "--path", "/nothing-here"])
            .arg("--ready-file")
            .arg(&flag)
            .limit(WAIT)
            .run()
            .expect_code(78);
        assert!(!flag.exists(), "a stale ready file survived a failed write");

        write_dir(&stack, &dir, &["--ready-file", dir_str(&flag)]);
        assert_eq!(fs::read(&flag).unwrap(), b"", "created empty");
        assert!(dir.join("DATABASE_URL").is_file());
    }

    /// `run` without `--watch` execs the program and is gone: nothing would
    /// remove the file. The flag is refused (78, before any request); the
    /// variable is ignored with a debug line, as every variable of an option
    /// that does not apply (one environment serves `run` and `write`).
    #[test]
    fn run_without_watch_refuses_the_flag_and_ignores_the_variable() {
        let stack = Stack::start();
        let scratch = tempfile::tempdir().unwrap();
        let never = scratch.path().join("never");
        Launcher::on(&stack)
            .args(["run", "--ready-file"])
            .arg(&never)
            .args(["--", "true"])
            .limit(WAIT)
            .run()
            .expect_code(78)
            .expect_stderr(
                "--ready-file does not apply to run without --watch (only to run --watch or write)",
            )
            .expect_stderr("hint: add --watch, or drop --ready-file");
        assert!(stack.infisical.requests().is_empty());

        let out = Launcher::on(&stack)
            .env("SVID_EXEC_READY_FILE", &never)
            .args(["run", "--log-level", "debug"])
            .marked_program(scratch.path())
            .limit(WAIT)
            .run();
        out.expect_ran().expect_stderr(
            "SVID_EXEC_READY_FILE (--ready-file) does not apply to run without --watch",
        );
        assert!(!never.exists(), "a ready file nothing would remove");
    }

    /// `COMMAND DIR_FLAG DIR --ready-file FLAG [-- PROGRAM]` until the ready
    /// file appears, then SIGTERM.
    fn lifecycle(command: &[&str], dir_flag: &str, program: &[&str]) {
        let Some(scratch) = tmpfs_scratch() else {
            return;
        };
        let stack = stack_with((3600, 86_400), false);
        let dir = scratch.path().join("secrets");
        let flag = scratch.path().join("ready");
        let mut refs = command.to_vec();
        refs.extend([dir_flag, dir_str(&dir), "--ready-file", dir_str(&flag)]);
        refs.extend(program);
        let mut launcher = Watched::start(&stack, &refs);
        wait_for("the ready file", WAIT, || flag.exists().then_some(()));
        // Created after the delivery: the files are complete.
        for (key, value) in DEMO_SECRETS {
            assert_eq!(fs::read_to_string(dir.join(key)).unwrap(), *value, "{key}");
        }
        launcher.stop();
        assert!(!flag.exists(), "the ready file outlived the supervisor");
    }

    #[test]
    fn write_watch_creates_it_after_the_first_delivery_and_removes_it_at_shutdown() {
        lifecycle(&["write", "--watch"], "--dir", &[]);
    }

    #[test]
    fn run_watch_creates_it_once_the_program_started_and_removes_it_at_shutdown() {
        lifecycle(&["run", "--watch"], "--files-dir", &["--", "sleep", "60"]);
    }
}

/// A datagram socket standing in for systemd's `NOTIFY_SOCKET`.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    _dir: Scratch,
    seen: Vec<String>,
}

impl NotifySocket {
    fn new() -> Self {
        let dir = Scratch::temp();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Self {
            socket,
            path,
            _dir: dir,
            seen: Vec::new(),
        }
    }

    /// Reads datagrams until one contains `line` (as a whole line), within
    /// [`WAIT`]; returns that datagram.
    fn until(&mut self, line: &str) -> String {
        let started = Instant::now();
        let mut buf = vec![0u8; 4096];
        while started.elapsed() < WAIT {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let datagram = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(datagram.clone());
                if datagram.lines().any(|l| l == line) {
                    return datagram;
                }
            }
        }
        panic!("no {line:?} within {WAIT:?}; got {:#?}", self.seen);
    }

    /// Every datagram that arrives within `window`.
    fn drain(&mut self, window: Duration) -> Vec<String> {
        let started = Instant::now();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while started.elapsed() < window {
            if let Ok(n) = self.socket.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        self.seen.extend(got.clone());
        got
    }

    /// Stops `sidecar` (SIGTERM, exit 0) and checks the whole story: ready,
    /// one change announced around its delivery, stopping.
    fn stop_after_one_change(&mut self, sidecar: &mut Watched) {
        sidecar.signal(Signal::SIGTERM);
        self.until("STOPPING=1");
        assert_eq!(sidecar.finish(), 0, "{}", sidecar.stderr());
        assert_eq!(
            self.lines(&["READY=", "RELOADING=", "STOPPING="]),
            ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"]
        );
    }

    /// The lines seen so far, in order, that start with one of `keys`.
    fn lines(&self, keys: &[&str]) -> Vec<String> {
        self.seen
            .iter()
            .flat_map(|d| d.lines())
            .filter(|l| keys.iter().any(|k| l.starts_with(k)))
            .map(str::to_owned)
            .collect()
    }
}

mod sd_notify {
    use super::*;

    #[test]
    fn write_watch_notifies_ready_after_the_files_then_reloading_ready_on_a_change_then_stopping() {
        let Some(scratch) = tmpfs_scratch() else {
            return;
        };
        let stack = stack_with((3600, 86_400), false);
        let mut notify = NotifySocket::new();
        let dir = scratch.path().join("secrets");
        let dir_arg = dir_str(&dir).to_owned();
        let socket = notify.path.clone();
        let mut sidecar = Watched::start_with(
            &stack,
            &[
                "write",
                "--watch",
                "--poll-interval",
                "1s",
                "--dir",
                &dir_arg,
            ],
            |l| {
                l.env("NOTIFY_SOCKET", &socket);
            },
        );
        let ready = notify.until("READY=1");
        assert!(ready.contains("STATUS="), "{ready}");
        // Sent after the write: the whole generation is there already.
        assert_eq!(fs::read_to_string(dir.join("WATCHED")).unwrap(), "one");
        for (key, value) in DEMO_SECRETS {
            assert_eq!(fs::read_to_string(dir.join(key)).unwrap(), *value);
        }
        set(&stack, "WATCHED", "two");
        let reloading = notify.until("RELOADING=1");
        assert!(
            reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
            "systemd >= 253 needs MONOTONIC_USEC with RELOADING=1: {reloading}"
        );
        notify.until("READY=1");
        assert_eq!(fs::read_to_string(dir.join("WATCHED")).unwrap(), "two");
        notify.stop_after_one_change(&mut sidecar);
        assert!(
            notify.lines(&["WATCHDOG="]).is_empty(),
            "WATCHDOG=1 without WATCHDOG_USEC"
        );
    }

    /// Templates only: RELOADING/READY follow what is delivered, not the
    /// fetched set. A change to a secret no template uses announces nothing;
    /// one that changes a rendering is announced around its rewrite.
    #[test]
    fn write_watch_with_templates_notifies_only_a_change_that_shows_in_a_rendering() {
        let Some(scratch) = tmpfs_scratch() else {
            return;
        };
        let stack = stack_with((3600, 86_400), false);
        set(&stack, "UNUSED", "u0");
        let mut notify = NotifySocket::new();
        let src = scratch.path().join("a.j2");
        fs::write(&src, "w={{ WATCHED }}\n").unwrap();
        let dest = scratch.path().join("out").join("a.conf");
        let template = format!("{}:{}", src.display(), dest.display());
        let socket = notify.path.clone();
        let mut sidecar = Watched::sidecar(&stack, "1s", &["--template", &template], |l| {
            l.env("NOTIFY_SOCKET", &socket);
        });
        notify.until("READY=1");
        assert_eq!(fs::read_to_string(&dest).unwrap(), "w=one\n");
        set(&stack, "UNUSED", "u1");
        // A changed set is applied one settle window (the next poll) after it
        // is first seen: five polls leave room for that.
        let reads = secret_requests(&stack).len();
        wait_for("5 polls", WAIT, || {
            (secret_requests(&stack).len() >= reads + 5).then_some(())
        });
        notify.drain(Duration::from_millis(300));
        assert_eq!(
            notify.lines(&["READY=", "RELOADING="]),
            ["READY=1"],
            "a change no template shows was announced"
        );
        set(&stack, "WATCHED", "two");
        notify.until("RELOADING=1");
        notify.until("READY=1");
        assert_eq!(fs::read_to_string(&dest).unwrap(), "w=two\n");
        notify.stop_after_one_change(&mut sidecar);
    }

    #[test]
    fn run_watch_notifies_after_the_program_starts_and_keeps_notify_socket_from_it() {
        let stack = stack_with((3600, 86_400), false);
        let mut notify = NotifySocket::new();
        let socket = notify.path.clone();
        let mut launcher = Watched::start_with(
            &stack,
            &[
                "run",
                "--watch",
                "--",
                "sh",
                "-c",
                "env -0 > \"$D/env\"; exec sleep 60",
            ],
            |l| {
                l.env("NOTIFY_SOCKET", &socket)
                    .env("WATCHDOG_USEC", "60000000");
            },
        );
        let ready = notify.until("READY=1");
        assert!(ready.contains("pid"), "{ready}");
        let env = launcher.wait_file("env");
        let env = parse_env0(env.as_bytes());
        for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            assert!(!env.contains_key(name), "the program got {name}");
        }
        launcher.signal(Signal::SIGTERM);
        notify.until("STOPPING=1");
        launcher.finish();
    }

    #[test]
    fn exec_mode_sends_nothing_and_passes_notify_socket_to_the_program_untouched() {
        let stack = Stack::start();
        let mut notify = NotifySocket::new();
        let out = Launcher::on(&stack)
            .env("NOTIFY_SOCKET", &notify.path)
            .args(["run", "--", "env", "-0"])
            .limit(WAIT)
            .run();
        out.expect_code(0);
        let env = out.child_env();
        assert_eq!(
            env.get("NOTIFY_SOCKET").map(Vec::as_slice),
            Some(notify.path.as_os_str().as_encoded_bytes())
        );
        assert!(
            notify.drain(Duration::from_millis(300)).is_empty(),
            "{:?}",
            notify.seen
        );
    }

    #[test]
    fn watchdog_pings_come_when_watchdog_usec_asks_and_not_for_another_pid() {
        let stack = stack_with((3600, 86_400), false);
        let dir = tempfile::tempdir().unwrap();
        let mut notify = NotifySocket::new();
        let socket = notify.path.clone();
        let files = dir.path().join("files");
        let files = dir_str(&files).to_owned();
        let mut sidecar = Watched::start_with(
            &stack,
            &["write", "--watch", "--allow-non-tmpfs", "--dir", &files],
            |l| {
                l.env("NOTIFY_SOCKET", &socket)
                    .env("WATCHDOG_USEC", "200000");
            },
        );
        notify.until("READY=1");
        notify.until("WATCHDOG=1");
        notify.until("WATCHDOG=1");
        assert_eq!(sidecar.stop(), 0);

        // WATCHDOG_PID names another process: not ours to ping.
        let mut notify = NotifySocket::new();
        let socket = notify.path.clone();
        let mut sidecar = Watched::start_with(
            &stack,
            &["write", "--watch", "--allow-non-tmpfs", "--dir", &files],
            |l| {
                l.env("NOTIFY_SOCKET", &socket)
                    .env("WATCHDOG_USEC", "200000")
                    .env("WATCHDOG_PID", "1");
            },
        );
        notify.until("READY=1");
        notify.drain(Duration::from_millis(600));
        assert_eq!(sidecar.stop(), 0);
        assert!(notify.lines(&["WATCHDOG="]).is_empty(), "{:?}", notify.seen);
    }

    #[test]
    fn status_says_what_the_start_up_waits_for() {
        // No agent at the socket.
        let stack = stack_with((3600, 86_400), false);
        let mut notify = NotifySocket::new();
        let socket = notify.path.clone();
        let mut waiting = Watched::start_with(
            &stack,
            &["run", "--watch", "--startup-timeout", "3s", "--", "true"],
            |l| {
                l.env("NOTIFY_SOCKET", &socket)
                    .env("SPIFFE_ENDPOINT_SOCKET", "unix:///nonexistent/agent.sock");
            },
        );
        assert_eq!(waiting.finish(), 69, "{}", waiting.stderr());
        notify.drain(Duration::from_millis(100));
        let status = notify.lines(&["STATUS="]);
        assert!(
            status.iter().any(
                |s| s.contains("waiting for the SPIRE agent at unix:///nonexistent/agent.sock")
            ),
            "{status:?}"
        );

        // Infisical answering 503.
        let mut notify = NotifySocket::new();
        let socket = notify.path.clone();
        stack
            .infisical
            .fail_next("/api/v1/auth/oidc-auth/login", 2, Fault::Status(503));
        let mut launcher =
            Watched::start_with(&stack, &["run", "--watch", "--", "sleep", "60"], |l| {
                l.env("NOTIFY_SOCKET", &socket);
            });
        notify.until("READY=1");
        let status = notify.lines(&["STATUS="]);
        assert!(
            status
                .iter()
                .any(|s| s.contains("503") && s.contains("retrying")),
            "{status:?}"
        );
        launcher.stop();
    }
}
