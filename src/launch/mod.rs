//! Launching the program: supervise mode (signals, reaping, restarts).

pub mod reaper;
pub mod signals;
pub mod supervise;
