//! `cargo run --example quickstart`: the whole svid-exec flow on one machine.
//! Starts the stand-ins in-process (a SPIRE agent's Workload API, SPIRE's OIDC
//! discovery provider, an Infisical server; all local, no network), runs the
//! real `svid-exec` binary against them (`run`, `write --dir`, `check`, then
//! `run --watch` through a change of a secret) and tells, from svid-exec's own
//! JSON log lines and from what the program really received, what happened at
//! each step. Values are never printed.
//!
//! The same executable is the demo program: started as `quickstart child`, it
//! reports the name and length of every variable it received, then exits 3 so
//! the exit status pass-through is visible; as `quickstart watched FILE` it
//! appends one line per start (its pid and GREETING's length) to FILE and
//! waits to be stopped.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use svid_exec_testkit::stack::Stack;

/// The exit status the demo program chooses, to show it is passed through.
const CHILD_EXIT: i32 = 3;
/// Upper bound for one svid-exec run; the stand-ins answer in milliseconds.
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// Variables the launcher reads and must not hand to the program.
const BOOTSTRAP_PREFIXES: &[&str] = &["INFISICAL_", "SVID_EXEC_", "SPIFFE_ENDPOINT_SOCKET"];

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("child") {
        return child();
    }
    if std::env::args().nth(1).as_deref() == Some("watched") {
        return watched();
    }
    match demo() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("quickstart failed: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The demo program: one line per received variable, `name<TAB>length`, on
/// stdout. Names and lengths only: the values stay in this process.
fn child() -> ExitCode {
    let mut out = String::new();
    for (name, value) in std::env::vars_os() {
        let _ = writeln!(out, "{}\t{}", name.to_string_lossy(), value.len());
    }
    print!("{out}");
    ExitCode::from(u8::try_from(CHILD_EXIT).unwrap_or(1))
}

/// The supervised demo program: one line per start, then wait for a signal.
fn watched() -> ExitCode {
    let Some(file) = std::env::args_os().nth(2) else {
        return ExitCode::FAILURE;
    };
    let greeting = std::env::var_os("GREETING").map_or(0, |v| v.len());
    let line = format!("{} {greeting}\n", std::process::id());
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
    if appended.is_err() {
        return ExitCode::FAILURE;
    }
    loop {
        std::thread::park();
    }
}

fn demo() -> Result<(), String> {
    let binary = svid_exec_binary()?;
    let me = std::env::current_exe().map_err(|e| format!("cannot find this example: {e}"))?;

    println!(
        "Starting the stand-ins (SPIRE agent, OIDC discovery provider, Infisical) on this machine…"
    );
    let stack = Stack::start();
    println!("  SPIRE agent Workload API   {}", stack.agent.endpoint());
    println!("  OIDC discovery (issuer)    {}", stack.discovery.url());
    println!("  Infisical API              {}", stack.infisical.url());
    println!();
    println!("The environment a deployment would set for svid-exec:");
    let env = stack.launcher_env();
    for (name, value) in &env {
        println!("  {name}={value}");
    }

    // 1. run: environment delivery, then exec.
    println!();
    println!("$ svid-exec run -- quickstart child");
    println!("  (the program is this example in its `child` role: it prints each variable's name and length)");
    let run = launch(
        &binary,
        &env,
        &[
            "run".as_ref(),
            "--log-format".as_ref(),
            "json".as_ref(),
            "--".as_ref(),
            me.as_os_str(),
            "child".as_ref(),
        ],
        stack.dir(),
    )?;
    narrate_logs(&run.stderr, &env);
    let passed: BTreeSet<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
    let mut received = Vec::new();
    let mut bootstrap_seen = Vec::new();
    for line in run.stdout.lines() {
        let Some((name, len)) = line.split_once('\t') else {
            continue;
        };
        if BOOTSTRAP_PREFIXES.iter().any(|p| name.starts_with(p)) {
            bootstrap_seen.push(name.to_owned());
        } else if !passed.contains(name) && name != "PATH" {
            received.push((name.to_owned(), len.to_owned()));
        }
    }
    println!("  the program ran and received:");
    for (name, len) in &received {
        println!("    {name}=**** ({len} bytes)");
    }
    if bootstrap_seen.is_empty() {
        println!("  none of the launcher's own variables (INFISICAL_*, SVID_EXEC_*, SPIFFE_ENDPOINT_SOCKET) reached it");
    } else {
        return Err(format!(
            "the program received bootstrap variables {bootstrap_seen:?}"
        ));
    }
    println!(
        "  svid-exec exited {} — the program's own exit status ({CHILD_EXIT}), passed through",
        describe_status(run.status)
    );
    if run.status != Some(CHILD_EXIT) {
        return Err(format!(
            "expected exit status {CHILD_EXIT}, got {}; svid-exec said:\n{}",
            describe_status(run.status),
            run.stderr
        ));
    }
    if received.is_empty() {
        return Err("the program received no secret".into());
    }

    // 2. write: files on a tmpfs, as an init container does.
    println!();
    write_demo(&binary, &env, &stack)?;

    // 3. check: every step once, names never values.
    println!();
    check_demo(&binary, &env, &stack)?;

    // 4. run --watch: a change in Infisical restarts the program.
    println!();
    watch_demo(&binary, &me, &env, &stack)?;

    println!();
    println!(
        "Everything above ran locally. Next: README.md, \"Deploy it\" (a real SPIRE and Infisical),"
    );
    println!("`svid-exec run --help`, and `cargo run -p svid-exec-testkit --bin testkit-stack` to try it by hand.");
    Ok(())
}

fn write_demo(binary: &Path, env: &[(String, String)], stack: &Stack) -> Result<(), String> {
    let shm = Path::new("/dev/shm");
    let on_tmpfs = is_tmpfs(shm);
    let base = if on_tmpfs {
        tempfile::Builder::new()
            .prefix("svid-exec-quickstart")
            .tempdir_in(shm)
    } else {
        tempfile::Builder::new()
            .prefix("svid-exec-quickstart")
            .tempdir()
    }
    .map_err(|e| format!("cannot make a scratch directory: {e}"))?;
    let dir = base.path().join("secrets");
    let dir_arg = dir.display().to_string();
    let mut args = vec!["write", "--log-format", "json", "--dir", dir_arg.as_str()];
    if on_tmpfs {
        println!("$ svid-exec write --dir {dir_arg}");
    } else {
        println!(
            "(/dev/shm is not a tmpfs here, so this demo writes to disk with --allow-non-tmpfs;"
        );
        println!(" without it svid-exec refuses a disk-backed directory with exit 78)");
        println!("$ svid-exec write --allow-non-tmpfs --dir {dir_arg}");
        args.push("--allow-non-tmpfs");
    }
    let os_args: Vec<&std::ffi::OsStr> = args.iter().map(std::convert::AsRef::as_ref).collect();
    let write = launch(binary, env, &os_args, stack.dir())?;
    narrate_logs(&write.stderr, env);
    if write.status != Some(0) {
        return Err(format!(
            "svid-exec write exited {}:\n{}",
            describe_status(write.status),
            write.stderr
        ));
    }
    println!("  svid-exec exited 0; the directory now holds:");
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot list {dir_arg}: {e}"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let link = std::fs::symlink_metadata(&path).map_err(|e| e.to_string())?;
        if link.file_type().is_symlink() {
            let target = std::fs::read_link(&path).map_err(|e| e.to_string())?;
            let meta = std::fs::metadata(&path).map_err(|e| e.to_string())?;
            let size = if meta.is_dir() {
                "directory".to_owned()
            } else {
                format!("{} bytes", meta.len())
            };
            println!(
                "    {name:<14} -> {:<22} mode {:04o} uid {} {size}",
                target.display(),
                meta.permissions().mode() & 0o7777,
                meta.uid(),
            );
        } else if link.is_dir() {
            println!(
                "    {name}  (generation directory, mode {:04o})",
                link.permissions().mode() & 0o7777
            );
        } else {
            println!(
                "    {name}  (svid-exec's state: which generation is current, and when; no secret)"
            );
        }
    }
    println!("  each secret is a symlink into the current generation; an update writes a new");
    println!("  generation and swaps `..data` in one rename, so a reader never sees half of it.");
    println!("$ svid-exec ready --dir {dir_arg}     # the exec probe of a Kubernetes startupProbe");
    let ready_args: [&std::ffi::OsStr; 3] = ["ready".as_ref(), "--dir".as_ref(), dir.as_os_str()];
    let ready = launch(binary, env, &ready_args, stack.dir())?;
    println!(
        "  {}  (exit {}: 0 ready, 69 not yet, 78 not a directory svid-exec writes)",
        ready.stdout.trim(),
        describe_status(ready.status)
    );
    if ready.status != Some(0) {
        return Err(format!(
            "svid-exec ready exited {}:\n{}",
            describe_status(ready.status),
            ready.stderr
        ));
    }
    make_removable(&dir);
    Ok(())
}

fn check_demo(binary: &Path, env: &[(String, String)], stack: &Stack) -> Result<(), String> {
    println!("$ svid-exec check");
    let check = launch(binary, env, &["check".as_ref()], stack.dir())?;
    for line in check.stdout.lines() {
        println!("  {line}");
    }
    if check.status != Some(0) {
        return Err(format!(
            "svid-exec check exited {}:\n{}",
            describe_status(check.status),
            check.stderr
        ));
    }
    println!(
        "  (the same report tells what to fix when a step fails; see README.md, Troubleshooting)"
    );
    Ok(())
}

/// `run --watch` with a one-second poll: the program starts, GREETING changes
/// in Infisical, svid-exec restarts the program with the new value, SIGTERM
/// stops both.
fn watch_demo(
    binary: &Path,
    me: &Path,
    env: &[(String, String)],
    stack: &Stack,
) -> Result<(), String> {
    let starts = stack.dir().join("quickstart.starts");
    let err_path = stack.dir().join("quickstart.watch.stderr");
    println!("$ svid-exec run --watch --poll-interval 1s -- quickstart watched");
    println!("  (the program records each start: its pid and the length of GREETING)");
    let mut child = Command::new(binary)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(["run", "--watch", "--poll-interval", "1s", "--"])
        .arg(me)
        .arg("watched")
        .arg(&starts)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let result = (|| {
        let first = wait_for_starts(&starts, 1)?;
        println!("  the program started: pid {}", first[0].0);
        let new_value = "hello again";
        stack.infisical.set_secret(
            svid_exec_testkit::stack::PROJECT_ID,
            svid_exec_testkit::stack::ENVIRONMENT,
            "/",
            "GREETING",
            new_value,
        );
        println!(
            "  GREETING changed in Infisical (now {} bytes); svid-exec polls, confirms the change, restarts:",
            new_value.len()
        );
        let both = wait_for_starts(&starts, 2)?;
        println!(
            "  the program started again: pid {}, GREETING of {} bytes",
            both[1].0, both[1].1
        );
        if both[1].1 != new_value.len().to_string() {
            return Err(format!(
                "the restarted program got a GREETING of {} bytes",
                both[1].1
            ));
        }
        Ok(())
    })();
    // SIGTERM, as `docker stop` or systemd would send.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let status = child.wait().map_err(|e| e.to_string())?;
    result.map_err(|e| {
        format!(
            "{e}; svid-exec said:\n{}",
            std::fs::read_to_string(&err_path).unwrap_or_default()
        )
    })?;
    let code = status.code().or_else(|| status.signal().map(|s| 128 + s));
    println!(
        "  SIGTERM: svid-exec stopped the program and exited {} (128 + SIGTERM, the program's end)",
        describe_status(code)
    );
    Ok(())
}

/// The `(pid, GREETING length)` lines of the watched program, once there are
/// `n`, within [`RUN_LIMIT`].
fn wait_for_starts(file: &Path, n: usize) -> Result<Vec<(String, String)>, String> {
    let started = Instant::now();
    loop {
        let lines: Vec<(String, String)> = std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect();
        if lines.len() >= n {
            return Ok(lines);
        }
        if started.elapsed() > RUN_LIMIT {
            return Err(format!(
                "the program did not start {n} time(s) within {RUN_LIMIT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The generation directories are read-only (0500); give them back write
/// permission so the scratch directory can be removed when it is dropped.
fn make_removable(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o700));
        }
    }
}

/// Turns svid-exec's JSON log lines into plain sentences, from the fields
/// it really logged.
fn narrate_logs(stderr: &str, env: &[(String, String)]) {
    let given = |name: &str| {
        env.iter()
            .find(|(n, _)| n == name)
            .map_or("?", |(_, v)| v.as_str())
    };
    for line in stderr.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            if !line.trim().is_empty() {
                println!("  svid-exec: {line}");
            }
            continue;
        };
        let field = |key: &str| -> String {
            match &event[key] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => "?".into(),
                other => other.to_string(),
            }
        };
        let message = field("message");
        let sentence = match message.as_str() {
            "got a JWT-SVID" => format!(
                "the agent issued a JWT-SVID for {} (audience {}, issuer {}, expires in {})",
                field("sub"),
                field("aud"),
                field("iss"),
                field("expires_in").trim_start_matches("Some(").trim_end_matches(')')
            ),
            "starting the program" => format!(
                "starting the program {} with {} secrets in its environment",
                field("program"),
                field("in_environment")
            ),
            "secrets written to files" => format!("wrote {} secret files", field("files")),
            "secrets written" => format!("done: {} secrets written", field("count")),
            "logged in to Infisical" => format!(
                "logged in to Infisical as machine identity {} with {} (token valid {}, max TTL {})",
                field("identity_id"),
                auth_name(&field("method")),
                field("expires_in"),
                field("max_ttl")
            ),
            "fetched secrets" => format!(
                "fetched {} secrets from project {} / environment {} / paths {}",
                field("count"),
                given("INFISICAL_PROJECT_ID"),
                given("INFISICAL_ENVIRONMENT"),
                field("paths")
            ),
            _ => {
                let mut s = format!("{} {message}", field("level").to_lowercase());
                if let Some(map) = event.as_object() {
                    for (k, v) in map {
                        if !["timestamp", "level", "message", "target"].contains(&k.as_str()) {
                            let _ = write!(s, " {k}={v}");
                        }
                    }
                }
                s
            }
        };
        println!("  {sentence}");
    }
}

fn auth_name(method: &str) -> &str {
    match method {
        "oidc-auth" => "OIDC Auth",
        "jwt-auth" => "JWT Auth",
        "spiffe-auth" => "SPIFFE Auth",
        other => other,
    }
}

struct Outcome {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs svid-exec with exactly `env` (plus a minimal PATH), bounded by
/// [`RUN_LIMIT`]; output goes to files so a full pipe can never block it.
fn launch(
    binary: &Path,
    env: &[(String, String)],
    args: &[&std::ffi::OsStr],
    scratch: &Path,
) -> Result<Outcome, String> {
    let out_path = scratch.join("quickstart.stdout");
    let err_path = scratch.join("quickstart.stderr");
    let out = std::fs::File::create(&out_path).map_err(|e| e.to_string())?;
    let err = std::fs::File::create(&err_path).map_err(|e| e.to_string())?;
    let mut child = Command::new(binary)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > RUN_LIMIT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("svid-exec did not finish within {RUN_LIMIT:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for svid-exec: {e}")),
        }
    };
    let code = status.code().or_else(|| status.signal().map(|s| 128 + s));
    Ok(Outcome {
        status: code,
        stdout: std::fs::read_to_string(&out_path).map_err(|e| e.to_string())?,
        stderr: std::fs::read_to_string(&err_path).map_err(|e| e.to_string())?,
    })
}

fn describe_status(status: Option<i32>) -> String {
    status.map_or_else(|| "without a status".into(), |c| c.to_string())
}

fn is_tmpfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

/// The `svid-exec` binary of this build. `cargo run --example` builds the
/// library and the example, not the binary, so under cargo (which sets
/// `CARGO`) ask it to build the binary into this example's own target
/// directory and profile: a no-op when it is fresh, and the right thing on a
/// fresh clone where this is the first command ever run.
fn svid_exec_binary() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot find this example: {e}"))?;
    // target/<profile>/examples/quickstart
    let profile_dir = me
        .parent()
        .and_then(Path::parent)
        .ok_or("this example is not inside a cargo target directory")?
        .to_path_buf();
    let binary = profile_dir.join("svid-exec");
    let build_hint = "cargo build --bin svid-exec";
    if let Some(cargo) = std::env::var_os("CARGO") {
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_owned(),
            Some(other) => other.to_owned(),
        };
        let target_dir = profile_dir
            .parent()
            .ok_or("this example is not inside a cargo target directory")?;
        println!("Building the svid-exec binary ({build_hint}) if it is not up to date…");
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "--bin",
                "svid-exec",
                "--profile",
                profile.as_str(),
            ])
            .arg("--manifest-path")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir)
            .status()
            .map_err(|e| format!("cannot run cargo ({e}); build it yourself: {build_hint}"))?;
        if !status.success() {
            return Err(format!("`{build_hint}` failed ({status})"));
        }
    }
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!(
            "{} does not exist; build it first with `{build_hint}` (add --release for a release build)",
            binary.display()
        ))
    }
}
