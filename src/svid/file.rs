//! The `--jwt-file` source: the file is read at every login, and waited for
//! (with the program's one backoff) while it is missing or empty, because at
//! pod start its writer (spiffe-helper, a projected token) may not have run yet.
//!
//! The file must be safe from substitution: owned by root or by the user
//! svid-exec runs as, and writable by its owner only (otherwise someone else
//! could make svid-exec log in with another identity's token): 78. One that
//! others may read is used, with a warning.
//!
//! Every read is bounded, since whatever sits at the path decides how a read
//! behaves: only a regular file is read (it is opened non-blocking and checked
//! with `fstat` first, so a FIFO cannot hold the start), at most
//! [`MAX_JWT_FILE_BYTES`] of it, on a thread of its own that the launcher stops
//! waiting for at `--startup-timeout` (a read stuck on a hung network or FUSE
//! mount cannot be cancelled; see [`off_thread`]).

use std::fs::File;
use std::io::{self, Read as _, Seek as _};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use nix::fcntl::OFlag;
use nix::unistd::geteuid;
use secrecy::SecretString;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::progress::{elapsed_of, with_progress, PROGRESS_EVERY};
use super::{Jwt, SvidError};
use crate::retry::{self, Backoff, Stop, Transient};

/// The largest JWT file read: 64 KiB. A JWT-SVID is under 1 KiB with SPIRE's
/// default ES256 key and about 1.5 KiB with RSA-4096; a Kubernetes projected
/// token is 1-2 KiB. 64 KiB leaves room for tokens with many custom claims
/// while a wrong path (a log, a binary, an endless device) is refused after
/// reading at most this much.
pub const MAX_JWT_FILE_BYTES: usize = 64 * 1024;

/// A read that did not finish within less than this, because the deadline
/// left no more, is not judged stuck (see the workload source's `last_word`).
const STUCK_JUDGED_AFTER: Duration = Duration::from_secs(1);

/// Reads `path`, waiting while it is missing or empty until `deadline`.
/// Anything else about the file fails at once. Warns (once per `warned`)
/// when the file's mode lets group or other read it.
pub(super) async fn fetch(
    path: &Path,
    backoff: &Backoff,
    deadline: Instant,
    warned: &AtomicBool,
) -> Result<Jwt, SvidError> {
    let started = Instant::now();
    let total = deadline.saturating_duration_since(started);
    // What the file was at the last attempt, for the progress lines.
    let waiting: Mutex<Option<&'static str>> = Mutex::new(None);
    let attempts = retry::retry_until(
        backoff,
        deadline,
        // The whole start-up budget: a read that hangs is not tried again.
        Duration::MAX,
        |bound| read_within(path, bound),
        |err: &FileAttempt, wait| {
            if let FileAttempt::NotReady(why) = err {
                let mut last = waiting
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if last.is_some() {
                    tracing::debug!(path = %path.display(), retry_in = ?wait, "the JWT file {why}; still waiting…");
                } else {
                    tracing::info!(path = %path.display(), "the JWT file {why}; waiting for its writer…");
                    crate::notify::status(&format!(
                        "waiting for the JWT file {}: it {why}",
                        path.display()
                    ));
                }
                *last = Some(why);
            }
        },
    );
    let result = with_progress(attempts, PROGRESS_EVERY, |elapsed| {
        let last = *waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(why) = last {
            tracing::info!(
                path = %path.display(),
                "still waiting for the JWT file {} (it {why}), {}",
                path.display(),
                elapsed_of(elapsed, total)
            );
        }
    })
    .await;
    match result {
        Ok(read) => {
            if let Some(who) = exposed_to(read.mode) {
                if !warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        path = %path.display(),
                        mode = %format!("{:04o}", read.mode & 0o7777),
                        "the JWT file is readable by {who}: whoever can read it can log in as this workload until the token expires; make it readable by its owner only (0600 or 0400)"
                    );
                }
            }
            log_read(path, &read.jwt);
            Ok(read.jwt)
        }
        // A read the deadline cut short (the file appeared in the last moment)
        // proves nothing stuck: the last full answer says what was waited for.
        Err(Stop::Fatal(FileAttempt::Fatal(SvidError::JwtFileStuck { waited, .. })))
            if waited < STUCK_JUDGED_AFTER
                && waiting
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .is_some() =>
        {
            let last = waiting
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .unwrap_or("does not exist");
            Err(SvidError::JwtFileNotReady {
                path: path.to_owned(),
                waited: retry::to_millis(started.elapsed()),
                last,
            })
        }
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

fn log_read(path: &Path, jwt: &Jwt) {
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
}

/// Who besides the owner may read a file of this mode, if anyone.
fn exposed_to(mode: u32) -> Option<&'static str> {
    besides_the_owner(mode, 0o040, 0o004)
}

/// Who besides the owner has the permission whose group bit is `group` and
/// whose others bit is `other` in `mode`, if anyone.
fn besides_the_owner(mode: u32, group: u32, other: u32) -> Option<&'static str> {
    match (mode & group != 0, mode & other != 0) {
        (true, true) => Some("group and others"),
        (true, false) => Some("its group"),
        (false, true) => Some("others"),
        (false, false) => None,
    }
}

/// Why someone besides root and `us` could change a file owned by `owner`
/// with `mode` (and so hand svid-exec another identity's token), if anyone
/// can: its owner can (and can `chmod` it), so must be root or `us`; and no
/// write bit for its group or others. What is judged is the file itself, as
/// opened (symbolic links followed), not the directories on its path: a
/// projected service-account token sits behind symbolic links in a sticky
/// world-writable volume, and a Kubernetes `emptyDir` shared with
/// spiffe-helper is 0777; the pod is the boundary there.
fn open_to_substitution(owner: u32, mode: u32, us: u32) -> Option<String> {
    if owner != 0 && owner != us {
        return Some(format!(
            "is owned by uid {owner}, neither root nor the user svid-exec runs as (uid {us})"
        ));
    }
    besides_the_owner(mode, 0o020, 0o002)
        .map(|who| format!("is writable by {who} (mode {:04o})", mode & 0o7777))
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

/// A JWT read from the file, with the file's mode.
#[derive(Debug)]
struct FileRead {
    jwt: Jwt,
    mode: u32,
}

/// [`read_jwt_file`] on its own thread, waited for at most `bound`.
async fn read_within(path: &Path, bound: Duration) -> Result<FileRead, FileAttempt> {
    let owned = path.to_owned();
    match off_thread(bound, move || read_jwt_file(&owned)).await {
        Ok(Some(read)) => read,
        Ok(None) => Err(FileAttempt::Fatal(SvidError::JwtFileStuck {
            path: path.to_owned(),
            waited: retry::to_millis(bound),
        })),
        Err(source) => Err(FileAttempt::Fatal(SvidError::JwtFileUnreadable {
            path: path.to_owned(),
            source,
        })),
    }
}

/// Runs `work` on a thread of its own and waits at most `bound` for its
/// result (`Ok(None)` when it did not come; `Err` when no thread could start).
///
/// A plain thread, not the runtime's blocking pool: a read stuck in the
/// kernel cannot be cancelled, and the runtime waits for its blocking tasks
/// when it shuts down, so a stuck read there would hang the exit too. A
/// detached thread ends with the process, or with its `exec`.
async fn off_thread<T: Send + 'static>(
    bound: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> io::Result<Option<T>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().spawn(move || {
        // The receiver is gone only when the launcher stopped waiting.
        let _ = tx.send(work());
    })?;
    Ok(tokio::time::timeout(bound, rx)
        .await
        .ok()
        .and_then(Result::ok))
}

/// What a non-regular file is, for messages.
fn kind_of(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO (named pipe)"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

/// Opens `path` for reading without blocking: `O_NONBLOCK` makes opening a
/// FIFO return at once instead of waiting for a writer (and has no effect on
/// a regular file's reads).
fn open_nonblocking(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
        .open(path)
}

/// Up to `room` bytes of `file`, in one allocation of that size: the read is
/// bounded by it, so the buffer never grows (a growing buffer would leave
/// copies of the token behind in the memory it gives back).
fn read_at_most(file: &mut File, room: usize) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(room));
    file.take(room as u64).read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn read_jwt_file(path: &Path) -> Result<FileRead, FileAttempt> {
    let fatal = |e| FileAttempt::Fatal(e);
    let not_regular = |kind| {
        fatal(SvidError::JwtFileNotRegular {
            path: path.to_owned(),
            kind,
        })
    };
    let mut file = open_nonblocking(path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            return FileAttempt::NotReady("does not exist");
        }
        // Opening a socket fails (ENXIO); say what it is rather than the errno.
        match std::fs::metadata(path) {
            Ok(meta) if !meta.is_file() => not_regular(kind_of(meta.file_type())),
            _ => fatal(SvidError::JwtFileUnreadable {
                path: path.to_owned(),
                source,
            }),
        }
    })?;
    let unreadable = |source| {
        fatal(SvidError::JwtFileUnreadable {
            path: path.to_owned(),
            source,
        })
    };
    // The descriptor's own type: what was opened, whatever the path now names.
    let meta = file.metadata().map_err(unreadable)?;
    if !meta.is_file() {
        return Err(not_regular(kind_of(meta.file_type())));
    }
    if let Some(problem) = open_to_substitution(meta.uid(), meta.mode(), geteuid().as_raw()) {
        return Err(fatal(SvidError::JwtFileNotProtected {
            path: path.to_owned(),
            problem,
        }));
    }
    let too_large = || {
        fatal(SvidError::JwtFileTooLarge {
            path: path.to_owned(),
            limit: MAX_JWT_FILE_BYTES,
        })
    };
    let size = usize::try_from(meta.len()).unwrap_or(usize::MAX);
    if size > MAX_JWT_FILE_BYTES {
        return Err(too_large());
    }
    let mut bytes = read_at_most(&mut file, size + 1).map_err(unreadable)?;
    if bytes.len() > size {
        // More than the size found: a file written while it is read, or one
        // whose file system does not report sizes (procfs). Read it again,
        // up to the cap.
        drop(bytes);
        file.rewind().map_err(unreadable)?;
        bytes = read_at_most(&mut file, MAX_JWT_FILE_BYTES + 1).map_err(unreadable)?;
    }
    if bytes.len() > MAX_JWT_FILE_BYTES {
        return Err(too_large());
    }
    let not_jwt = |reason| {
        fatal(SvidError::JwtFileNotJwt {
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
    Ok(FileRead {
        jwt,
        mode: meta.mode(),
    })
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
        let j = read_jwt_file(&good).unwrap().jwt;
        assert_eq!(j.claims().sub.as_deref(), Some("x"));
        assert!(!j.token().expose_secret().ends_with('\n'));
    }

    /// `read_jwt_file` on a helper thread: a read that blocks fails the test
    /// instead of hanging it.
    fn read_or_blocked(path: &Path) -> Result<FileRead, FileAttempt> {
        let (tx, rx) = std::sync::mpsc::channel();
        let owned = path.to_owned();
        std::thread::spawn(move || tx.send(read_jwt_file(&owned)));
        rx.recv_timeout(Duration::from_secs(20))
            .expect("the read blocked")
    }

    fn fatal(result: Result<FileRead, FileAttempt>) -> SvidError {
        match result {
            Err(FileAttempt::Fatal(e)) => e,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn a_fifo_a_directory_or_a_device_is_refused_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("token.fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        for (path, kind) in [
            (fifo.as_path(), "FIFO"),
            (dir.path(), "a directory"),
            (Path::new("/dev/zero"), "a character device"),
        ] {
            let err = fatal(read_or_blocked(path));
            assert!(matches!(err, SvidError::JwtFileNotRegular { .. }), "{err}");
            assert_eq!(err.exit_class(), ExitClass::Config);
            assert!(err.to_string().contains(kind), "{err}");
            assert!(err.to_string().contains("not a regular file"), "{err}");
        }
    }

    #[test]
    fn a_file_above_the_cap_is_refused_even_when_a_jwt_starts_it() {
        let dir = tempfile::tempdir().unwrap();
        let token = jwt(r#"{"sub":"x","aud":"infisical"}"#);
        let padded = |len: usize| format!("{token}{}", "\n".repeat(len - token.len()));

        let at_cap = dir.path().join("at-cap.jwt");
        std::fs::write(&at_cap, padded(MAX_JWT_FILE_BYTES)).unwrap();
        assert!(read_jwt_file(&at_cap).is_ok(), "exactly the cap is read");

        let above = dir.path().join("above.jwt");
        std::fs::write(&above, padded(MAX_JWT_FILE_BYTES + 1)).unwrap();
        let err = fatal(read_jwt_file(&above));
        assert!(matches!(err, SvidError::JwtFileTooLarge { .. }), "{err}");
        assert_eq!(err.exit_class(), ExitClass::Config);
        assert!(err.to_string().contains("64 KiB"), "{err}");
    }

    #[test]
    fn a_file_whose_size_is_not_reported_is_still_read_whole() {
        // procfs reports size 0 for files that have content.
        let err = fatal(read_jwt_file(Path::new("/proc/self/cmdline")));
        assert!(
            matches!(err, SvidError::JwtFileNotJwt { .. }),
            "read as empty instead of read whole: {err}"
        );
    }

    #[test]
    fn the_mode_tells_who_else_may_read_the_file() {
        for (mode, who) in [
            (0o100_600, None),
            (0o400, None),
            (0o640, Some("its group")),
            (0o604, Some("others")),
            (0o644, Some("group and others")),
            (0o622, None),
        ] {
            assert_eq!(exposed_to(mode), who, "{mode:o}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jwt");
        std::fs::write(&path, jwt(r#"{"sub":"x"}"#)).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        assert_eq!(read_jwt_file(&path).unwrap().mode & 0o777, 0o644);
    }

    #[test]
    fn only_root_or_this_user_may_own_the_file_and_only_its_owner_may_write_it() {
        let us = 1000;
        for (owner, mode, refused) in [
            // kubelet's projected service-account token: root, 0644 or 0600.
            (0, 0o100_644, None),
            (0, 0o600, None),
            (us, 0o600, None),
            (us, 0o440, None),
            (0, 0o664, Some("is writable by its group (mode 0664)")),
            (us, 0o602, Some("is writable by others (mode 0602)")),
            (
                us,
                0o100_666,
                Some("is writable by group and others (mode 0666)"),
            ),
            (1001, 0o600, Some("is owned by uid 1001, neither root nor")),
        ] {
            let got = open_to_substitution(owner, mode, us);
            match refused {
                None => assert_eq!(got, None, "{owner} {mode:o}"),
                Some(text) => {
                    let got = got.unwrap_or_else(|| panic!("{owner} {mode:o} accepted"));
                    assert!(got.contains(text), "{got}");
                }
            }
        }
    }

    #[test]
    fn a_file_others_may_write_is_refused_and_kubernetes_layouts_are_read() {
        use std::os::unix::fs::{symlink, PermissionsExt as _};
        let dir = tempfile::tempdir().unwrap();
        let token = jwt(r#"{"sub":"x","aud":"infisical"}"#);
        let chmod = |path: &Path, mode| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let write = |path: &Path, mode| {
            std::fs::write(path, &token).unwrap();
            chmod(path, mode);
        };
        let shared = dir.path().join("shared.jwt");
        write(&shared, 0o620);
        let err = fatal(read_jwt_file(&shared));
        assert!(
            matches!(err, SvidError::JwtFileNotProtected { .. }),
            "{err}"
        );
        assert_eq!(err.exit_class(), ExitClass::Config);
        assert!(err.to_string().contains("writable by its group"), "{err}");

        // What kubelet writes: a sticky world-writable volume, the token in a
        // timestamped directory, reached through `..data` and `token` links.
        let volume = dir.path().join("serviceaccount");
        let generation = volume.join("..2026_12_03_16_20_39.1");
        std::fs::create_dir_all(&generation).unwrap();
        write(&generation.join("token"), 0o644);
        symlink("..2026_12_03_16_20_39.1", volume.join("..data")).unwrap();
        symlink("..data/token", volume.join("token")).unwrap();
        chmod(&volume, 0o1777);
        let read = read_jwt_file(&volume.join("token")).unwrap();
        assert_eq!(read.jwt.claims().sub.as_deref(), Some("x"));

        // spiffe-helper's output in a pod's emptyDir (0777, not sticky).
        let empty_dir = dir.path().join("emptydir");
        std::fs::create_dir(&empty_dir).unwrap();
        write(&empty_dir.join("jwt_svid.token"), 0o600);
        chmod(&empty_dir, 0o777);
        assert!(read_jwt_file(&empty_dir.join("jwt_svid.token")).is_ok());
    }

    #[tokio::test]
    async fn a_read_that_does_not_end_is_abandoned_at_its_bound() {
        let started = std::time::Instant::now();
        let out = off_thread(Duration::from_millis(50), || {
            std::thread::sleep(Duration::from_secs(30));
        })
        .await
        .unwrap();
        assert!(out.is_none());
        // Not a timing check: only that it did not wait for the 30 s work.
        assert!(started.elapsed() < Duration::from_secs(25));
        assert_eq!(
            off_thread(Duration::from_secs(20), || 5).await.unwrap(),
            Some(5)
        );
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
