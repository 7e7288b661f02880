//! Delivery: how fetched secrets reach the program (environment, files).

pub mod files;
pub mod env;
