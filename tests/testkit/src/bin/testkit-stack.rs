//! Starts the whole stand-in stack (SPIRE agent, OIDC discovery provider,
//! Infisical) on this machine for trying svid-exec by hand: prints what to
//! export, the project's ID and slug, the folders and tags it serves, and
//! commands to paste; then reads commands on standard input (`set PATH KEY
//! VALUE`, `delete PATH KEY`) so a change can be watched with `--watch`.
//! Runs until interrupted (Ctrl-C) or killed; standard input reaching its end
//! (a background job) does not stop it.
//!
//!     cargo run -p svid-exec-testkit --bin testkit-stack -- [OPTIONS]
//!
//! `bench/run.sh` uses `--secrets N --env-file PATH --jwt-file PATH`.

use std::fmt::Write as _;
use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use svid_exec_testkit::stack::{self, Stack, StackOptions};
use svid_exec_testkit::workload::AgentConfig;

/// Run the svid-exec stand-ins (a SPIRE agent's Workload API on a unix socket,
/// SPIRE's OIDC discovery provider and an Infisical server on 127.0.0.1) and
/// print the settings that point svid-exec at them.
#[derive(Debug, Parser)]
#[command(
    name = "testkit-stack",
    after_long_help = "\
SECRETS SERVED (project `billing`, environment `prod`; unless --secrets):
  /          DATABASE_URL, GREETING, TLS_KEY
  /app       APP_MODE (tag backend), FEATURE_FLAGS (tag frontend); imports /shared
  /app/db    DB_USER, DB_PASSWORD (both tag backend)
  /shared    SHARED_API_KEY

COMMANDS ON STANDARD INPUT (one per line, while it runs):
  set PATH KEY VALUE   create or change a secret (VALUE is the rest of the line)
  delete PATH KEY      delete a secret
  help                 list these commands
  A `svid-exec run --watch` or `write --watch` pointed at the stack sees the
  change at its next poll."
)]
struct Args {
    /// Serve N generated secrets of realistic sizes at `/` instead of the demo
    /// ones (for benchmarks).
    #[arg(long, value_name = "N")]
    secrets: Option<usize>,

    /// Serve Infisical and the discovery provider over plain HTTP instead of HTTPS.
    #[arg(long)]
    http: bool,

    /// Also write the `export` lines to PATH (written whole, then renamed, so a
    /// script can wait for the file to appear).
    #[arg(long, value_name = "PATH")]
    env_file: Option<PathBuf>,

    /// Write a JWT-SVID for the workload (valid 24 h) to PATH, as spiffe-helper
    /// would, for `--jwt-file` and scripts.
    #[arg(long, value_name = "PATH")]
    jwt_file: Option<PathBuf>,

    /// Answer the Workload API from a JWT-SVID cache, as the SPIRE agent does
    /// (the same token until half its lifetime is used), instead of minting
    /// and signing a fresh one per call. Benchmarks use it: minting is the
    /// stand-in's own CPU, which a real agent does not spend per launch.
    #[arg(long)]
    agent_cache: bool,
}

/// The secrets beyond `/`: (folder, key, value, tags).
const TOUR: &[(&str, &str, &str, &[&str])] = &[
    ("/app", "APP_MODE", "production", &["backend"]),
    ("/app", "FEATURE_FLAGS", "search,export", &["frontend"]),
    ("/app/db", "DB_USER", "billing", &["backend"]),
    (
        "/app/db",
        "DB_PASSWORD",
        "correct horse battery staple",
        &["backend"],
    ),
    ("/shared", "SHARED_API_KEY", "sk_demo_0123456789abcdef", &[]),
];

fn fail(problem: &str) -> ! {
    eprintln!("testkit-stack: {problem}");
    std::process::exit(1);
}

/// The value of generated secret `i`: printable, 16 to 80 bytes (mean 48),
/// the sizes of passwords, API tokens and connection strings.
fn generated_value(i: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let len = 16 + (i * 37) % 65;
    let mut state = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            // xorshift64: deterministic, so every run serves the same bytes.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(ALPHABET[usize::try_from(state % 64).unwrap_or(0)])
        })
        .collect()
}

fn seed(stack: &Stack, args: &Args) {
    let infisical = &stack.infisical;
    let (project, env) = (stack::PROJECT_ID, stack::ENVIRONMENT);
    if let Some(n) = args.secrets {
        for i in 0..n {
            infisical.set_secret(
                project,
                env,
                "/",
                &format!("BENCH_SECRET_{i:05}"),
                &generated_value(i),
            );
        }
        return;
    }
    for (path, key, value, tags) in TOUR {
        infisical.set_secret_tagged(project, env, path, key, value, tags);
    }
    infisical.add_import(project, env, "/app", env, "/shared");
}

/// What a user pastes: the exports, then commands to try.
fn banner(stack: &Stack, exports: &str, tour: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# svid-exec stand-ins are running; paste these lines into a shell:"
    );
    out.push_str(exports);
    // The binary built beside this one, when there is one.
    let built = std::env::current_exe()
        .ok()
        .and_then(|me| Some(me.parent()?.join("svid-exec")))
        .filter(|p| p.is_file());
    if let Some(bin) = &built {
        let _ = writeln!(out, "alias svid-exec='{}'", bin.display());
    } else {
        let _ = writeln!(
            out,
            "# (build svid-exec first: cargo build --bin svid-exec)"
        );
    }
    let _ = writeln!(
        out,
        "# project {} (slug {}), environment {}; identity {} (OIDC Auth)",
        stack::PROJECT_ID,
        stack::PROJECT_SLUG,
        stack::ENVIRONMENT,
        stack::OIDC_IDENTITY
    );
    let _ = writeln!(
        out,
        "# other identities: JWT Auth {} (--auth-method jwt-auth), SPIFFE Auth {} (--auth-method spiffe-auth)",
        stack::JWT_IDENTITY,
        stack::SPIFFE_IDENTITY
    );
    let _ = writeln!(
        out,
        "# discovery provider (issuer): {}",
        stack.discovery.url()
    );
    let _ = writeln!(out, "# then for example:");
    let mut tries = vec![
        "svid-exec check",
        "svid-exec run -- env",
        "curl --cacert \"$SVID_EXEC_CA_CERT\" \"$INFISICAL_API_URL/api/status\"",
    ];
    if tour {
        tries.extend([
            "svid-exec run --path /app --path /app/db -- env        # /app imports /shared",
            "svid-exec run --path /app --recursive --tag backend -- env",
            "(unset INFISICAL_PROJECT_ID; svid-exec run --project-slug billing --no-imports --path /app -- env)",
            "svid-exec write --dir /dev/shm/svid-demo && svid-exec ready --dir /dev/shm/svid-demo",
            "svid-exec run --watch --poll-interval 5s -- sh -c 'echo \"GREETING=$GREETING\"; exec sleep 3600'",
        ]);
    }
    for line in tries {
        let _ = writeln!(out, "#   {line}");
    }
    let _ = writeln!(
        out,
        "# type commands here: `set / GREETING hello again` (the run --watch above restarts its program \
         at its next poll), `delete /app APP_MODE`, `help`"
    );
    let _ = writeln!(out, "# press Ctrl-C to stop");
    out
}

/// One command line from standard input; returns the answer to print.
fn command(stack: &Stack, line: &str) -> String {
    let (project, env) = (stack::PROJECT_ID, stack::ENVIRONMENT);
    let mut words = line.trim().splitn(4, ' ');
    match (words.next(), words.next(), words.next(), words.next()) {
        (None | Some(""), ..) => String::new(),
        (Some("set"), Some(path), Some(key), value) if path.starts_with('/') => {
            stack
                .infisical
                .set_secret(project, env, path, key, value.unwrap_or(""));
            format!("ok: set {path} {key}")
        }
        (Some("delete"), Some(path), Some(key), None) if path.starts_with('/') => {
            if stack.infisical.delete_secret(project, env, path, key) {
                format!("ok: deleted {path} {key}")
            } else {
                format!("no secret {key} at {path}")
            }
        }
        (Some("help"), None, ..) => {
            "commands: set PATH KEY VALUE | delete PATH KEY | help (PATH starts with /)".to_owned()
        }
        _ => format!("not understood: {line:?} (try `help`)"),
    }
}

fn main() {
    let args = Args::parse();
    let stack = Stack::start_with(StackOptions {
        https: !args.http,
        demo_secrets: args.secrets.is_none(),
        agent: AgentConfig::default().agent_cache(args.agent_cache),
        ..StackOptions::default()
    });
    seed(&stack, &args);
    if let Some(path) = &args.jwt_file {
        let minted = stack.write_jwt_file(Duration::from_secs(24 * 3600));
        if let Err(err) = std::fs::copy(&minted, path) {
            fail(&format!("cannot write {}: {err}", path.display()));
        }
    }
    let mut exports = String::new();
    for (name, value) in stack.launcher_env() {
        let _ = writeln!(exports, "export {name}='{value}'");
    }
    if let Some(path) = &args.env_file {
        let tmp = path.with_extension("tmp");
        if let Err(err) = std::fs::write(&tmp, &exports).and_then(|()| std::fs::rename(&tmp, path))
        {
            fail(&format!("cannot write {}: {err}", path.display()));
        }
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(banner(&stack, &exports, args.secrets.is_none()).as_bytes());
    let _ = out.flush();
    drop(out);
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let answer = command(&stack, &line);
        if !answer.is_empty() {
            println!("{answer}");
        }
    }
    loop {
        std::thread::park();
    }
}
