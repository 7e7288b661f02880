//! What every area of the integration tests shares: the launcher and its
//! outcome, the no-secret audit, scratch directories, bounded waits, /proc
//! lookups, running as nobody, and what the stand-ins were asked. The stand-in stack itself is `svid_exec_testkit::stack`.

mod launcher;
mod no_secret;
mod nobody;
mod process;
mod scratch;
mod seen;

pub use launcher::{parse_env0, Launcher, Outcome, Running};
pub use no_secret::{assert_no_fragment, assert_no_secret, find_jwt_like};
pub use nobody::{as_nobody_if_root, sh_as_nobody_if_root, Shared};
pub use process::{alive, ppid, proc_state, wait_for};
pub use scratch::{disk_scratch, tmpfs_scratch, Scratch};
pub use seen::{agent_fetches, oidc_logins, secret_requests};
