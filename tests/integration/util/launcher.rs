//! Running the real `svid-exec` binary: [`Launcher`] builds the command (a
//! cleared environment with only `PATH`, plus what the test adds), runs it to
//! completion within a time limit ([`Launcher::run`] → [`Outcome`]) or in the
//! background ([`Launcher::spawn`] → [`Running`]), capturing its output.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use svid_exec_testkit::stack::Stack;

use super::assert_no_secret;

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_svid-exec");

/// The `PATH` every launcher starts with.
const PATH: &str = "/usr/bin:/bin";

/// How long a launcher may run unless the test says otherwise: a hung
/// launcher or child is killed and the test fails.
const DEFAULT_LIMIT: Duration = Duration::from_secs(60);

/// How long the output may still come after the process exited (a
/// descendant that outlives it may hold the pipes).
const OUTPUT_GRACE: Duration = Duration::from_secs(10);

/// Where the launcher's standard output goes.
#[derive(Debug)]
enum Sink {
    Capture,
    Null,
    File(File),
}

/// `svid-exec ARGS` as a user runs it; built like [`Command`] (`&mut self`
/// methods), run with [`Launcher::run`] or [`Launcher::spawn`].
#[derive(Debug)]
pub struct Launcher {
    /// The svid-exec binary: the one under test unless [`Launcher::binary`]
    /// names another (the load test's `LOAD_BIN`, a release build).
    binary: PathBuf,
    /// A program that ends by running the binary with its own arguments
    /// (`sh -c '…; exec "$0" "$@"'`, `setpriv … --`, `unshare … --fork`).
    via: Vec<OsString>,
    args: Vec<OsString>,
    env: BTreeMap<OsString, OsString>,
    cwd: Option<PathBuf>,
    limit: Duration,
    stdout: Sink,
    marker: Option<PathBuf>,
    audit: bool,
}

impl Default for Launcher {
    fn default() -> Self {
        Self::new()
    }
}

impl Launcher {
    /// The binary with a cleared environment holding only `PATH` (so the
    /// developer's own `INFISICAL_*` cannot leak in), stdin from /dev/null.
    pub fn new() -> Self {
        Self {
            binary: PathBuf::from(BIN),
            via: Vec::new(),
            args: Vec::new(),
            env: BTreeMap::from([("PATH".into(), PATH.into())]),
            cwd: None,
            limit: DEFAULT_LIMIT,
            stdout: Sink::Capture,
            marker: None,
            audit: false,
        }
    }

    /// [`Launcher::new`] plus the environment a user exports to point
    /// svid-exec at `stack` (agent socket, API URL, CA, OIDC identity,
    /// project, environment).
    pub fn on(stack: &Stack) -> Self {
        let mut launcher = Self::new();
        launcher.envs(stack.launcher_env());
        launcher
    }

    /// [`Launcher::on`] `stack` as `svid-exec run [ARGS] -- touch MARKER`
    /// (a marker in the stack's directory, so the [`Outcome`] says whether
    /// the program ran), standard output to /dev/null, within `limit`, every
    /// outcome [audited](Launcher::audited): the set-up of the tests that
    /// make the launcher fail at start.
    pub fn run_on(stack: &Stack, limit: Duration) -> Self {
        let mut launcher = Self::on(stack);
        launcher
            .arg("run")
            .marked_program(stack.dir())
            .stdout_null()
            .limit(limit)
            .audited();
        launcher
    }

    /// Runs `binary` instead of the svid-exec under test (e.g. a release
    /// build, to measure it).
    pub fn binary(&mut self, binary: impl AsRef<Path>) -> &mut Self {
        binary.as_ref().clone_into(&mut self.binary);
        self
    }

    /// Starts the binary through `program ARGS…` instead, which must end by
    /// running its remaining arguments: the binary's path, then the launcher's.
    pub fn via<S: AsRef<OsStr>>(&mut self, program: &[S]) -> &mut Self {
        self.via = program.iter().map(|s| s.as_ref().to_owned()).collect();
        self
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<S: AsRef<OsStr>>(&mut self, args: impl IntoIterator<Item = S>) -> &mut Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets (or replaces) an environment variable.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.env
            .insert(key.as_ref().to_owned(), value.as_ref().to_owned());
        self
    }

    pub fn envs<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        &mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> &mut Self {
        for (k, v) in vars {
            self.env(k, v);
        }
        self
    }

    /// Removes an environment variable (`PATH` too).
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Self {
        self.env.remove(key.as_ref());
        self
    }

    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }

    /// The time limit of [`Launcher::run`] and [`Running::wait`].
    pub fn limit(&mut self, limit: Duration) -> &mut Self {
        self.limit = limit;
        self
    }

    /// Standard output to /dev/null instead of captured.
    pub fn stdout_null(&mut self) -> &mut Self {
        self.stdout = Sink::Null;
        self
    }

    /// Standard output to `file` instead of captured (once: the next run
    /// captures again).
    pub fn stdout_to(&mut self, file: File) -> &mut Self {
        self.stdout = Sink::File(file);
        self
    }

    /// Ends the arguments (whenever this is called) with `-- touch MARKER`,
    /// a fresh file name in `dir`: the [`Outcome`] then says whether the
    /// program ran ([`Outcome::ran`]).
    pub fn marked_program(&mut self, dir: &Path) -> &mut Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        self.marker = Some(dir.join(format!(
            "ran-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )));
        self
    }

    /// Audits every outcome: prints it (shown by libtest when the test fails,
    /// or with `--nocapture`) and asserts that stderr holds no secret
    /// ([`assert_no_secret`]) and no panic.
    pub fn audited(&mut self) -> &mut Self {
        self.audit = true;
        self
    }

    fn command(&self) -> Command {
        let mut command = match self.via.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(&self.binary);
                command
            }
            None => Command::new(&self.binary),
        };
        command.args(&self.args);
        if let Some(marker) = &self.marker {
            command.args(["--", "touch"]).arg(marker);
        }
        command
            .env_clear()
            .envs(&self.env)
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(cwd) = &self.cwd {
            command.current_dir(cwd);
        }
        command
    }

    /// Starts it in the background.
    ///
    /// # Panics
    /// If it cannot be started.
    pub fn spawn(&mut self) -> Running {
        let mut command = self.command();
        if let Some(marker) = &self.marker {
            let _ = std::fs::remove_file(marker);
        }
        command.stdout(match std::mem::replace(&mut self.stdout, Sink::Capture) {
            Sink::Capture => Stdio::piped(),
            Sink::Null => Stdio::null(),
            Sink::File(file) => Stdio::from(file),
        });
        let started = Instant::now();
        let mut child = command.spawn().expect("spawn svid-exec");
        let stdout = Captured::start(child.stdout.take());
        let stderr = Captured::start(child.stderr.take());
        Running {
            child: Some(child),
            stdout,
            stderr,
            started,
            limit: self.limit,
            marker: self.marker.clone(),
            audit: self.audit,
        }
    }

    /// Runs it to completion within its time limit.
    ///
    /// # Panics
    /// If it cannot be started, or is still running at the limit.
    pub fn run(&mut self) -> Outcome {
        self.spawn().wait()
    }
}

/// An output stream read to the end on a thread of its own, readable while
/// the process still runs.
#[derive(Debug)]
struct Captured {
    bytes: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
}

impl Captured {
    fn start(stream: Option<impl Read + Send + 'static>) -> Self {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let reader = stream.map(|mut stream| {
            let bytes = Arc::clone(&bytes);
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    bytes
                        .lock()
                        .expect("capture lock")
                        .extend_from_slice(&buf[..n]);
                }
            })
        });
        Self { bytes, reader }
    }

    fn so_far(&self) -> Vec<u8> {
        self.bytes.lock().expect("capture lock").clone()
    }

    /// Everything, once the stream ends (or what came by `deadline`).
    fn finish(&mut self, deadline: Instant) -> Vec<u8> {
        while self.reader.as_ref().is_some_and(|r| !r.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(reader) = self.reader.take_if(|r| r.is_finished()) {
            reader.join().expect("output reader");
        }
        self.so_far()
    }
}

/// A launcher running in the background. Dropping it kills it.
#[derive(Debug)]
pub struct Running {
    child: Option<Child>,
    stdout: Captured,
    stderr: Captured,
    started: Instant,
    limit: Duration,
    marker: Option<PathBuf>,
    audit: bool,
}

impl Running {
    /// The process id (of the wrapper, when started [`Launcher::via`] one
    /// that does not exec).
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.as_ref().expect("running").id()).expect("pid")
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid()), signal).expect("signal svid-exec");
    }

    /// Sends signal number `n` (real-time ones have no name in nix's enum)
    /// with kill(1).
    pub fn signal_number(&self, n: i32) {
        let sent = Command::new("kill")
            .arg(format!("-{n}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{n}");
    }

    /// The marker file of [`Launcher::marked_program`]: its modification
    /// time says when the program ran.
    pub fn marker(&self) -> Option<&Path> {
        self.marker.as_deref()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.so_far()).into_owned()
    }

    /// Waits for it to exit within its time limit (counted from the start).
    ///
    /// # Panics
    /// If it is still running at the limit (it is killed first).
    pub fn wait(self) -> Outcome {
        let deadline = self.started + self.limit;
        self.wait_until(deadline)
    }

    /// Waits for it to exit within `within` from now.
    ///
    /// # Panics
    /// If it is still running then (it is killed first).
    pub fn wait_within(self, within: Duration) -> Outcome {
        self.wait_until(Instant::now() + within)
    }

    fn wait_until(mut self, deadline: Instant) -> Outcome {
        let mut child = self.child.take().expect("running");
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for svid-exec") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "svid-exec did not finish within {:?} of its start; stderr:\n{}",
                    self.started.elapsed(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let elapsed = self.started.elapsed();
        // A descendant may still hold the pipes: wait for the end of the
        // output a little, not for ever.
        let drained = Instant::now() + OUTPUT_GRACE;
        let outcome = Outcome {
            status,
            stdout: self.stdout.finish(drained),
            stderr: String::from_utf8_lossy(&self.stderr.finish(drained)).into_owned(),
            elapsed,
            ran: self.marker.as_deref().map(Path::exists),
        };
        if self.audit {
            println!(
                "--- exit {:?} after {elapsed:?}:\n{}",
                status.code(),
                outcome.stderr
            );
            assert_no_secret(&outcome.stderr, &[]);
            // libtest's wording, and the launcher's own panic hook's.
            for panic in ["panicked", "internal error at"] {
                assert!(
                    !outcome.stderr.contains(panic),
                    "a panic:\n{}",
                    outcome.stderr
                );
            }
        }
        outcome
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What one run of the launcher (and the program it became or ran) left behind.
#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
    /// From start to exit.
    pub elapsed: Duration,
    /// Whether the program ran, with [`Launcher::marked_program`].
    pub ran: Option<bool>,
}

impl Outcome {
    /// The exit code; a launcher killed by a signal is a test failure.
    #[track_caller]
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or_else(|| {
            panic!(
                "svid-exec died from a signal: {:?}\n{}",
                self.status, self.stderr
            )
        })
    }

    /// Standard output as text (lossy).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Asserts the exit code, showing stderr when it differs.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.status.code(),
            Some(code),
            "unexpected exit status {:?}; stderr:\n{}",
            self.status,
            self.stderr
        );
        self
    }

    /// Asserts that stderr mentions `text`.
    #[track_caller]
    pub fn expect_stderr(&self, text: &str) -> &Self {
        assert!(
            self.stderr.contains(text),
            "stderr does not mention {text:?}:\n{}",
            self.stderr
        );
        self
    }

    /// Asserts a refusal: `code`, every one of `messages` on stderr, and the
    /// marked program never ran.
    #[track_caller]
    pub fn expect_refused(&self, code: i32, messages: &[&str]) -> &Self {
        self.expect_code(code);
        for message in messages {
            self.expect_stderr(message);
        }
        assert_eq!(
            self.ran,
            Some(false),
            "the program ran although svid-exec refused; stderr:\n{}",
            self.stderr
        );
        self
    }

    /// Asserts that the marked program ran and its status (0) is the launcher's.
    #[track_caller]
    pub fn expect_ran(&self) -> &Self {
        self.expect_code(0);
        assert_eq!(
            self.ran,
            Some(true),
            "the program did not run; stderr:\n{}",
            self.stderr
        );
        self
    }

    /// The child's environment, printed by `env -0` on stdout.
    pub fn child_env(&self) -> BTreeMap<String, Vec<u8>> {
        parse_env0(&self.stdout)
    }

    /// Asserts that every demo secret reached the child's environment
    /// (`env -0` on stdout) byte for byte.
    #[track_caller]
    pub fn expect_demo_env(&self) -> &Self {
        let env = self.child_env();
        for (key, value) in svid_exec_testkit::stack::DEMO_SECRETS {
            assert_eq!(
                env.get(*key).map(Vec::as_slice),
                Some(value.as_bytes()),
                "{key} not delivered intact; stderr:\n{}",
                self.stderr
            );
        }
        self
    }
}

/// `NAME=value\0` records (`env -0`) into a map; values stay raw bytes, so
/// multi-line values stay whole.
///
/// # Panics
/// On a record without `=` or a name that is not UTF-8.
pub fn parse_env0(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    bytes
        .split(|b| *b == 0)
        .filter(|record| !record.is_empty())
        .map(|record| {
            let eq = record
                .iter()
                .position(|b| *b == b'=')
                .unwrap_or_else(|| panic!("env record without `=`: {record:?}"));
            (
                String::from_utf8(record[..eq].to_vec()).expect("UTF-8 name"),
                record[eq + 1..].to_vec(),
            )
        })
        .collect()
}
