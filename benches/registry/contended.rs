//! The pull rows again while a bounded CPU burner keeps every core busy (to be written).

use crate::report::Report;
use crate::servers::Server;
use crate::Config;

/// The blob pull at each client count with every core busy with other work.
pub fn pull_contended(
    _servers: &mut [Server; 2],
    _cfg: &Config,
    _digest: &str,
    _report: &mut Report,
) {
}
