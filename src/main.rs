//! The `svid-exec` binary: a thin shell around [`svid_exec::cmd::main`].

fn main() -> std::process::ExitCode {
    svid_exec::cmd::main()
}
