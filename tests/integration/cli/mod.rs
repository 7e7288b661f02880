//! The command line: its surface without a server (`surface`: help, usage
//! errors, completions, man page) and the configuration it accepts or
//! refuses before anything runs (`config`).

mod config;
mod surface;
