//! What is at the Workload API socket's path when connecting to it fails, so
//! the message names the real mistake: a directory (often the CSI or hostPath
//! mount instead of the socket in it, listed), a file that is not a socket, or
//! a permission problem (who svid-exec runs as, who owns what it cannot enter).

use std::fmt::Write as _;
use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use nix::unistd::{access, getgid, getgroups, getuid, AccessFlags};

/// At most this many sockets are named from a directory.
const MAX_LISTED: usize = 5;
/// At most this many directory entries are looked at (the path may be `/tmp`).
const MAX_SCANNED: usize = 512;

/// What the path is, when it is there but is not a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum NotSocket {
    /// A directory, with the sockets found directly in it (sorted, at most [`MAX_LISTED`]).
    Directory(Vec<PathBuf>),
    /// Something else: "a regular file", "a FIFO", ...
    Other(&'static str),
}

/// What `path` is when it exists and is not a socket; `None` for a socket (or
/// nothing there, or nothing this user may see).
pub(super) fn not_a_socket(path: &Path) -> Option<NotSocket> {
    let file_type = std::fs::metadata(path).ok()?.file_type();
    if file_type.is_socket() {
        None
    } else if file_type.is_dir() {
        Some(NotSocket::Directory(sockets_in(path)))
    } else if file_type.is_file() {
        Some(NotSocket::Other("a regular file"))
    } else if file_type.is_fifo() {
        Some(NotSocket::Other("a FIFO"))
    } else {
        Some(NotSocket::Other("a device"))
    }
}

fn sockets_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .take(MAX_SCANNED)
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        // Followed: a link to the socket is as good as the socket.
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket()))
        .collect();
    found.sort();
    found.truncate(MAX_LISTED);
    found
}

/// Why opening the socket at `path` was refused, as far as this user can see:
/// who svid-exec runs as, then the socket's owner and mode or, when the
/// socket cannot even be looked at, the directory on the way that stops it.
pub(super) fn permission_detail(path: &Path) -> String {
    let uid = getuid();
    let gid = getgid();
    let mut who = format!("svid-exec runs as uid {uid} gid {gid}");
    let others: Vec<String> = getgroups()
        .unwrap_or_default()
        .into_iter()
        .filter(|g| *g != gid)
        .map(|g| g.to_string())
        .collect();
    if !others.is_empty() {
        let _ = write!(who, " (supplementary groups {})", others.join(","));
    }
    match std::fs::metadata(path) {
        Ok(meta) => format!("{who}; the socket is {}", owner_and_mode(&meta)),
        Err(_) => match closed_directory(path) {
            Some((dir, meta)) => format!(
                "{who}; the directory {} ({}) does not let this user through to the socket",
                dir.display(),
                owner_and_mode(&meta)
            ),
            None => who,
        },
    }
}

/// `owned by uid 0 gid 0, mode 0700`.
fn owner_and_mode(meta: &Metadata) -> String {
    format!(
        "owned by uid {} gid {}, mode {:04o}",
        meta.uid(),
        meta.gid(),
        meta.mode() & 0o7777
    )
}

/// The first directory on the way to `path` (from the root down) that this
/// user may not search, with its metadata.
fn closed_directory(path: &Path) -> Option<(PathBuf, Metadata)> {
    let mut ancestors: Vec<&Path> = path.ancestors().skip(1).collect();
    ancestors.reverse();
    ancestors
        .into_iter()
        .find(|dir| !dir.as_os_str().is_empty() && access(*dir, AccessFlags::X_OK).is_err())
        .and_then(|dir| Some((dir.to_owned(), std::fs::metadata(dir).ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_told_apart_and_its_sockets_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(not_a_socket(dir.path()), Some(NotSocket::Directory(vec![])));

        let sock = dir.path().join("spire-agent.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        std::fs::write(dir.path().join("not-a-socket"), "").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        assert_eq!(
            not_a_socket(dir.path()),
            Some(NotSocket::Directory(vec![sock.clone()]))
        );
        assert_eq!(not_a_socket(&sock), None, "a socket is fine");
        assert_eq!(
            not_a_socket(&dir.path().join("not-a-socket")),
            Some(NotSocket::Other("a regular file"))
        );
        assert_eq!(not_a_socket(&dir.path().join("missing")), None);
    }

    #[test]
    fn the_permission_detail_names_us_and_the_sockets_owner_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        std::fs::set_permissions(&sock, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let text = permission_detail(&sock);
        assert!(
            text.starts_with(&format!(
                "svid-exec runs as uid {} gid {}",
                getuid(),
                getgid()
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "the socket is owned by uid {} gid {}",
                getuid(),
                getgid()
            )),
            "{text}"
        );
        assert!(text.ends_with(", mode 0700"), "{text}");
    }
}
