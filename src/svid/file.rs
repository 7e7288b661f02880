//! The `--jwt-file` source: the file is read at every login, and waited for
//! (with the program's one backoff) while it is missing or empty, because at
//! pod start its writer (spiffe-helper, a projected token) may not have run yet.

use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use secrecy::SecretString;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::{Jwt, SvidError, DEFAULT_PER_CALL_TIMEOUT};
use crate::retry::{self, Backoff, Stop, Transient};

/// Reads `path`, waiting while it is missing or empty until `deadline`.
/// Anything else about the file fails at once.
pub(super) async fn fetch(
    path: &Path,
    backoff: &Backoff,
    deadline: Instant,
) -> Result<Jwt, SvidError> {
    let started = Instant::now();
    let mut logged = false;
    let result = retry::retry_until(
            backoff,
            deadline,
            DEFAULT_PER_CALL_TIMEOUT,
            |_| std::future::ready(read_jwt_file(path)),
            |err: &FileAttempt, wait| {
                if let FileAttempt::NotReady(why) = err {
                    if logged {
                        tracing::debug!(path = %path.display(), retry_in = ?wait, "the JWT file {why}; still waiting…");
                    } else {
                        tracing::info!(path = %path.display(), "the JWT file {why}; waiting for its writer…");
                        crate::notify::status(&format!(
                            "waiting for the JWT file {}: it {why}",
                            path.display()
                        ));
                        logged = true;
                    }
                }
            },
        )
        .await;
    match result {
        Ok(jwt) => Ok(jwt),
        Err(Stop::Fatal(FileAttempt::Fatal(e)) | Stop::Deadline(FileAttempt::Fatal(e))) => Err(e),
        Err(
            Stop::Fatal(FileAttempt::NotReady(last)) | Stop::Deadline(FileAttempt::NotReady(last)),
        ) => Err(SvidError::JwtFileNotReady {
            path: path.to_owned(),
            waited: retry::to_millis(started.elapsed()),
            last,
        }),
    }
}

/// One read of the JWT file that did not give a JWT.
#[derive(Debug)]
enum FileAttempt {
    /// Missing or empty: its writer may not have run yet ("does not exist", "is empty").
    NotReady(&'static str),
    Fatal(SvidError),
}

impl Transient for FileAttempt {
    fn is_transient(&self) -> bool {
        matches!(self, Self::NotReady(_))
    }
}

fn read_jwt_file(path: &Path) -> Result<Jwt, FileAttempt> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            FileAttempt::NotReady("does not exist")
        } else {
            FileAttempt::Fatal(SvidError::JwtFileUnreadable {
                path: path.to_owned(),
                source,
            })
        }
    })?);
    let not_jwt = |reason| {
        FileAttempt::Fatal(SvidError::JwtFileNotJwt {
            path: path.to_owned(),
            reason,
        })
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| not_jwt("not UTF-8 text"))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(FileAttempt::NotReady("is empty"));
    }
    let jwt = Jwt::new(SecretString::from(token)).map_err(not_jwt)?;
    let claims = jwt.claims();
    if claims.remaining(SystemTime::now()) == Some(Duration::ZERO) {
        tracing::warn!(
            path = %path.display(),
            "the JWT in the file has expired; Infisical will refuse it (is its writer still running?)"
        );
    }
    tracing::info!(
        path = %path.display(),
        sub = claims.sub.as_deref().unwrap_or("-"),
        aud = ?claims.aud,
        iss = claims.iss.as_deref().unwrap_or("-"),
        "read the JWT file"
    );
    Ok(jwt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ExitClass, Failure};
    use crate::svid::jwt::test_token as jwt;
    use crate::svid::{SvidSource, SvidSourceOptions};
    use secrecy::ExposeSecret as _;

    #[test]
    fn a_missing_or_empty_jwt_file_is_waited_for_and_anything_else_fails_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.jwt");
        let err = read_jwt_file(&missing).unwrap_err();
        assert!(
            matches!(err, FileAttempt::NotReady("does not exist")),
            "{err:?}"
        );

        let empty = dir.path().join("empty.jwt");
        std::fs::write(&empty, "\n").unwrap();
        let err = read_jwt_file(&empty).unwrap_err();
        assert!(matches!(err, FileAttempt::NotReady("is empty")), "{err:?}");

        let junk = dir.path().join("junk.jwt");
        std::fs::write(&junk, "s3cr3t-not-a-jwt").unwrap();
        let FileAttempt::Fatal(err) = read_jwt_file(&junk).unwrap_err() else {
            panic!("a file that is not a JWT must fail at once");
        };
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        assert!(err.to_string().contains("junk.jwt"), "{err}");
        assert_eq!(err.exit_class(), ExitClass::Config);

        let good = dir.path().join("good.jwt");
        std::fs::write(
            &good,
            format!("{}\n", jwt(r#"{"sub":"x","aud":"infisical"}"#)),
        )
        .unwrap();
        let j = read_jwt_file(&good).unwrap();
        assert_eq!(j.claims().sub.as_deref(), Some("x"));
        assert!(!j.token().expose_secret().ends_with('\n'));
    }

    fn file_source(path: &Path) -> SvidSource {
        SvidSource::new(SvidSourceOptions::File(path.to_owned()))
            .unwrap()
            .with_backoff(Backoff {
                initial: Duration::from_millis(5),
                max: Duration::from_millis(20),
                factor: 2.0,
            })
    }

    #[tokio::test]
    async fn a_jwt_file_that_never_appears_is_unavailable_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("late.jwt");
        let err = file_source(&path)
            .fetch(Instant::now() + Duration::from_millis(300))
            .await
            .unwrap_err();
        assert_eq!(err.exit_class(), ExitClass::Unavailable, "{err}");
        let text = err.to_string();
        assert!(
            text.contains("waited for") && text.contains("late.jwt"),
            "{text}"
        );
        assert!(text.contains("does not exist"), "{text}");
    }

    #[tokio::test]
    async fn a_jwt_file_written_after_the_start_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("late.jwt");
        std::fs::write(&path, "").unwrap();
        let writer = {
            let path = path.clone();
            let token = jwt(r#"{"sub":"late","aud":"infisical"}"#);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                std::fs::write(path, token).unwrap();
            })
        };
        let j = file_source(&path)
            .fetch(Instant::now() + Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(j.claims().sub.as_deref(), Some("late"));
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_jwt_file_that_is_not_a_jwt_fails_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.jwt");
        std::fs::write(&path, "not-a-jwt").unwrap();
        // A deadline far away: only an immediate failure ends this quickly.
        let err = tokio::time::timeout(
            Duration::from_secs(20),
            file_source(&path).fetch(Instant::now() + Duration::from_secs(3600)),
        )
        .await
        .expect("a malformed file must not be waited for")
        .unwrap_err();
        assert_eq!(err.exit_class(), ExitClass::Config, "{err}");
    }
}
