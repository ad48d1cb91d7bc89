//! What every other module speaks in: the domain keys (`keys`: `Land`, `Ars`, `Ags`,
//! `RegionPrefix`, `ServiceKey` …, which cannot hold an invalid value), the network the
//! gateway connects (`network`: brokers, platforms, destinations, routes), the routing
//! directory's entries as operators write them with their one validation (`entries`), and
//! the bounds on operators' text (`text`).
//!
//! Nothing here does I/O or knows the configuration file's layout.

mod entries;
mod keys;
mod network;
mod text;

pub use entries::*;
pub use keys::*;
pub use network::*;
pub use text::*;
