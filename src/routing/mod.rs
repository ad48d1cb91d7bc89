//! The routing directory: which destination is responsible for a service and region.
//!
//! `table` resolves a submission against the routes (the hot path, no I/O); `live` is the
//! snapshot in use: the configuration file's entries merged with those stored through the
//! admin API, validated together and swapped in whole when either changes.

pub(crate) mod live;
pub mod table;
