//! `kind = "probe"`: a report-only look at the host by one of the probes in
//! [`crate::probes`] (`probe = "ngroups-kernel"`, …). It never changes anything: `check`
//! shows `ok` with what it found, `manual` with what a person must do, or `not applicable`
//! (e.g. a live probe under `--root`).

use crate::context::Context;
use crate::error::Result;
use crate::host::Host;
use crate::probes;
use crate::steps::Outcome;
use crate::wording::Fields;

/// The keys of a `probe` step.
pub const KEYS: &[&str] = &["probe"];

/// A `probe` step.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The probe's name (one of [`probes::PROBES`]).
    pub probe: String,
}

pub(crate) fn parse(f: &Fields<'_>) -> Result<Spec> {
    let probe = f.required("probe")?;
    if !probes::PROBES.contains(&probe.as_str()) {
        return Err(f.error(
            "probe",
            format!(
                "unknown probe `{probe}`; allowed: {}",
                probes::PROBES.join(", ")
            ),
        ));
    }
    Ok(Spec { probe })
}

impl Spec {
    pub(crate) fn describe(&self) -> String {
        format!("probe {} (report only)", self.probe)
    }

    pub(crate) fn plan(&self, ctx: &Context, host: &dyn Host) -> Result<Outcome> {
        probes::run(&self.probe, ctx, host)
    }
}
