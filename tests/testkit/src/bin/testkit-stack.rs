//! Starts the whole stand-in stack (SPIRE agent, OIDC discovery provider,
//! Infisical) on this machine and prints what a user would export to point
//! svid-exec at it. Runs until interrupted (Ctrl-C) or killed.
//!
//!     cargo run -p svid-exec-testkit --bin testkit-stack -- [OPTIONS]
//!
//! Options (used by `bench/run.sh`; all optional):
//!   --secrets N       N generated secrets of realistic sizes instead of the demo ones
//!   --http            serve Infisical (and the discovery provider) over plain
//!                     HTTP instead of HTTPS
//!   --env-file PATH   also write the `export` lines to PATH (written whole, then
//!                     renamed, so a script can wait for the file to appear)
//!   --jwt-file PATH   write a JWT-SVID for the workload (valid 24 h) to PATH,
//!                     as spiffe-helper would, for `--jwt-file` and scripts

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use svid_exec_testkit::stack::{self, Stack, StackOptions};

/// What the command line asked for.
#[derive(Debug, Default)]
struct Args {
    secrets: Option<usize>,
    http: bool,
    env_file: Option<PathBuf>,
    jwt_file: Option<PathBuf>,
}

fn usage(problem: &str) -> ! {
    eprintln!("testkit-stack: {problem}");
    eprintln!("usage: testkit-stack [--secrets N] [--http] [--env-file PATH] [--jwt-file PATH]");
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .unwrap_or_else(|| usage(&format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--secrets" => {
                let n = value("--secrets");
                args.secrets = Some(
                    n.parse()
                        .unwrap_or_else(|_| usage(&format!("--secrets: not a count: {n}"))),
                );
            }
            "--http" => args.http = true,
            "--env-file" => args.env_file = Some(value("--env-file").into()),
            "--jwt-file" => args.jwt_file = Some(value("--jwt-file").into()),
            "-h" | "--help" => usage("starts the stand-in stack"),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    args
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

fn main() {
    let args = parse_args();
    let stack = Stack::start_with(StackOptions {
        https: !args.http,
        demo_secrets: args.secrets.is_none(),
        ..StackOptions::default()
    });
    if let Some(n) = args.secrets {
        for i in 0..n {
            stack.infisical.set_secret(
                stack::PROJECT_ID,
                stack::ENVIRONMENT,
                "/",
                &format!("BENCH_SECRET_{i:05}"),
                &generated_value(i),
            );
        }
    }
    if let Some(path) = &args.jwt_file {
        let minted = stack.write_jwt_file(Duration::from_secs(24 * 3600));
        if let Err(err) = std::fs::copy(&minted, path) {
            usage(&format!("cannot write {}: {err}", path.display()));
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
            usage(&format!("cannot write {}: {err}", path.display()));
        }
    }

    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "# svid-exec stand-ins are running; paste these lines into a shell:"
    );
    let _ = write!(out, "{exports}");
    let _ = writeln!(out, "# then for example:");
    let _ = writeln!(out, "#   svid-exec run -- env");
    let _ = writeln!(
        out,
        "#   curl --cacert \"$SVID_EXEC_CA_CERT\" \"$INFISICAL_API_URL/api/status\""
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
    let _ = writeln!(out, "# press Ctrl-C to stop");
    let _ = out.flush();
    drop(out);
    loop {
        std::thread::park();
    }
}
