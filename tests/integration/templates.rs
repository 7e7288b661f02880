//! Templates (`--template SRC:DEST[:MODE]`) through the real binary against
//! the stand-in stack: byte-exact rendering (multi-line PEM, unicode, quotes,
//! the template's own final newline), per-template modes, each filter, strict
//! undefined (78, nothing written), a syntax error or unreadable SRC refused
//! before any request, `check` naming each DEST without content, and `--watch`
//! rewriting only the files whose bytes changed and restarting only then; and,
//! through the library, a reader racing 1,000 re-renders of one DEST.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use secrecy::SecretString;
use svid_exec::deliver::files::FilesOptions;
use svid_exec::deliver::template::{Stamps, TemplateSpec, Templates};
use svid_exec::secrets::SecretSet;
use svid_exec_testkit::stack::{Stack, DEMO_SECRETS, ENVIRONMENT, PROJECT_ID};

use crate::util::{assert_no_secret, secret_requests, tmpfs_scratch, wait_for, Launcher, Scratch};
use crate::watch::{set, stack_with, Watched, WAIT};

/// Every run is bounded: a stuck launcher is killed and the test fails.
const BOUND: Duration = Duration::from_secs(90);

const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUdemo\nAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBF\n-----END CERTIFICATE-----\n";

/// Beyond the demo set (which has a PEM key, unicode and quotes): a
/// certificate, a name that is not an identifier, shell and JSON specials.
const EXTRA: &[(&str, &str)] = &[
    ("TLS_CRT", CERT),
    ("tls.key", "line one\nline two, no final newline"),
    ("QUOTES", r#"it's "double" \back\slash $HOME `id` ''"#),
    ("UNICODE", "héllo wörld ✓ 日本語 🦀"),
    // base64 of "décodé ✓\n"
    ("ENCODED", "ZMOpY29kw6kg4pyTCg=="),
];

fn stack() -> Stack {
    let stack = Stack::start();
    for (key, value) in EXTRA {
        stack
            .infisical
            .set_secret(PROJECT_ID, ENVIRONMENT, "/", key, value);
    }
    stack
}

fn secret(name: &str) -> &'static str {
    DEMO_SECRETS
        .iter()
        .chain(EXTRA)
        .find(|(k, _)| *k == name)
        .map(|(_, v)| *v)
        .expect("a known secret")
}

fn every_value() -> Vec<&'static str> {
    DEMO_SECRETS.iter().chain(EXTRA).map(|(_, v)| *v).collect()
}

/// Template sources in a directory of their own, DESTs on tmpfs.
struct Case {
    sources: tempfile::TempDir,
    out: Scratch,
}

impl Case {
    fn new() -> Option<Self> {
        Some(Self {
            sources: tempfile::tempdir().expect("temp dir"),
            out: tmpfs_scratch()?,
        })
    }

    /// Writes template `name` and returns its path.
    fn template(&self, name: &str, text: &str) -> String {
        let path = self.sources.path().join(name);
        fs::write(&path, text).expect("write template");
        path.display().to_string()
    }

    fn out(&self, name: &str) -> PathBuf {
        self.out.path().join(name)
    }

    /// `SRC:DEST[:MODE]` for template `name` rendered to `out/dest`.
    fn flag(&self, name: &str, text: &str, dest: &str, mode: Option<&str>) -> String {
        let src = self.template(name, text);
        let dest = self.out(dest).display().to_string();
        match mode {
            Some(mode) => format!("{src}:{dest}:{mode}"),
            None => format!("{src}:{dest}"),
        }
    }

    /// Every name under `out`, recursively.
    fn written(&self) -> Vec<String> {
        let mut names = Vec::new();
        let mut dirs = vec![self.out.path().to_owned()];
        while let Some(dir) = dirs.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path.clone());
                } else {
                    names.push(
                        path.strip_prefix(self.out.path())
                            .unwrap()
                            .display()
                            .to_string(),
                    );
                }
            }
        }
        names
    }
}

fn svid_exec(stack: &Stack, args: &[&str]) -> Launcher {
    let mut launcher = Launcher::on(stack);
    launcher.args(args).limit(BOUND);
    launcher
}

#[test]
fn dest_gets_the_rendering_byte_for_byte_with_its_own_mode() {
    let Some(case) = Case::new() else { return };
    let stack = stack();
    let nginx = case.flag(
        "tls.conf.j2",
        "ssl_certificate_pem \"{{ TLS_CRT }}\";\nkey={{ TLS_KEY }}{{ secrets[\"tls.key\"] }}\n{{ GREETING }} {{ UNICODE }} {{ QUOTES }}\n",
        "tls.conf",
        None,
    );
    let bare = case.flag(
        "bare.yaml.j2",
        "no final newline: {{ GREETING }}",
        "bare",
        Some("0440"),
    );
    let outcome = svid_exec(
        &stack,
        &["write", "--template", &nginx, "--template", &bare],
    )
    .run();
    outcome.expect_code(0);
    assert_no_secret(&outcome.stderr, &every_value());
    let want = format!(
        "ssl_certificate_pem \"{CERT}\";\nkey={}{}\n{} {} {}\n",
        secret("TLS_KEY"),
        secret("tls.key"),
        secret("GREETING"),
        secret("UNICODE"),
        secret("QUOTES"),
    );
    assert_eq!(fs::read(case.out("tls.conf")).unwrap(), want.as_bytes());
    assert_eq!(
        fs::read(case.out("bare")).unwrap(),
        format!("no final newline: {}", secret("GREETING")).as_bytes()
    );
    let mode = |name: &str| fs::metadata(case.out(name)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("tls.conf"), 0o400, "--file-mode's default");
    assert_eq!(mode("bare"), 0o440, "the template's own MODE");
    // No temp file is left beside them.
    let mut names = case.written();
    names.sort();
    assert_eq!(names, ["bare", "tls.conf"]);
}

#[test]
fn the_filters_config_files_need() {
    let Some(case) = Case::new() else { return };
    let stack = stack();
    let text = "json={{ QUOTES|tojson }}\n\
                sh={{ QUOTES|shell_quote }}\n\
                b64={{ UNICODE|b64encode }}\n\
                decoded={{ ENCODED|b64decode }}\
                optional=[{{ NOT_SET|default(\"\") }}]\n\
                yaml:\n  cert: |\n    {{ TLS_CRT|indent(4) }}\n  next: 1\n";
    let flag = case.flag("filters.j2", text, "out", None);
    svid_exec(&stack, &["write", "--template", &flag])
        .run()
        .expect_code(0);
    let out = fs::read_to_string(case.out("out")).unwrap();
    let lines: BTreeMap<&str, &str> = out.lines().filter_map(|l| l.split_once('=')).collect();
    let json: String = serde_json::from_str(lines["json"]).expect("a JSON string");
    assert_eq!(json, secret("QUOTES"));
    let sh = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("printf %s {}", lines["sh"]))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(sh.stdout).unwrap(),
        secret("QUOTES"),
        "sh reads it back"
    );
    let b64 = base64::engine::general_purpose::STANDARD
        .decode(lines["b64"])
        .unwrap();
    assert_eq!(b64, secret("UNICODE").as_bytes());
    assert!(out.contains("decoded=décodé ✓\noptional=[]\n"), "{out}");
    let cert_block: String = CERT.lines().flat_map(|l| ["    ", l, "\n"]).collect();
    assert!(
        out.ends_with(&format!("yaml:\n  cert: |\n{cert_block}  next: 1\n")),
        "{out}"
    );
}

#[test]
fn an_undefined_name_is_78_names_template_line_and_name_and_nothing_is_written() {
    let Some(case) = Case::new() else { return };
    let stack = stack();
    let good = case.flag("good.j2", "{{ GREETING }}\n", "good", None);
    let bad_src = case.template("bad.j2", "a={{ GREETING }}\n\nb={{ NOT_THERE }}\n");
    let bad = format!("{bad_src}:{}", case.out("bad").display());
    let json = case.out("all.json").display().to_string();
    let dir = case.out("files").display().to_string();
    let outcome = svid_exec(
        &stack,
        &[
            "write",
            "--dir",
            &dir,
            "--json-file",
            &json,
            "--template",
            &good,
            "--template",
            &bad,
        ],
    )
    .run();
    outcome
        .expect_code(78)
        .expect_stderr(&bad_src)
        .expect_stderr("line 3");
    outcome.expect_stderr("`NOT_THERE` is undefined");
    assert_no_secret(&outcome.stderr, &every_value());
    assert!(case.written().is_empty(), "written: {:?}", case.written());
    // `run` refuses the same way, before the program starts.
    let mut launcher = svid_exec(&stack, &["run", "--template", &good, "--template", &bad]);
    launcher.marked_program(case.sources.path());
    launcher
        .run()
        .expect_refused(78, &["`NOT_THERE` is undefined"]);
    assert!(case.written().is_empty(), "written: {:?}", case.written());
}

#[test]
fn a_syntax_error_or_an_unreadable_template_is_78_before_any_request() {
    let Some(case) = Case::new() else { return };
    let stack = stack();
    let broken = case.template("broken.j2", "fine\n{% if %}\n");
    let missing = case.sources.path().join("missing.j2");
    let include = case.template("include.j2", "{% include 'other' %}");
    for (src, says) in [
        (broken.as_str(), "line 2"),
        (missing.to_str().unwrap(), "No such file"),
        (include.as_str(), "syntax error"),
    ] {
        let flag = format!("{src}:{}", case.out("x").display());
        let outcome = svid_exec(&stack, &["write", "--template", &flag]).run();
        outcome
            .expect_code(78)
            .expect_stderr(src)
            .expect_stderr(says);
    }
    assert!(
        stack.infisical.requests().is_empty(),
        "a request was made: {:?}",
        stack.infisical.requests()
    );
    assert!(case.written().is_empty());
}

#[test]
fn check_reports_each_dest_ok_or_its_error_and_never_the_content() {
    let Some(case) = Case::new() else { return };
    let stack = stack();
    let good = case.flag("good.j2", "{{ TLS_CRT }}{{ QUOTES }}", "good", None);
    let bad = case.flag("bad.j2", "{{ NOPE }}", "bad", None);
    let outcome = svid_exec(&stack, &["check", "--template", &good, "--template", &bad]).run();
    let stdout = outcome.stdout_text();
    outcome.expect_code(78);
    let line = |mark: &str, dest: &str| {
        let prefix = format!("{mark} template {}: ", case.out(dest).display());
        stdout
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in:\n{stdout}"))
            .to_owned()
    };
    assert!(line("✓", "good").contains("renders"), "{stdout}");
    assert!(line("✗", "bad").contains("`NOPE` is undefined"), "{stdout}");
    assert_no_secret(&stdout, &every_value());
    assert_no_secret(&outcome.stderr, &every_value());
    assert!(
        case.written().is_empty(),
        "check wrote {:?}",
        case.written()
    );
}

/// Templates only (`--no-env`): a change to a secret no template uses
/// touches nothing; a change to one that is used rewrites only its DEST and
/// restarts the program once.
#[test]
fn watch_rewrites_only_changed_files_and_restarts_only_on_a_delivered_change() {
    let stack = stack_with((3600, 86_400), false);
    set(&stack, "OTHER", "fixed");
    set(&stack, "UNUSED", "u0");
    let sources = tempfile::tempdir().unwrap();
    let src = |name: &str, text: &str| {
        let path = sources.path().join(name);
        fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let a = format!("{}:$D/out/a", src("a.j2", "w={{ WATCHED }}\n"));
    let b = format!("{}:$D/out/b", src("b.j2", "o={{ OTHER }}\n"));
    let script = "echo \"$$ $(cat \"$D/out/a\")\" >> \"$D/starts\"; exec sleep 120";
    let mut launcher = Watched::run(
        &stack,
        "1s",
        &[
            "--no-env",
            "--allow-non-tmpfs",
            "--template",
            &a,
            "--template",
            &b,
        ],
        script,
    );
    let first = launcher.wait_starts(1);
    assert_eq!(first[0].1, "w=one");
    let inode = |name: &str| fs::metadata(launcher.path(name)).unwrap().ino();
    let (a0, b0) = (inode("out/a"), inode("out/b"));
    let polls = |n: usize| {
        let reads = secret_requests(&stack).len();
        wait_for(&format!("{n} polls"), WAIT, || {
            (secret_requests(&stack).len() >= reads + n).then_some(())
        });
    };
    set(&stack, "UNUSED", "u1");
    polls(5);
    assert_eq!(
        launcher.starts(),
        first,
        "a change no template shows restarted the child"
    );
    assert_eq!(
        (inode("out/a"), inode("out/b")),
        (a0, b0),
        "a file was rewritten"
    );

    set(&stack, "WATCHED", "two");
    let starts = launcher.wait_starts(2);
    polls(4);
    assert_eq!(launcher.starts(), starts, "restarted more than once");
    assert_eq!(starts[1].1, "w=two");
    assert_ne!(inode("out/a"), a0, "a was replaced");
    assert_eq!(inode("out/b"), b0, "b did not change and was left alone");
    assert_eq!(
        fs::read_to_string(launcher.path("out/b")).unwrap(),
        "o=fixed\n"
    );
    assert_eq!(launcher.stop(), 128 + 15);
    assert!(!launcher.path("out/a").exists(), "removed at shutdown");
}

/// `--on-change signal:HUP` with templates: the file is replaced before the
/// signal, and the program keeps running.
#[test]
fn watch_signal_mode_rewrites_the_template_before_the_signal() {
    let stack = stack_with((3600, 86_400), false);
    let sources = tempfile::tempdir().unwrap();
    let path = sources.path().join("a.j2");
    fs::write(&path, "w={{ WATCHED }}\n").unwrap();
    let a = format!("{}:$D/out/a", path.display());
    let script = "echo \"$$ -\" >> \"$D/starts\"; \
         trap 'cat \"$D/out/a\" >> \"$D/seen\"' HUP; \
         while :; do sleep 0.1; done";
    let mut launcher = Watched::run(
        &stack,
        "1s",
        &[
            "--on-change",
            "signal:HUP",
            "--no-env",
            "--allow-non-tmpfs",
            "--template",
            &a,
        ],
        script,
    );
    let first = launcher.wait_starts(1);
    set(&stack, "WATCHED", "two");
    assert_eq!(launcher.wait_file("seen"), "w=two\n");
    assert_eq!(launcher.starts(), first, "signal mode must not restart");
    assert_eq!(launcher.stop(), 128 + 15);
}

/// The value of generation `g`: large enough that a torn write would show.
fn value(g: u32) -> String {
    let unit = format!("{g:06};");
    let mut v = unit.repeat(500);
    v.push_str("END\n");
    v
}

/// A reader racing 1,000 re-renders of one DEST only ever sees a whole
/// rendering, never an older one than it has seen.
#[test]
fn a_reader_never_sees_a_torn_rendering_over_1000_rerenders() {
    const RENDERS: u32 = 1_000;
    let Some(out) = tmpfs_scratch() else { return };
    let sources = tempfile::tempdir().unwrap();
    let src = sources.path().join("t.j2");
    fs::write(&src, "<{{ V }}>\n").unwrap();
    let dest = out.path().join("rendered");
    let templates = Templates::load(
        &[TemplateSpec {
            src,
            dest: dest.clone(),
            mode: None,
            memfd: None,
        }],
        &FilesOptions::default(),
    )
    .unwrap();
    let render = |g: u32| {
        let mut set = SecretSet::new();
        set.insert("V", SecretString::from(value(g)));
        templates.render(&set).unwrap()
    };
    let mut stamps = Stamps::default();
    templates.write(&render(0), &mut stamps).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let racer = {
        let (stop, dest) = (Arc::clone(&stop), dest.clone());
        std::thread::spawn(move || {
            let (mut reads, mut torn, mut backwards, mut last) = (0u64, 0u64, 0u64, 0u32);
            while !stop.load(Ordering::Relaxed) {
                let text = fs::read_to_string(&dest).expect("DEST is always there");
                reads += 1;
                let g = text.get(1..7).and_then(|g| g.parse::<u32>().ok());
                match g.filter(|g| text == format!("<{}>\n", value(*g))) {
                    Some(g) if g < last => backwards += 1,
                    Some(g) => last = g,
                    None => torn += 1,
                }
            }
            (reads, torn, backwards)
        })
    };
    for g in 1..=RENDERS {
        let count = templates.write(&render(g), &mut stamps).unwrap();
        assert_eq!(count.written, 1);
    }
    // The same bytes again: nothing is written.
    assert_eq!(
        templates
            .write(&render(RENDERS), &mut stamps)
            .unwrap()
            .unchanged,
        1
    );
    stop.store(true, Ordering::Relaxed);
    let (reads, torn, backwards) = racer.join().unwrap();
    println!("reads={reads} torn={torn} backwards={backwards}");
    assert!(reads > 0);
    assert_eq!((torn, backwards), (0, 0));
    assert_eq!(
        fs::read_to_string(&dest).unwrap(),
        format!("<{}>\n", value(RENDERS))
    );
    let left: Vec<_> = fs::read_dir(out.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "temp files left behind");
}

/// The shipped examples (`examples/templates/`) render as documented, and
/// the Kubernetes example's `ConfigMap` carries them unchanged.
#[test]
fn the_example_templates_render_as_documented() {
    let Some(case) = Case::new() else { return };
    let stack = Stack::start();
    let key = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAkey\n-----END PRIVATE KEY-----\n";
    let chain = "-----BEGIN CERTIFICATE-----\nMIIBintermediate\n-----END CERTIFICATE-----\n";
    for (k, v) in [
        ("TLS_CERT", CERT),
        ("TLS_CHAIN", chain),
        ("TLS_KEY", key),
        ("DB_HOST", "db.internal"),
        ("DB_NAME", "reports"),
        ("DB_USER", "reporter"),
        ("DB_PASSWORD", "p:a\\ss\nword"),
        ("STRIPE_API_KEY", "sk_test_123"),
    ] {
        stack
            .infisical
            .set_secret(PROJECT_ID, ENVIRONMENT, "/", k, v);
    }
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/templates");
    let names = [
        "nginx-tls.conf.j2",
        "fullchain.pem.j2",
        "privkey.pem.j2",
        "pgpass.j2",
        "application.properties.j2",
    ];
    let flags: Vec<String> = names
        .iter()
        .flat_map(|n| {
            let dest = case.out(n.trim_end_matches(".j2"));
            [
                "--template".to_owned(),
                format!("{}:{}", examples.join(n).display(), dest.display()),
            ]
        })
        .collect();
    let mut args = vec!["write"];
    args.extend(flags.iter().map(String::as_str));
    svid_exec(&stack, &args).run().expect_code(0);
    let read = |name: &str| fs::read_to_string(case.out(name)).unwrap();
    assert_eq!(read("fullchain.pem"), format!("{CERT}{chain}"));
    assert_eq!(read("privkey.pem"), key);
    assert_eq!(
        read("pgpass"),
        "db.internal:5432:reports:reporter:p\\:a\\\\ss\nword\n"
    );
    assert_eq!(
        read("application.properties"),
        "spring.datasource.url=jdbc:postgresql://db.internal:5432/reports\n\
         spring.datasource.username=reporter\n\
         spring.datasource.password=p:a\\\\ss\\nword\n\
         stripe.api-key=sk_test_123\n"
    );
    let nginx = read("nginx-tls.conf");
    assert!(
        nginx.starts_with("server {\n    listen 443 ssl;\n    server_name _;\n"),
        "{nginx}"
    );

    let manifest = fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("examples/kubernetes/init-container-templates.yaml"),
    )
    .unwrap();
    for name in ["application.properties.j2", "pgpass.j2"] {
        let header = format!("  {name}: |\n");
        let start = manifest.find(&header).expect("the ConfigMap key") + header.len();
        let block: String = manifest[start..]
            .lines()
            .take_while(|l| l.starts_with("    ") || l.is_empty())
            .flat_map(|l| [l.strip_prefix("    ").unwrap_or(l), "\n"])
            .collect();
        assert_eq!(
            block,
            fs::read_to_string(examples.join(name)).unwrap(),
            "{name}"
        );
    }
}

/// `SVID_EXEC_TEMPLATES` takes the same specs, comma-separated.
#[test]
fn the_environment_variable_takes_a_comma_separated_list() {
    let Some(case) = Case::new() else { return };
    let stack = stack();
    let one = case.flag("one.j2", "{{ UNICODE }}", "one", None);
    let two = case.flag("two.j2", "{{ TLS_CRT }}", "two", Some("0440"));
    svid_exec(&stack, &["write"])
        .env("SVID_EXEC_TEMPLATES", format!("{one},{two}"))
        .run()
        .expect_code(0);
    assert_eq!(
        fs::read_to_string(case.out("one")).unwrap(),
        secret("UNICODE")
    );
    assert_eq!(fs::read_to_string(case.out("two")).unwrap(), CERT);
    let mode = fs::metadata(case.out("two")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o440);
}

/// A poll whose set no longer renders (a template's secret was deleted) is
/// refused like any undeliverable set: logged, the program and the file keep
/// the last good content, and the next deliverable set is acted on.
#[test]
fn watch_refuses_a_set_that_no_longer_renders_and_keeps_the_last_good_file() {
    let stack = stack_with((3600, 86_400), false);
    let sources = tempfile::tempdir().unwrap();
    let path = sources.path().join("a.j2");
    fs::write(&path, "w={{ WATCHED }}\n").unwrap();
    let a = format!("{}:$D/out/a", path.display());
    let script = "echo \"$$ $(cat \"$D/out/a\")\" >> \"$D/starts\"; exec sleep 120";
    let mut launcher = Watched::run(
        &stack,
        "1s",
        &["--no-env", "--allow-non-tmpfs", "--template", &a],
        script,
    );
    let first = launcher.wait_starts(1);
    assert!(stack
        .infisical
        .delete_secret(PROJECT_ID, ENVIRONMENT, "/", "WATCHED"));
    wait_for("the set to be refused", WAIT, || {
        let stderr = launcher.stderr();
        (stderr.contains("the new secrets cannot be delivered")
            && stderr.contains("`WATCHED` is undefined"))
        .then_some(())
    });
    assert_eq!(
        launcher.starts(),
        first,
        "restarted with a set that does not render"
    );
    assert_eq!(
        fs::read_to_string(launcher.path("out/a")).unwrap(),
        "w=one\n"
    );
    set(&stack, "WATCHED", "three");
    assert_eq!(launcher.wait_starts(2)[1].1, "w=three");
    assert_eq!(launcher.stop(), 128 + 15);
}
