//! Launch: replace svid-exec with the program (`exec`), or supervise it.

pub mod exec;
