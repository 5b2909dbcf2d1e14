//! The "scale" scenario: 1,000 repositories × 100 tags (to be written).

use std::path::Path;

use crate::report::Report;
use crate::Config;

/// Builds the large registry and measures startup, RSS, manifest GET, paging and no-change sync.
pub fn scale(_bin: &Path, _run: &Path, _cfg: &Config, _report: &mut Report) {}
