//! Launching the program: replace svid-exec with it (`exec`), or supervise it
//! (signals, reaping, renewal, restarts), and telling the platform when it is
//! ready (`readiness`).

pub mod exec;
pub mod readiness;
pub mod reaper;
pub mod signals;
pub mod supervise;
