//! The configuration's rules, value by value: defaults, refusals with the
//! flag named, normalisation, combinations.

use std::path::Path;

use nix::unistd::{Gid, Uid};

use super::*;
use crate::deliver::env::EnvOptions;
use crate::error::ExitClass;
use crate::launch::signals::Signal;
use crate::launch::supervise::ForwardTo;
use crate::secrets::Selection;

const IDENTITY: &str = "1f0e2d3c-4b5a-4968-8776-a5b4c3d2e1f0";
const PROJECT: &str = "7c1d9a4e-5b2f-4e8a-9c3d-2f6b8e1a4d70";

const BASE: &[&str] = &[
    "svid-exec",
    "run",
    "--identity-id",
    IDENTITY,
    "--project-id",
    PROJECT,
    "--env",
    "prod",
];

/// The Workload API options of a configuration that uses the agent.
fn workload(c: &Config) -> &WorkloadApiOptions {
    match &c.svid {
        SvidSourceOptions::WorkloadApi(w) => w,
        SvidSourceOptions::File(_) => panic!("a JWT file, not the Workload API"),
    }
}

/// Parses `BASE` + `extra` + `-- true` (or the given argv for other commands).
fn run_with(extra: &[&str]) -> Result<Config> {
    let mut argv: Vec<&str> = BASE.to_vec();
    argv.extend_from_slice(extra);
    argv.extend_from_slice(&["--", "true"]);
    parse(&argv)
}

fn parse(argv: &[&str]) -> Result<Config> {
    let argv: Vec<std::ffi::OsString> = argv.iter().map(Into::into).collect();
    let parsed = cli::parse_from(&argv).expect("argv parses");
    Config::from_parsed(parsed)
}

#[test]
fn defaults_follow_the_contract() {
    let c = run_with(&[]).unwrap();
    assert_eq!(c.client.api_url.as_str(), "https://app.infisical.com/");
    assert_eq!(c.login.method, AuthMethod::Oidc);
    assert_eq!(workload(&c).audiences, ["infisical"]);
    assert_eq!(
        crate::svid::describe_endpoint(&workload(&c).endpoint),
        "unix:///tmp/spire-agent/public/api.sock"
    );
    assert_eq!(c.startup_timeout, Duration::from_secs(60));
    assert_eq!(c.fetch.paths, ["/"]);
    assert!(c.fetch.include_imports && c.fetch.expand && !c.delivery.allow_empty);
    assert_eq!(c.delivery.env, Some(EnvOptions::default()));
    assert!(c.delivery.files.is_none());
    assert!(c.watch.is_none(), "no --watch");
    assert_eq!(c.log.level, tracing::Level::INFO);
    let w = run_with(&["--watch"]).unwrap().watch.unwrap();
    assert_eq!(w.on_change, OnChange::Restart);
    assert_eq!(w.stop_signal, Signal::TERM);
    assert_eq!(w.forward_to, ForwardTo::Group);
    assert_eq!(w.poll_interval, Duration::from_secs(60));
    assert!(!w.mlock);
    assert_eq!(
        c.task,
        Task::Run {
            program: "true".into(),
            args: vec![]
        }
    );
}

#[test]
fn invalid_values_are_refused_with_a_message_naming_them() {
    let table: &[(&[&str], &str)] = &[
        (
            &["--project-slug", "s"],
            "both --project-id and --project-slug",
        ),
        (&["--auth-method", "kerberos"], "--auth-method"),
        (&["--audience", ""], "audience is empty"),
        (&["--audience", "a,,b"], "audience is empty"),
        (&["--path", "/a/../b"], "`.` or `..`"),
        (&["--path", ""], "--path is empty"),
        (&["--file-mode", "0999"], "--file-mode"),
        (&["--file-mode", "01777"], "--file-mode"),
        (&["--file-mode", "rw"], "--file-mode"),
        (&["--file-owner", "root"], "--file-owner"),
        (&["--file-owner", "1:x"], "--file-owner"),
        (&["--on-change", "reload"], "--on-change"),
        (&["--on-change", "signal:NOPE"], "not a signal"),
        (&["--stop-signal", "99"], "--stop-signal"),
        (&["--forward-to", "parent"], "--forward-to"),
        (&["--startup-timeout", "soon"], "--startup-timeout"),
        (&["--poll-interval", "0s"], "longer than zero"),
        (&["--log-level", "loud"], "--log-level"),
        (&["--log-format", "xml"], "--log-format"),
        // An address: a name is checked on what it resolves to, at connect time.
        (&["--api-url", "http://192.0.2.1"], "plain http://"),
        (&["--ca-cert-only"], "--ca-cert-only needs --ca-cert"),
        (&["--api-url", "ftp://x"], "scheme"),
        (
            &["--api-url", "not a url"],
            "invalid --api-url \"not a url\"",
        ),
        (&["--env-file-refs"], "needs --files-dir"),
        (
            &["--env-file-refs", "--dotenv-file", "/run/s.env"],
            "needs --files-dir",
        ),
        (&["--no-env"], "delivers nothing"),
        (
            &["--watch", "--on-change", "signal:HUP"],
            "cannot update secrets delivered in the environment",
        ),
        (&["--env-prefix", "A=B"], "--env-prefix"),
        (&["--spiffe-id", "example.org/web"], "not a SPIFFE ID"),
    ];
    for (extra, expected) in table {
        let err = run_with(extra).expect_err(&format!("{extra:?} must be refused"));
        assert!(
            err.to_string().contains(expected),
            "{extra:?}: {err} does not mention {expected:?}"
        );
        assert!(
            err.hint().is_some_and(|h| !h.is_empty()),
            "{extra:?} has a hint"
        );
        assert_eq!(err.exit_class(), ExitClass::Config);
    }
}

#[test]
fn missing_project_environment_or_identity_is_a_configuration_error() {
    let table: &[(&[&str], &str)] = &[
        (
            &[
                "svid-exec",
                "run",
                "--identity-id",
                "i",
                "--env",
                "e",
                "--",
                "x",
            ],
            "no project",
        ),
        (
            &[
                "svid-exec",
                "run",
                "--identity-id",
                "i",
                "--project-id",
                "p",
                "--",
                "x",
            ],
            "no environment",
        ),
        (
            &[
                "svid-exec",
                "run",
                "--project-id",
                "p",
                "--env",
                "e",
                "--",
                "x",
            ],
            "machine identity",
        ),
    ];
    for (argv, expected) in table {
        let err = parse(argv).unwrap_err();
        assert!(err.to_string().contains(expected), "{argv:?}: {err}");
    }
}

#[test]
fn valid_values_are_typed() {
    let c = run_with(&[
        "--api-url",
        "http://127.0.0.1:8080/api/",
        "--auth-method",
        "spiffe-auth",
        "--path",
        "app/db/",
        "--path",
        "//x//y",
        "--tag",
        "a,b",
        "--audience",
        "one,two",
        "--files-dir",
        "/run/secrets",
        "--file-mode",
        "0440",
        "--file-owner",
        "1000:2000",
        "--env-file-refs",
        "--watch",
        "--on-change",
        "signal:hup",
        "--stop-signal",
        "15",
        "--forward-to",
        "child",
        "-q",
    ])
    .unwrap();
    assert_eq!(c.client.api_url.as_str(), "http://127.0.0.1:8080/");
    assert_eq!(c.login.method, AuthMethod::Spiffe);
    assert_eq!(c.fetch.paths, ["/app/db", "/x/y"]);
    assert_eq!(c.fetch.tags, ["a", "b"]);
    assert_eq!(workload(&c).audiences, ["one", "two"]);
    let files = c.delivery.files.unwrap();
    assert_eq!(files.mode, 0o440);
    assert_eq!(
        files.owner,
        Some((Uid::from_raw(1000), Some(Gid::from_raw(2000))))
    );
    assert!(c.delivery.env.unwrap().file_refs);
    let w = c.watch.unwrap();
    assert_eq!(w.on_change, OnChange::Signal(Signal::HUP));
    assert_eq!(w.stop_signal, Signal::TERM);
    assert_eq!(w.forward_to, ForwardTo::Child);
    assert_eq!(c.log.level, tracing::Level::ERROR);
}

#[test]
fn the_workload_api_address_keeps_where_it_came_from() {
    // Read from the parser's origins, the same ones configuration errors name.
    let origin = |extra: &[&str]| workload(&run_with(extra).unwrap()).origin;
    let flag = ["--workload-api-socket", "unix:///run/spire/agent.sock"];
    assert_eq!(origin(&flag), EndpointOrigin::Flag);
    // The variable's case is the binary's (tests/integration/svid_diag.rs):
    // a test does not set our own environment.
    if std::env::var_os("SPIFFE_ENDPOINT_SOCKET").is_none() {
        assert_eq!(origin(&[]), EndpointOrigin::Default);
    }
}

#[test]
fn several_audiences_are_allowed_with_a_warning() {
    let c = run_with(&["--audience", "infisical,billing"]).unwrap();
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("several audiences requested (billing, infisical)")),
        "{:?}",
        c.warnings
    );
    assert!(run_with(&[]).unwrap().warnings.is_empty());
}

#[test]
fn relative_file_targets_are_made_absolute() {
    let c = run_with(&["--files-dir", "run/s", "--dotenv-file", "./s.env"]).unwrap();
    let targets = c.delivery.files.unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(targets.dir.unwrap(), cwd.join("run/s"));
    assert!(targets.dotenv_file.unwrap().is_absolute());
}

#[test]
fn signal_on_change_is_allowed_when_secrets_go_to_files_only() {
    let c = run_with(&[
        "--watch",
        "--on-change",
        "signal:USR1",
        "--no-env",
        "--files-dir",
        "/run/s",
    ])
    .unwrap();
    assert_eq!(c.watch.unwrap().on_change, OnChange::Signal(Signal::USR1));
    assert!(c.delivery.env.is_none());
}

#[test]
fn api_url_keeps_a_base_path_but_drops_trailing_api() {
    let c = run_with(&["--api-url", "https://example.com/infisical/api"]).unwrap();
    assert_eq!(c.client.api_url.as_str(), "https://example.com/infisical");
    let c = run_with(&["--api-url", "http://[::1]:9/"]).unwrap();
    assert_eq!(c.client.api_url.as_str(), "http://[::1]:9/");
    assert!(c.warnings.is_empty());
    let c = run_with(&["--api-url", "http://10.0.0.1", "--allow-insecure-http"]).unwrap();
    assert_eq!(
        c.warnings.len(),
        1,
        "insecure http is allowed with a warning"
    );
    assert!(run_with(&["--api-url", "http://10.0.0.1"]).is_err());
    // Names are left to the client, which checks what they resolve to.
    let c = run_with(&["--api-url", "http://infisical.internal"]).unwrap();
    assert!(c.warnings.is_empty());
}

#[test]
fn signal_names_numbers_and_prefixes_parse_alike() {
    for raw in ["TERM", "SIGTERM", "term", "15", " sigterm "] {
        assert_eq!(parse_signal(raw), Some(Signal::TERM), "{raw}");
    }
    assert_eq!(parse_signal("0"), None);
    assert_eq!(parse_signal("SIGNOPE"), None);
}

#[test]
fn on_change_and_forward_to_parse_their_documented_forms() {
    assert_eq!(
        parse_on_change("--on-change", "restart").unwrap(),
        OnChange::Restart
    );
    assert_eq!(
        parse_on_change("--on-change", " None ").unwrap(),
        OnChange::None
    );
    assert_eq!(
        parse_on_change("--on-change", "signal:HUP").unwrap(),
        OnChange::Signal(Signal::HUP)
    );
    assert!(parse_on_change("--on-change", "signal:NOPE").is_err());
    assert!(parse_on_change("--on-change", "reload").is_err());
    assert_eq!(
        parse_forward_to("--forward-to", "group").unwrap(),
        ForwardTo::Group
    );
    assert_eq!(
        parse_forward_to("--forward-to", "Child").unwrap(),
        ForwardTo::Child
    );
    assert!(parse_forward_to("--forward-to", "pid").is_err());
}

#[test]
fn real_time_signals_are_accepted_for_stop_signal_and_on_change() {
    let rt = |n| Signal::from_raw(crate::sys::min_rt_signal() + n).unwrap();
    let c = run_with(&[
        "--watch",
        "--stop-signal",
        "RTMIN+3",
        "--on-change",
        "signal:SIGRTMIN+1",
        "--no-env",
        "--files-dir",
        "/run/s",
    ])
    .unwrap();
    let w = c.watch.unwrap();
    assert_eq!(w.stop_signal, rt(3));
    assert_eq!(w.on_change, OnChange::Signal(rt(1)));
}

#[test]
fn bad_watch_values_are_config_errors_that_say_what_to_use() {
    for (args, says) in [
        (
            &["--stop-signal", "RTMIN+999"][..],
            "--stop-signal: \"RTMIN+999\" is not a signal",
        ),
        (
            &["--on-change", "signal:NOPE"][..],
            "--on-change signal: \"nope\" is not a signal",
        ),
        (
            &["--on-change", "reload"][..],
            "--on-change: \"reload\" is not an action",
        ),
        (
            &["--forward-to", "parent"][..],
            "--forward-to: \"parent\" is not a target",
        ),
    ] {
        let mut args = args.to_vec();
        args.push("--watch");
        let err = run_with(&args).unwrap_err();
        assert_eq!(err.problems().len(), 1, "{err}");
        assert!(err.to_string().contains(says), "{args:?}: {err}");
        assert_eq!(err.exit_class().code(), 78, "{args:?}");
    }
}

/// `svid-exec COMMAND` with a valid identity, project and environment, then `extra`.
fn command_with(command: &str, extra: &[&str]) -> Result<Config> {
    let mut argv = vec!["svid-exec", command];
    argv.extend_from_slice(&BASE[2..]);
    argv.extend_from_slice(extra);
    parse(&argv)
}

#[test]
fn check_takes_watch_and_checks_the_supervisor_settings_and_write_gets_no_env_delivery() {
    let c = command_with("check", &["--watch", "--stop-signal", "QUIT"]).unwrap();
    assert_eq!(c.watch.unwrap().stop_signal, Signal::QUIT);
    let err = command_with("check", &["--watch", "--stop-signal", "NOPE"]).unwrap_err();
    assert!(err.to_string().contains("--stop-signal"), "{err}");
    let err = command_with("check", &["--stop-signal", "QUIT"]).unwrap_err();
    assert!(
        err.to_string()
            .contains("--stop-signal does not apply to check (only to run --watch)"),
        "{err}"
    );
    let c = command_with("write", &["--dir", "/run/s"]).unwrap();
    assert!(c.delivery.env.is_none());
    assert_eq!(c.delivery.files.unwrap().dir.unwrap(), Path::new("/run/s"));
}

#[test]
fn every_problem_is_reported_at_once_each_with_its_hint() {
    let err = parse(&[
        "svid-exec",
        "write",
        "--identity-id",
        "my-identity",
        "--project-id",
        "billing",
        "--file-mode",
        "0999",
        "--env-prefix",
        "APP_",
    ])
    .unwrap_err();
    let problems: Vec<&str> = err.problems().iter().map(Problem::message).collect();
    assert_eq!(
        problems,
        [
            "--env-prefix does not apply to write (only to run)",
            "--identity-id: \"my-identity\" is not a machine identity ID (a UUID such as \
             1f0e2d3c-4b5a-4968-8776-a5b4c3d2e1f0)",
            "--project-id: \"billing\" is not a project ID (a UUID such as \
             7c1d9a4e-5b2f-4e8a-9c3d-2f6b8e1a4d70)",
            "no environment: neither --env nor INFISICAL_ENVIRONMENT is set",
            "--file-mode: \"0999\" is not an octal mode within 0777",
            "write has nothing to write: no --dir, --dotenv-file, --json-file or --template",
        ]
    );
    assert!(err.problems()[2]
        .hint()
        .contains("did you mean --project-slug billing?"));
    assert!(err.problems().iter().all(|p| !p.hint().is_empty()));
    assert_eq!(err.exit_class(), ExitClass::Config);
}

#[test]
fn only_and_map_are_parsed_and_clashing_names_refused_before_fetching() {
    let c = run_with(&[
        "--only",
        "A, B",
        "--map",
        "db-pass=DB_PASS,x=Y",
        "--map",
        "B=C",
    ])
    .unwrap();
    assert_eq!(
        c.delivery.selection,
        Selection::new(
            vec!["A".into(), "B".into()],
            vec![
                ("db-pass".into(), "DB_PASS".into()),
                ("x".into(), "Y".into()),
                ("B".into(), "C".into())
            ]
        )
    );
    for (args, says) in [
        (&["--map", "A"][..], "--map: \"A\" is not SRC=DST"),
        (&["--map", "=B"][..], "is not SRC=DST"),
        (&["--map", "A=B="][..], "is not SRC=DST"),
        (&["--only", "A,,B"][..], "--only has an empty entry"),
        (&["--map", "A=X,B=X"][..], "X (from A and B)"),
        (
            &["--only", "X", "--map", "A=X"][..],
            "X (from A and X, which --only delivers)",
        ),
    ] {
        let err = run_with(args).unwrap_err();
        assert!(err.to_string().contains(says), "{args:?}: {err}");
    }
    // A swap is not a clash.
    run_with(&["--only", "A,B", "--map", "A=B,B=A"]).unwrap();
}

#[test]
fn template_flags_split_src_dest_and_an_octal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("t.j2");
    std::fs::write(&src, "{{ A }}").unwrap();
    let src = src.display().to_string();
    let specs = |flags: &[&str]| {
        let mut extra = vec!["--no-env"];
        for f in flags {
            extra.extend(["--template", f]);
        }
        run_with(&extra).map(|c| {
            c.delivery
                .templates
                .targets()
                .map(|(s, d, m)| (s.to_owned(), d.to_owned(), m))
                .collect::<Vec<_>>()
        })
    };
    let got = specs(&[&format!("{src}:/run/a"), &format!("{src}:/run/b:c:0440")]).unwrap();
    assert_eq!(got[0].1, Path::new("/run/a"));
    assert_eq!(got[0].2, 0o400, "--file-mode's default");
    assert_eq!(
        got[1].1,
        Path::new("/run/b:c"),
        "a last part that is not digits is DEST's"
    );
    assert_eq!(got[1].2, 0o440);
    assert!(got[0].0.is_absolute());
    for (flag, says) in [
        ("no-colon".to_owned(), "no `:`"),
        (format!(":{src}"), "SRC is empty"),
        (format!("{src}:"), "DEST is empty"),
        (format!("{src}:/run/x:0999"), "not an octal mode"),
        (format!("{src}:/run/x:0666"), "write bits 0022"),
        (format!("{src}:memfd:my-name"), "must be a variable name"),
        (format!("{src}:memfd:NAME:0400"), "must be a variable name"),
        // A memfd is named in the environment, which --no-env leaves out.
        (format!("{src}:memfd:NAME"), "which --no-env leaves out"),
        (
            "/no/such/template.j2:/run/x".to_owned(),
            "cannot read template",
        ),
    ] {
        let err = specs(&[&flag]).unwrap_err();
        assert!(err.to_string().contains(says), "{flag}: {err}");
        assert_eq!(err.exit_class(), ExitClass::Config);
    }
    // memfd:NAME is no file: nothing made absolute, no mode.
    let c = run_with(&["--template", &format!("{src}:memfd:CONF")]).unwrap();
    let spec: Vec<_> = c.delivery.templates.targets().collect();
    assert_eq!(spec[0].1, Path::new("memfd:CONF"));
    assert_eq!(
        c.delivery.templates.memfd_names().collect::<Vec<_>>(),
        ["CONF"]
    );
    // Templates alone deliver something: --no-env is fine with them.
    assert!(specs(&[])
        .unwrap_err()
        .to_string()
        .contains("delivers nothing"));
}

#[test]
fn memfd_combinations_that_contradict_it_are_refused() {
    let table: &[(&[&str], &str)] = &[
        (&["--memfd", "--no-env"], "--memfd and --no-env"),
        (
            &["--memfd", "--files-dir", "/run/s", "--env-file-refs"],
            "--memfd and --env-file-refs",
        ),
        (
            &["--memfd", "--watch", "--on-change", "signal:HUP"],
            "delivered with --memfd",
        ),
    ];
    for (extra, message) in table {
        let err = run_with(extra).unwrap_err();
        assert!(err.to_string().contains(message), "{extra:?}: {err}");
        assert_eq!(err.exit_class(), ExitClass::Config);
    }
    for ok in [
        &["--memfd"][..],
        &["--memfd", "--watch"],
        &["--memfd", "--watch", "--on-change", "none"],
        &["--memfd", "--files-dir", "/run/s", "--env-prefix", "APP_"],
    ] {
        assert!(run_with(ok).unwrap().delivery.memfd, "{ok:?}");
    }
}

#[test]
fn the_fallback_is_bound_to_what_decides_the_fetch() {
    let c = run_with(&[
        "--fallback-dir",
        "/run/fb",
        "--path",
        "/b,/a",
        "--tag",
        "t",
        "--require",
        "K",
        "--map",
        "b=B,a=A",
        "--only",
        "K",
    ])
    .unwrap();
    let fallback = c.delivery.fallback.expect("--fallback-dir");
    assert_eq!(fallback.dir, Path::new("/run/fb"));
    assert_eq!(fallback.max_age, crate::deliver::fallback::DEFAULT_MAX_AGE);
    let b = fallback.binding;
    assert_eq!(b.api_url, "https://app.infisical.com/");
    assert_eq!(b.identity_id, IDENTITY);
    assert_eq!(b.auth_method, "oidc-auth");
    assert_eq!(b.project, format!("id:{PROJECT}"));
    assert_eq!(b.paths, ["/b", "/a"]);
    assert_eq!((b.tags, b.require), (vec!["t".into()], vec!["K".into()]));
    assert_eq!(b.flags, [false, true, true]);
    // One line per rule, in an order that does not depend on the flags'.
    assert_eq!(b.selection, ["map\0a\0A", "map\0b\0B", "only\0K"]);
    let reordered = run_with(&[
        "--fallback-dir",
        "/run/fb",
        "--only",
        "K",
        "--map",
        "a=A",
        "--map",
        "b=B",
    ])
    .unwrap();
    assert_eq!(
        reordered.delivery.fallback.unwrap().binding.selection,
        b.selection
    );
    let hours = run_with(&["--fallback-dir", "/run/fb", "--fallback-max-age", "90m"]).unwrap();
    assert_eq!(
        hours.delivery.fallback.unwrap().max_age,
        Duration::from_secs(5400)
    );
    assert!(run_with(&[]).unwrap().delivery.fallback.is_none());
}

#[test]
fn fallback_refusals_name_the_flag() {
    let table: &[(&[&str], &str)] = &[
        (
            &["--fallback-max-age", "soon"],
            "--fallback-max-age: \"soon\"",
        ),
        (&["--fallback-max-age", "0s"], "--fallback-max-age must be"),
        (
            &["--fallback-dir", "/run/fb", "--jwt-file", "/run/jwt"],
            "--fallback-dir needs the Workload API, not --jwt-file",
        ),
        (
            &["--fallback-dir", "/run/s", "--files-dir", "/run/s"],
            "--fallback-dir: /run/s is also the files directory",
        ),
    ];
    for (extra, message) in table {
        let err = run_with(extra).unwrap_err();
        assert!(err.to_string().contains(message), "{extra:?}: {err}");
        assert_eq!(err.exit_class(), ExitClass::Config);
    }
}
