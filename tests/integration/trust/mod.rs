//! Trust (issue 11, items 3, 4 and 5, and memory hygiene), through the real
//! binary against the stand-ins, attacker steps as uid 65534 where the tests
//! run as root: a one-shot `run` or `write` revokes its token and cannot dump
//! core (`one_shot`); secrets cannot choose the program or what it loads
//! (`steering`); the supervisor's child dies with it, its process group is
//! stopped, replaced tokens are revoked (`lifecycle`); copies of a secret and
//! of the token in the supervisor's memory, and `--mlock` refused (`memory`).

mod lifecycle;
mod memory;
mod one_shot;
mod steering;

use std::time::Duration;

/// Every wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(40);
