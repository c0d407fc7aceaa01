//! `runSuite` (proof/suite.rs): one seeded fault-suite run on a fresh embedded cluster, every
//! check of the Rust suite.

use std::str::FromStr;

use napi_derive::napi;
use scalestore::suite::{self, Nemesis, RunOptions};

use crate::args::{millis, whole};
use crate::checker::describe;
use crate::error::to_js;

/// The nemeses' kebab-case names.
#[napi]
pub fn nemeses() -> Vec<String> {
    Nemesis::ALL.iter().map(|n| n.name().to_string()).collect()
}

#[napi(object)]
pub struct SuiteReportJs {
    pub nemesis: String,
    pub seed: f64,
    pub passed: bool,
    pub verdict: String,
    pub counterexample: Option<String>,
    pub operations: f64,
    pub acknowledged: f64,
    pub unknown: f64,
    pub lost: u32,
    pub duplicated: u32,
    pub lost_appends: Vec<String>,
    pub duplicated_appends: Vec<String>,
    /// Milliseconds from the last fault's end to the first acknowledged operation after it.
    pub recovery_ms: Option<f64>,
    pub snapshots_installed: f64,
    pub placement_problems: Vec<String>,
    pub summary: String,
    /// The recorded history as JSON lines.
    pub history_jsonl: String,
}

#[napi]
pub async fn run_suite(
    nemesis: String,
    seed: f64,
    duration_ms: f64,
) -> napi::Result<SuiteReportJs> {
    let nemesis = Nemesis::from_str(&nemesis).map_err(to_js)?;
    let options = RunOptions {
        nemesis,
        seed: whole(seed, "seed")?,
        duration: millis(duration_ms, "seconds")?,
        ..RunOptions::default()
    };
    let report = suite::run(options).await.map_err(to_js)?;
    let check = describe(&report.verdict);
    let history_jsonl = report.history.to_jsonl();
    Ok(SuiteReportJs {
        nemesis: report.nemesis.name().to_string(),
        seed: report.seed as f64,
        passed: report.passed(),
        verdict: check.verdict,
        counterexample: check.counterexample,
        operations: report.operations as f64,
        acknowledged: report.acknowledged_operations as f64,
        unknown: report.unknown_operations as f64,
        lost: report.lost_appends.len() as u32,
        duplicated: report.duplicated_appends.len() as u32,
        lost_appends: report.lost_appends.clone(),
        duplicated_appends: report.duplicated_appends.clone(),
        recovery_ms: report.recovery.map(|r| r.as_secs_f64() * 1000.0),
        snapshots_installed: report.snapshots_installed as f64,
        placement_problems: report.placement_problems.clone(),
        summary: report.to_string(),
        history_jsonl,
    })
}
