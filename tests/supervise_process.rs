//! Process tests of the supervisor, ported from tini's test suite: exit codes,
//! 128+N, signal forwarding, process-group kills, orphan reaping, clean signal
//! state in the child, exec failures, and restart/signal on a secret change.
//!
//! This target has `harness = false` and is two programs in one: run with no
//! arguments (or a name filter) it is the test runner; re-executed with
//! `__supervise [options] -- COMMAND...` it is the supervisor under test, started
//! through `svid_exec::launch::supervise::{prepare, run}` exactly as `main` will,
//! with a file-backed stand-in for the network side. It must be its own process
//! because signals have to be blocked before any thread exists, and libtest runs
//! tests on threads. When `run --watch` is wired into the CLI, these cases can
//! drive the real binary instead.

use std::ffi::OsString;
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use svid_exec::config;
use svid_exec::launch::supervise::{
    self, ChildCommand, Delivery, DeliveryError, Network, Reply, Request, Settings,
};
use svid_exec::error::Failure;
use svid_exec::secrets::SecretSet;

// ---------------------------------------------------------------------------
// The supervisor side (`__supervise`)

/// Polls read `KEY=VALUE` lines from a file; revocation is recorded in a log file.
struct FileNetwork {
    secrets_file: Option<PathBuf>,
    log: Option<PathBuf>,
}

fn read_secrets(path: &Path) -> Option<SecretSet> {
    let text = fs::read_to_string(path).ok()?;
    let mut set = SecretSet::new();
    for line in text.lines() {
        let (k, v) = line.split_once('=')?;
        set.insert(k, SecretString::from(v.to_owned()));
    }
    Some(set)
}

impl Network for FileNetwork {
    fn call(&mut self, request: Request) -> impl std::future::Future<Output = Reply> {
        let reply = match request {
            Request::Poll => match self.secrets_file.as_deref().and_then(read_secrets) {
                Some(set) => Reply::Fetched(set),
                None => Reply::PollFailed {
                    reason: "no secrets file".into(),
                    auth: false,
                },
            },
            Request::Renew | Request::Relogin => Reply::TokenReady {
                renew_in: Duration::from_secs(3600),
            },
            Request::Revoke => {
                if let Some(log) = &self.log {
                    fs::write(log, "revoked\n").expect("write the revoke log");
                }
                Reply::Revoked
            }
        };
        async move { reply }
    }
}

/// Secrets go to the environment, plus `secrets.env` in a directory if given.
struct PassThrough {
    files_dir: Option<PathBuf>,
}

impl Delivery for PassThrough {
    fn write_files(&mut self, secrets: &SecretSet) -> Result<(), DeliveryError> {
        use secrecy::ExposeSecret as _;
        let Some(dir) = &self.files_dir else {
            return Ok(());
        };
        let mut text = String::new();
        for (k, v) in secrets.iter() {
            text.push_str(k);
            text.push('=');
            text.push_str(v.expose_secret());
            text.push('\n');
        }
        let tmp = dir.join(".secrets.env.tmp");
        fs::write(&tmp, text)?;
        fs::rename(&tmp, dir.join("secrets.env"))?;
        Ok(())
    }

    fn child_env(&self, secrets: &SecretSet, command: &mut Command) {
        use secrecy::ExposeSecret as _;
        // The test's scratch directory ($D) and PATH, then the secrets.
        for name in ["PATH", "D"] {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        for (k, v) in secrets.iter() {
            command.env(k, v.expose_secret());
        }
    }

    fn remove_files(&mut self) {
        if let Some(dir) = &self.files_dir {
            let _ = fs::remove_file(dir.join("secrets.env"));
        }
    }
}

fn supervise_main(args: &[OsString]) -> ExitCode {
    // Logging first (it starts no thread), so prepare's warnings are seen; then,
    // before any thread: block signals, start the reader, harden, subreaper.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::DEBUG)
        .init();
    let reader = match supervise::prepare(false) {
        Ok(reader) => reader,
        Err(err) => {
            eprintln!("harness: {err}");
            return ExitCode::from(err.exit_class().code());
        }
    };
    let mut settings = Settings::new(Duration::from_secs(3600));
    settings.stop_timeout = Duration::from_secs(5);
    settings.jitter_seed = 1;
    let (mut secrets_file, mut log, mut files_dir) = (None, None, None);
    let mut self_report = None;
    let mut it = args.iter().map(|a| a.to_str().expect("utf-8 option"));
    let mut command = Vec::new();
    while let Some(arg) = it.next() {
        let mut value = || it.next().expect("option value").to_owned();
        match arg {
            "--forward-to" => {
                settings.forward_to = config::parse_forward_to(&value()).expect("forward-to");
            }
            "--on-change" => {
                settings.on_change = config::parse_on_change(&value()).expect("on-change");
            }
            "--poll-ms" => {
                let ms = value().parse().expect("poll-ms");
                settings.poll_interval = Duration::from_millis(ms);
                settings.settle = Duration::from_millis(ms);
                settings.max_settle = Duration::from_millis(ms * 6);
            }
            "--stop-timeout-ms" => {
                settings.stop_timeout = Duration::from_millis(value().parse().expect("ms"));
            }
            "--secrets-file" => secrets_file = Some(PathBuf::from(value())),
            "--log" => log = Some(PathBuf::from(value())),
            "--files-dir" => files_dir = Some(PathBuf::from(value())),
            "--self-report" => self_report = Some(PathBuf::from(value())),
            "--" => {
                command.extend(args[args.len() - it.len()..].iter().cloned());
                break;
            }
            other => panic!("harness: unknown option {other}"),
        }
    }
    if let Some(path) = self_report {
        // What prepare() did to this process, seen from inside it.
        let dumpable = nix::sys::prctl::get_dumpable().expect("PR_GET_DUMPABLE");
        let (core, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_CORE)
            .expect("getrlimit");
        fs::write(path, format!("dumpable={dumpable} core={core}\n")).expect("self report");
    }
    let secrets = secrets_file
        .as_deref()
        .and_then(read_secrets)
        .unwrap_or_default();
    // No command: the sidecar form (`write --watch`).
    let child = (!command.is_empty()).then(|| ChildCommand {
        program: command.remove(0),
        args: command,
        cwd: None,
    });
    let network = FileNetwork { secrets_file, log };
    let delivery = PassThrough { files_dir };
    match supervise::run(
        reader,
        child.as_ref(),
        settings,
        secrets,
        None,
        network,
        delivery,
    ) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("harness: {err}");
            ExitCode::from(err.exit_class().code())
        }
    }
}

// ---------------------------------------------------------------------------
// The test side

const TIMEOUT: Duration = Duration::from_secs(20);

struct Supervisor {
    child: Child,
    dir: tempfile::TempDir,
}

impl Supervisor {
    fn start(options: &[&str], command: &[&str]) -> Self {
        Self::start_via(&[], options, command)
    }

    /// Starts the supervisor through `launcher` (a command that ends by exec'ing its
    /// arguments), e.g. `unshare ... --fork`.
    fn start_via(launcher: &[&str], options: &[&str], command: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let exe = std::env::current_exe().expect("current exe");
        let mut cmd = match launcher.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(&exe);
                cmd
            }
            None => Command::new(&exe),
        };
        cmd.arg("__supervise")
            .args(options)
            .arg("--")
            .args(command)
            .env("D", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().expect("start the supervisor");
        Self { child, dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits (bounded) for a file to exist with content, and returns it.
    fn wait_file(&self, name: &str) -> String {
        wait_for(&format!("file {name}"), || {
            fs::read_to_string(self.path(name))
                .ok()
                .filter(|s| !s.is_empty())
        })
    }

    /// Waits (bounded) for the supervisor to exit; returns (code, stdout, stderr).
    fn finish(mut self) -> (i32, String, String) {
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let mut err = String::new();
                let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
                panic!("the supervisor did not exit within {TIMEOUT:?}; stderr:\n{err}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let (mut out, mut err) = (String::new(), String::new());
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let code = status.code().unwrap_or_else(|| {
            panic!("the supervisor itself was killed ({status:?}); stderr:\n{err}")
        });
        (code, out, err)
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sh(script: &str) -> Vec<&str> {
    vec!["sh", "-c", script]
}

/// The state letter of a process from /proc (None: no such process).
fn proc_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

fn exit_codes_pass_through() {
    for n in [0, 1, 2, 42, 77, 126, 127, 128, 143, 200, 255] {
        let sup = Supervisor::start(&[], &sh(&format!("exit {n}")));
        let (code, _, err) = sup.finish();
        assert_eq!(code, n, "stderr:\n{err}");
    }
}

fn signalled_child_exits_128_plus_signal() {
    for (name, n) in [("TERM", 15), ("HUP", 1), ("QUIT", 3), ("KILL", 9)] {
        let sup = Supervisor::start(&[], &sh(&format!("kill -{name} $$")));
        let (code, _, err) = sup.finish();
        assert_eq!(code, 128 + n, "SIG{name}; stderr:\n{err}");
    }
}

/// `SIGRTMIN+3` on this libc (glibc reserves two real-time signals, so usually 37).
fn rtmin_plus_3() -> i32 {
    nix::libc::SIGRTMIN() + 3
}

fn a_child_killed_by_a_real_time_signal_exits_128_plus_its_number() {
    let n = rtmin_plus_3();
    let sup = Supervisor::start(&[], &sh(&format!("kill -{n} $$")));
    let (code, _, err) = sup.finish();
    assert_eq!(code, 128 + n, "SIGRTMIN+3 ({n}); stderr:\n{err}");
}

fn a_forwarded_real_time_signal_that_kills_the_child_ends_the_supervisor() {
    let n = rtmin_plus_3();
    let sup = Supervisor::start(
        &[],
        &sh("echo ready > \"$D/ready\"; while :; do sleep 0.05; done"),
    );
    sup.wait_file("ready");
    sup.signal(&n.to_string());
    let (code, _, err) = sup.finish();
    assert_eq!(code, 128 + n, "forwarded SIGRTMIN+3 ({n}); stderr:\n{err}");
}

fn term_usr1_usr2_are_forwarded_to_the_child() {
    for name in ["USR1", "USR2", "TERM"] {
        for forward in ["group", "child"] {
            let script = format!(
                "trap 'echo {name} > \"$D/got\"; exit 7' {name}; echo ready > \"$D/ready\"; \
                 while :; do sleep 0.05; done"
            );
            let sup = Supervisor::start(&["--forward-to", forward], &sh(&script));
            sup.wait_file("ready");
            sup.signal(name);
            let got = sup.wait_file("got");
            let (code, _, err) = sup.finish();
            assert_eq!(got.trim(), name);
            assert_eq!(code, 7, "{name} to {forward}; stderr:\n{err}");
        }
    }
}

fn group_forwarding_reaches_a_grandchild_and_child_forwarding_does_not() {
    for (forward, grandchild_dies) in [("group", true), ("child", false)] {
        // The child handles USR1 itself; its background grandchild has the default
        // action (terminate), so only a group-wide signal kills it.
        let script = "sleep 30 & echo $! > \"$D/gc\"; \
             trap 'echo got > \"$D/usr1\"' USR1; echo ready > \"$D/ready\"; \
             while :; do sleep 0.05; done";
        let sup = Supervisor::start(&["--forward-to", forward], &sh(script));
        sup.wait_file("ready");
        let gc: i32 = sup.wait_file("gc").trim().parse().unwrap();
        sup.signal("USR1");
        sup.wait_file("usr1");
        if grandchild_dies {
            // Dead: gone, or a zombie until its parent (the shell) waits for it.
            wait_for("the grandchild to die", || {
                matches!(proc_state(gc), None | Some('Z')).then_some(())
            });
        } else {
            std::thread::sleep(Duration::from_millis(300));
            assert!(
                matches!(proc_state(gc), Some('S' | 'R')),
                "the grandchild should live with --forward-to child"
            );
            let _ = Command::new("kill").arg(gc.to_string()).status();
        }
        sup.signal("TERM");
        let (code, _, err) = sup.finish();
        assert_eq!(code, 128 + 15, "{forward}; stderr:\n{err}");
    }
}

fn an_orphaned_grandchild_is_reaped_by_the_subreaper() {
    // The subshell starts `sleep` and exits at once: the sleep is orphaned and must
    // be re-parented to the supervisor ($PPID), which must reap it when it ends.
    let script = "(sleep 0.5 & echo $! > \"$D/orphan\"); o=$(cat \"$D/orphan\"); \
         grep '^PPid:' /proc/$o/status > \"$D/ppid\"; sleep 2; \
         if [ -e /proc/$o ]; then cat /proc/$o/stat > \"$D/left\"; exit 1; fi; exit 0";
    let sup = Supervisor::start(&[], &sh(script));
    let supervisor_pid = sup.pid();
    let ppid = sup.wait_file("ppid");
    let left = sup.path("left");
    let (code, _, err) = sup.finish();
    assert_eq!(
        ppid.split_whitespace().nth(1),
        Some(supervisor_pid.to_string().as_str()),
        "the orphan was not re-parented to the supervisor"
    );
    assert_eq!(
        code,
        0,
        "the orphan was not reaped ({:?}); stderr:\n{err}",
        fs::read_to_string(left).ok()
    );
}

fn the_child_starts_with_a_clean_signal_mask_and_default_dispositions() {
    // Start the supervisor with HUP and INT ignored (as `nohup` would) to show the
    // child does not inherit that, nor our blocked mask.
    let sup = Supervisor::start_via(
        &["sh", "-c", "trap '' HUP INT; exec \"$@\"", "sh"],
        &[],
        &["cat", "/proc/self/status"],
    );
    let (code, out, err) = sup.finish();
    assert_eq!(code, 0, "stderr:\n{err}");
    for field in ["SigBlk", "SigIgn"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{field}:")))
            .unwrap_or_else(|| panic!("no {field} in:\n{out}"));
        let mask = line.split_whitespace().nth(1).unwrap();
        assert!(mask.chars().all(|c| c == '0'), "{line}");
    }
}

fn the_supervisor_cannot_dump_core_but_its_child_keeps_its_core_limit() {
    let report = tempfile::NamedTempFile::new().unwrap();
    let report_path = report.path().to_str().unwrap();
    let sup = Supervisor::start_via(
        &["sh", "-c", "ulimit -c 4096; exec \"$@\"", "sh"],
        &["--self-report", report_path],
        &["cat", "/proc/self/limits"],
    );
    let (code, out, err) = sup.finish();
    assert_eq!(code, 0, "stderr:\n{err}");
    assert_eq!(
        fs::read_to_string(report.path()).unwrap(),
        "dumpable=false core=0\n"
    );
    let core_line = out
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap_or_else(|| panic!("no core limit in:\n{out}"));
    let soft = core_line.split_whitespace().nth(4).unwrap();
    assert_ne!(
        soft, "0",
        "the child's core limit was not restored: {core_line}"
    );
}

fn exec_failures_exit_127_not_found_and_126_not_executable() {
    let sup = Supervisor::start(&[], &["/nonexistent/svid-exec-test-cmd"]);
    let (code, _, err) = sup.finish();
    assert_eq!(code, 127);
    assert!(err.contains("/nonexistent/svid-exec-test-cmd"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("not-executable");
    fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    let sup = Supervisor::start(&[], &[script.to_str().unwrap()]);
    let (code, _, err) = sup.finish();
    assert_eq!(code, 126, "{err}");
    assert!(err.contains("not-executable"), "{err}");
}

fn an_environment_too_large_to_exec_exits_78_like_exec_mode() {
    // One variable longer than MAX_ARG_STRLEN (32 pages): execve says E2BIG.
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    write_secrets(&secrets, &format!("BIG={}\n", "x".repeat(200_000)));
    let sup = Supervisor::start(&["--secrets-file", secrets.to_str().unwrap()], &["true"]);
    let (code, _, err) = sup.finish();
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("E2BIG"), "{err}");
    assert!(!err.contains("xxxx"), "no secret value in the log");
}

const PID_NAMESPACE: &[&str] = &[
    "unshare",
    "--user",
    "--map-root-user",
    "--pid",
    "--fork",
    "--mount-proc",
];

/// Whether this machine lets an unprivileged user create user + PID namespaces.
fn pid_namespaces_available() -> bool {
    Command::new(PID_NAMESPACE[0])
        .args(&PID_NAMESPACE[1..])
        .arg("true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn as_pid_1_orphans_are_reaped_and_the_exit_code_passes_through() {
    let script = "(sleep 0.5 & echo $! > \"$D/orphan\"); o=$(cat \"$D/orphan\"); \
         grep '^PPid:' /proc/$o/status > \"$D/ppid\"; echo $PPID > \"$D/parent\"; sleep 2; \
         if [ -e /proc/$o ]; then exit 1; fi; exit 42";
    let sup = Supervisor::start_via(PID_NAMESPACE, &[], &sh(script));
    let ppid = sup.wait_file("ppid");
    let parent = sup.wait_file("parent");
    let (code, _, err) = sup.finish();
    assert_eq!(parent.trim(), "1", "the supervisor runs as PID 1");
    assert_eq!(ppid.split_whitespace().nth(1), Some("1"));
    assert_eq!(code, 42, "stderr:\n{err}");
}

fn write_secrets(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, content).unwrap();
    fs::rename(&tmp, path).unwrap();
}

fn a_changed_secret_restarts_the_child_once_with_the_new_environment() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    let log = dir.path().join("revoke.log");
    write_secrets(&secrets, "KEY=one\n");
    let script = "echo \"$$ $KEY\" >> \"$D/starts\"; trap 'exit 0' TERM; \
         while :; do sleep 0.05; done";
    let sup = Supervisor::start(
        &[
            "--poll-ms",
            "100",
            "--secrets-file",
            secrets.to_str().unwrap(),
            "--log",
            log.to_str().unwrap(),
        ],
        &sh(script),
    );
    sup.wait_file("starts");
    // Unchanged polls never restart.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(sup.wait_file("starts").lines().count(), 1);
    write_secrets(&secrets, "KEY=two\n");
    let starts = wait_for("a restart", || {
        let text = fs::read_to_string(sup.path("starts")).ok()?;
        (text.lines().count() >= 2).then_some(text)
    });
    std::thread::sleep(Duration::from_millis(600));
    let starts_after = fs::read_to_string(sup.path("starts")).unwrap();
    sup.signal("TERM");
    let (code, _, err) = sup.finish();
    assert_eq!(code, 0, "stderr:\n{err}");
    assert_eq!(starts, starts_after, "restarted more than once");
    let lines: Vec<Vec<&str>> = starts.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines.len(), 2, "{starts}");
    assert_eq!(lines[0][1], "one");
    assert_eq!(lines[1][1], "two");
    assert_ne!(
        lines[0][0], lines[1][0],
        "the restarted child has a new pid"
    );
    assert_eq!(fs::read_to_string(&log).unwrap(), "revoked\n");
}

fn signal_mode_signals_the_child_after_rewriting_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    let files = dir.path().join("files");
    fs::create_dir(&files).unwrap();
    write_secrets(&secrets, "KEY=one\n");
    let script = "echo $$ >> \"$D/starts\"; \
         trap 'cat \"$F/secrets.env\" > \"$D/seen\"' HUP; \
         while :; do sleep 0.05; done";
    let mut options = vec!["--poll-ms", "100", "--on-change", "signal:HUP"];
    let (secrets_arg, files_arg) = (secrets.to_str().unwrap(), files.to_str().unwrap());
    options.extend(["--secrets-file", secrets_arg, "--files-dir", files_arg]);
    let sup = Supervisor::start(&options, &sh(&script.replace("$F", files_arg)));
    sup.wait_file("starts");
    assert_eq!(
        fs::read_to_string(files.join("secrets.env")).unwrap(),
        "KEY=one\n"
    );
    write_secrets(&secrets, "KEY=two\n");
    let seen = sup.wait_file("seen");
    let starts = fs::read_to_string(sup.path("starts")).unwrap();
    sup.signal("TERM");
    let (code, _, err) = sup.finish();
    assert_eq!(
        seen, "KEY=two\n",
        "the files were rewritten before the signal"
    );
    assert_eq!(starts.lines().count(), 1, "signal mode must not restart");
    assert_eq!(code, 128 + 15, "stderr:\n{err}");
    assert!(
        !files.join("secrets.env").exists(),
        "files are removed at shutdown"
    );
}

fn a_child_that_ignores_the_stop_signal_is_killed_after_the_timeout() {
    let script = "trap '' TERM; echo ready > \"$D/ready\"; while :; do sleep 0.05; done";
    let sup = Supervisor::start(&["--stop-timeout-ms", "300"], &sh(script));
    sup.wait_file("ready");
    sup.signal("TERM");
    let (code, _, err) = sup.finish();
    assert_eq!(code, 128 + 9, "stderr:\n{err}");
}

fn the_sidecar_keeps_files_fresh_and_exits_0_on_term() {
    let dir = tempfile::tempdir().unwrap();
    let (secrets, files, log) = (
        dir.path().join("secrets"),
        dir.path().join("files"),
        dir.path().join("revoke.log"),
    );
    fs::create_dir(&files).unwrap();
    write_secrets(&secrets, "KEY=one\n");
    let sup = Supervisor::start(
        &[
            "--poll-ms",
            "100",
            "--secrets-file",
            secrets.to_str().unwrap(),
            "--files-dir",
            files.to_str().unwrap(),
            "--log",
            log.to_str().unwrap(),
        ],
        &[],
    );
    let file = files.join("secrets.env");
    wait_for("the first files", || fs::read_to_string(&file).ok());
    write_secrets(&secrets, "KEY=two\n");
    wait_for("the files to change", || {
        (fs::read_to_string(&file).ok()? == "KEY=two\n").then_some(())
    });
    sup.signal("TERM");
    let (code, _, err) = sup.finish();
    assert_eq!(code, 0, "stderr:\n{err}");
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        "KEY=two\n",
        "files stay"
    );
    assert_eq!(fs::read_to_string(&log).unwrap(), "revoked\n");
}

// ---------------------------------------------------------------------------
// A minimal runner

/// A test: its name, a precondition (None: always runs) and the body.
type Test = (&'static str, Option<(fn() -> bool, &'static str)>, fn());

const TESTS: &[Test] = &[
    (
        "as_pid_1_orphans_are_reaped_and_the_exit_code_passes_through",
        Some((
            pid_namespaces_available,
            "needs unprivileged user + PID namespaces (unshare)",
        )),
        as_pid_1_orphans_are_reaped_and_the_exit_code_passes_through,
    ),
    ("exit_codes_pass_through", None, exit_codes_pass_through),
    (
        "signalled_child_exits_128_plus_signal",
        None,
        signalled_child_exits_128_plus_signal,
    ),
    (
        "a_child_killed_by_a_real_time_signal_exits_128_plus_its_number",
        None,
        a_child_killed_by_a_real_time_signal_exits_128_plus_its_number,
    ),
    (
        "a_forwarded_real_time_signal_that_kills_the_child_ends_the_supervisor",
        None,
        a_forwarded_real_time_signal_that_kills_the_child_ends_the_supervisor,
    ),
    (
        "term_usr1_usr2_are_forwarded_to_the_child",
        None,
        term_usr1_usr2_are_forwarded_to_the_child,
    ),
    (
        "group_forwarding_reaches_a_grandchild_and_child_forwarding_does_not",
        None,
        group_forwarding_reaches_a_grandchild_and_child_forwarding_does_not,
    ),
    (
        "an_orphaned_grandchild_is_reaped_by_the_subreaper",
        None,
        an_orphaned_grandchild_is_reaped_by_the_subreaper,
    ),
    (
        "the_child_starts_with_a_clean_signal_mask_and_default_dispositions",
        None,
        the_child_starts_with_a_clean_signal_mask_and_default_dispositions,
    ),
    (
        "exec_failures_exit_127_not_found_and_126_not_executable",
        None,
        exec_failures_exit_127_not_found_and_126_not_executable,
    ),
    (
        "an_environment_too_large_to_exec_exits_78_like_exec_mode",
        None,
        an_environment_too_large_to_exec_exits_78_like_exec_mode,
    ),
    (
        "a_changed_secret_restarts_the_child_once_with_the_new_environment",
        None,
        a_changed_secret_restarts_the_child_once_with_the_new_environment,
    ),
    (
        "signal_mode_signals_the_child_after_rewriting_its_files",
        None,
        signal_mode_signals_the_child_after_rewriting_its_files,
    ),
    (
        "a_child_that_ignores_the_stop_signal_is_killed_after_the_timeout",
        None,
        a_child_that_ignores_the_stop_signal_is_killed_after_the_timeout,
    ),
    (
        "the_supervisor_cannot_dump_core_but_its_child_keeps_its_core_limit",
        None,
        the_supervisor_cannot_dump_core_but_its_child_keeps_its_core_limit,
    ),
    (
        "the_sidecar_keeps_files_fresh_and_exits_0_on_term",
        None,
        the_sidecar_keeps_files_fresh_and_exits_0_on_term,
    ),
];

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if args.first().is_some_and(|a| a == "__supervise") {
        return supervise_main(&args[1..]);
    }
    // Like libtest: `--list` lists, the first non-flag argument filters by substring.
    let names: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if names.iter().any(|a| a == "--list") {
        for (name, _, _) in TESTS {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    let filter = names.iter().find(|a| !a.starts_with('-')).cloned();
    let selected: Vec<&Test> = TESTS
        .iter()
        .filter(|(name, _, _)| filter.as_deref().is_none_or(|f| name.contains(f)))
        .collect();
    println!("\nrunning {} tests", selected.len());
    let mut failed = Vec::new();
    for (name, precondition, test) in selected {
        if let Some((available, why)) = precondition {
            if !available() {
                println!("test {name} ... ignored, {why}");
                continue;
            }
        }
        let outcome = std::panic::catch_unwind(test);
        println!(
            "test {name} ... {}",
            if outcome.is_ok() { "ok" } else { "FAILED" }
        );
        if outcome.is_err() {
            failed.push(*name);
        }
    }
    if failed.is_empty() {
        println!("\ntest result: ok");
        ExitCode::SUCCESS
    } else {
        println!("\ntest result: FAILED ({})", failed.join(", "));
        ExitCode::FAILURE
    }
}
