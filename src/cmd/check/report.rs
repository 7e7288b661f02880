//! `check`'s report: one step per line (ok, warn, fail, skip) with its
//! detail and hint, or one JSON document; the exit code is the first failure's.

use std::fmt::Write as _;
use std::process::ExitCode;

use serde::Serialize;

use crate::cmd::{print_stdout, CmdError};
use crate::config::CheckOutput;
use crate::error::{chain, ExitClass, Failure};

/// The outcome of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Passed.
    Ok,
    /// Passed, but something needs attention.
    Warn,
    /// Failed: `check` exits non-zero.
    Fail,
    /// Not run, because a step it depends on failed (or it does not apply).
    Skip,
}

impl Status {
    const fn mark(self) -> &'static str {
        match self {
            Self::Ok => "✓",
            Self::Warn => "!",
            Self::Fail => "✗",
            Self::Skip => "-",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// What was checked (`login`, `path /api`, …).
    pub name: String,
    /// Its outcome.
    pub status: Status,
    /// What was found (names and claims, never values).
    pub detail: String,
    /// What to check, when there is something to say.
    pub hint: Option<String>,
    /// The exit class of a failure.
    #[serde(skip)]
    pub class: Option<ExitClass>,
}

/// Every step, in order.
#[derive(Debug, Default)]
pub struct Report {
    steps: Vec<Step>,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    ok: bool,
    exit_code: u8,
    steps: &'a [Step],
}

impl Report {
    fn push(
        &mut self,
        name: impl Into<String>,
        status: Status,
        detail: impl Into<String>,
        hint: Option<String>,
        class: Option<ExitClass>,
    ) {
        self.steps.push(Step {
            name: name.into(),
            status,
            detail: detail.into(),
            hint,
            class,
        });
    }

    pub(super) fn ok(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.push(name, Status::Ok, detail, None, None);
    }

    pub(super) fn warn(
        &mut self,
        name: impl Into<String>,
        detail: impl Into<String>,
        hint: Option<String>,
    ) {
        self.push(name, Status::Warn, detail, hint, None);
    }

    pub(super) fn fail(
        &mut self,
        name: impl Into<String>,
        detail: impl Into<String>,
        hint: Option<String>,
        class: ExitClass,
    ) {
        self.push(name, Status::Fail, detail, hint, Some(class));
    }

    /// A failure reported by an error: its message (and causes) as the
    /// detail, its hint and its class.
    pub(super) fn fail_with(&mut self, name: impl Into<String>, error: &(dyn Failure + 'static)) {
        self.fail(name, chain(error), error.hint(), error.exit_class());
    }

    pub(super) fn skip(&mut self, name: impl Into<String>, because: &str) {
        self.push(
            name,
            Status::Skip,
            format!("skipped: {because}"),
            None,
            None,
        );
    }

    /// 0 when nothing failed (warnings allowed), else the code of the first failure's class.
    pub fn exit_code(&self) -> u8 {
        self.steps
            .iter()
            .find_map(|s| s.class.filter(|_| s.status == Status::Fail))
            .map_or(0, ExitClass::code)
    }

    /// One line per step, then the result.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for step in &self.steps {
            let _ = write!(out, "{} {}: {}", step.status.mark(), step.name, step.detail);
            if let Some(hint) = &step.hint {
                let _ = write!(out, " — hint: {hint}");
            }
            out.push('\n');
        }
        let code = self.exit_code();
        if code == 0 {
            out.push_str("result: ok (exit 0)\n");
        } else {
            let _ = writeln!(out, "result: failed (exit {code})");
        }
        out
    }

    /// `{ok, exit_code, steps: [{name, status, detail, hint}]}`.
    pub fn json(&self) -> String {
        let code = self.exit_code();
        let mut out = serde_json::to_string_pretty(&JsonReport {
            ok: code == 0,
            exit_code: code,
            steps: &self.steps,
        })
        .unwrap_or_else(|_| format!("{{\"ok\":false,\"exit_code\":{code},\"steps\":[]}}"));
        out.push('\n');
        out
    }
}

/// Prints the report and returns its exit code.
pub(super) fn emit(report: &Report, output: CheckOutput) -> Result<ExitCode, CmdError> {
    let text = match output {
        CheckOutput::Text => report.text(),
        CheckOutput::Json => report.json(),
    };
    print_stdout(text.as_bytes())?;
    Ok(ExitCode::from(report.exit_code()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_is_the_first_failures_and_warnings_pass() {
        let mut r = Report::default();
        r.ok("a", "fine");
        r.warn("b", "hmm", None);
        assert_eq!(r.exit_code(), 0);
        r.fail("c", "refused", None, ExitClass::Refused);
        r.fail("d", "bad", None, ExitClass::Config);
        r.skip("e", "c failed");
        assert_eq!(r.exit_code(), 77);
        let text = r.text();
        assert!(text.contains("✓ a: fine\n"), "{text}");
        assert!(text.contains("! b: hmm\n"), "{text}");
        assert!(text.contains("✗ c: refused\n"), "{text}");
        assert!(text.contains("- e: skipped: c failed\n"), "{text}");
        assert!(text.ends_with("result: failed (exit 77)\n"), "{text}");
    }

    #[test]
    fn json_report_has_ok_exit_code_and_steps() {
        let mut r = Report::default();
        r.ok("a", "fine");
        r.fail("b", "bad", Some("fix it".into()), ExitClass::Config);
        let v: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["exit_code"], 78);
        assert_eq!(v["steps"][0]["status"], "ok");
        assert_eq!(v["steps"][0]["hint"], serde_json::Value::Null);
        assert_eq!(v["steps"][1]["status"], "fail");
        assert_eq!(v["steps"][1]["hint"], "fix it");
        assert!(v["steps"][1].get("class").is_none());
    }
}
