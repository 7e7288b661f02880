//! The `svid-exec` binary: a thin shell around [`svid_exec::app::main`].

fn main() -> std::process::ExitCode {
    svid_exec::app::main()
}
