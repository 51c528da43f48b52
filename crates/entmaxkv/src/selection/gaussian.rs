//! Gaussian-aware page selection (SPEC §4). Interim: not implemented yet.

use super::{SelectScratch, Selection, SelectionContext};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Options of the Gaussian-aware selector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct GaussianOpts {}

/// Gaussian-aware selection for one task.
pub fn select(
    _ctx: &SelectionContext<'_>,
    _opts: &GaussianOpts,
    _scratch: &mut SelectScratch,
    _out: &mut Selection,
) -> Result<()> {
    Err(Error::Unsupported {
        op: "gaussian::select",
        what: "Gaussian selection is not implemented yet".into(),
    })
}
