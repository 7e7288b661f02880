//! Starts the whole stand-in stack (SPIRE agent, OIDC discovery provider,
//! Infisical) on this machine and prints what a user would export to point
//! svid-exec at it. Runs until interrupted (Ctrl-C).
//!
//!     cargo run -p svid-exec-testkit --bin testkit-stack

use std::io::Write as _;

use svid_exec_testkit::stack::{self, Stack};

fn main() {
    let stack = Stack::start();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "# svid-exec stand-ins are running; paste these lines into a shell:"
    );
    for (name, value) in stack.launcher_env() {
        let _ = writeln!(out, "export {name}='{value}'");
    }
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
