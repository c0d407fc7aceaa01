//! `check_linearizable` (proof/checker.rs): the verdict and, when there is one, a
//! counterexample in words.

use pyo3::prelude::*;
use scalestore::{check, CheckOptions, Verdict};

use crate::history::PyHistory;

/// `(verdict, counterexample)`: verdict is "linearizable", "not_linearizable" or "unknown".
#[pyfunction]
pub fn check_history(py: Python<'_>, history: &PyHistory) -> (String, Option<String>) {
    let ops = history.operations();
    let verdict = py.allow_threads(|| check(&ops, CheckOptions::default()));
    describe(&verdict)
}

pub fn describe(verdict: &Verdict) -> (String, Option<String>) {
    (verdict.name().to_string(), verdict.counterexample())
}
