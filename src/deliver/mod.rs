//! Delivery: how fetched secrets reach the program (environment, files).

pub mod env;
pub mod files;
