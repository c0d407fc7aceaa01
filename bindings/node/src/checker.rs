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
    let (name, counterexample) = match verdict {
        Verdict::Linearizable { .. } => ("linearizable", None),
        Verdict::NotLinearizable {
            key,
            explanation,
            operations,
        } => {
            let mut text = format!("key {:?}: {explanation}", String::from_utf8_lossy(key));
            for op in operations {
                text.push_str("\n  ");
                text.push_str(&scalestore::checker::describe(op));
            }
            ("not_linearizable", Some(text))
        }
        Verdict::Unknown { key, reason } => (
            "unknown",
            Some(format!("key {:?}: {reason}", String::from_utf8_lossy(key))),
        ),
    };
    CheckJs {
        ok: name == "linearizable",
        verdict: name.to_string(),
        counterexample,
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
