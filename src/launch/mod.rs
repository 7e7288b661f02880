//! Launching the program: replace svid-exec with it (`exec`), or supervise it
//! (signals, reaping, renewal, restarts).

pub mod exec;
pub mod reaper;
pub mod signals;
pub mod supervise;
