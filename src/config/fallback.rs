//! `--fallback-dir` and `--fallback-max-age`: read with the other options
//! (each problem naming its flag or variable), then bound to everything that
//! decided what is fetched and delivered, once those parts are valid.

use std::path::PathBuf;
use std::time::Duration;

use super::problems::{Problem, Problems};
use super::values::{duration, non_empty_path};
use crate::cli;
use crate::deliver::fallback::{Binding, FallbackOptions};
use crate::deliver::DeliveryOptions;
use crate::infisical::{ClientOptions, FetchSpec, ProjectRef};
use crate::session::SessionOptions;
use crate::svid::SvidSourceOptions;

/// The fallback's own values, valid.
#[derive(Debug, Clone)]
pub(super) struct Given {
    dir: Option<PathBuf>,
    max_age: Duration,
    allow_non_tmpfs: bool,
}

/// `--fallback-dir` (non-empty) and `--fallback-max-age` (checked even
/// without a directory, so a typo is not silently ignored).
pub(super) fn read(args: &cli::DeliveryArgs, p: &mut Problems<'_>) -> Option<Given> {
    let dir = p.value("fallback_dir", |l| {
        non_empty_path(l, args.fallback_dir.clone())
    });
    let max_age = p.value("fallback_max_age", |l| duration(l, &args.fallback_max_age));
    Some(Given {
        dir: dir?,
        max_age: max_age?,
        allow_non_tmpfs: args.allow_non_tmpfs,
    })
}

/// The parts a stored set is bound to, valid.
pub(super) struct Parts<'a> {
    pub svid: &'a SvidSourceOptions,
    pub client: &'a ClientOptions,
    pub login: &'a SessionOptions,
    pub fetch: &'a FetchSpec<ProjectRef>,
    pub delivery: &'a DeliveryOptions,
}

/// The fallback directory, its maximum age and what a stored set is bound
/// to: everything that decided what is fetched and delivered (the SPIFFE ID
/// is added at each login). `None` without `--fallback-dir`, or with a
/// problem recorded: it needs the Workload API and a directory of its own.
pub(super) fn options(
    given: Given,
    parts: &Parts<'_>,
    p: &mut Problems<'_>,
) -> Option<FallbackOptions> {
    let dir = given.dir?;
    if matches!(parts.svid, SvidSourceOptions::File(_)) {
        p.push(Problem::new(
            format!(
                "{} needs the Workload API, not {}",
                p.label("fallback_dir"),
                p.label("jwt_file")
            ),
            "cached secrets are used only when the Workload API has just issued a JWT-SVID for \
             the same SPIFFE ID; a JWT file proves nothing about the workload during an outage",
        ));
        return None;
    }
    let delivery = parts.delivery;
    if delivery.files.as_ref().and_then(|f| f.dir.as_ref()) == Some(&dir) {
        p.push(Problem::new(
            format!(
                "{}: {} is also the files directory",
                p.label("fallback_dir"),
                dir.display()
            ),
            "give the fallback a directory of its own (it is kept private, 0700)",
        ));
        return None;
    }
    let fetch = parts.fetch;
    let binding = Binding {
        api_url: parts.client.api_url.as_str().to_owned(),
        identity_id: parts.login.identity_id.clone(),
        auth_method: parts.login.method.slug().to_owned(),
        organization: parts.login.organization_slug.clone(),
        project: match &fetch.project_id {
            ProjectRef::Id(id) => format!("id:{id}"),
            ProjectRef::Slug(slug) => format!("slug:{slug}"),
        },
        environment: fetch.environment.clone(),
        paths: fetch.paths.clone(),
        flags: [fetch.recursive, fetch.include_imports, fetch.expand],
        tags: fetch.tags.clone(),
        require: delivery.require.clone(),
        // The stored set is the selected one: a set stored under another
        // selection is another binding.
        selection: delivery.selection.rules(),
    };
    Some(FallbackOptions {
        dir,
        max_age: given.max_age,
        allow_non_tmpfs: given.allow_non_tmpfs,
        binding,
    })
}
