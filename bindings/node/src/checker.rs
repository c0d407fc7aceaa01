//! `check` (proof/checker.rs): the verdict and, when there is one, a counterexample in words.
//! The search runs on a blocking thread, never on the event loop.

use napi_derive::napi;
use scalestore::{check, CheckOptions, Verdict};

use crate::history::NativeHistory;

#[napi(object)]
pub struct CheckJs {
    pub ok: bool,
    /// "linearizable", "not_linearizable" or "unknown".
    pub verdict: String,
    pub counterexample: Option<String>,
}

pub fn describe(verdict: &Verdict) -> CheckJs {
    CheckJs {
        ok: verdict.is_linearizable(),
        verdict: verdict.name().to_string(),
        counterexample: verdict.counterexample(),
    }
}

#[napi]
impl NativeHistory {
    #[napi]
    pub async fn check(&self) -> napi::Result<CheckJs> {
        let ops = self.operations();
        let verdict = tokio::task::spawn_blocking(move || check(&ops, CheckOptions::default()))
            .await
            .map_err(crate::error::stopped)?;
        Ok(describe(&verdict))
    }
}
