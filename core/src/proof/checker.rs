//! A linearizability checker for key-value histories: the Wing & Gong / Lowe search with
//! per-key partitioning and memoization of (linearized set, state), as the porcupine checker
//! does. The model is one register per key with get, put, delete, append and cas. An operation
//! with an unknown outcome may or may not have taken effect: it is given an infinite return time
//! (it can be linearized anywhere after its invocation, "never" being "after everything") and
//! any output. Failed operations (nothing happened) and unknown or non-linearizable reads are
//! left out.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::proof::history::{OpInput, OpOutput, Operation};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckOptions {
    /// Search steps allowed per key before giving up with `Unknown`.
    pub max_steps_per_key: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            max_steps_per_key: 5_000_000,
        }
    }
}

/// The checker's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Linearizable {
        keys: usize,
        operations: usize,
    },
    /// No order explains the key's history. `operations`: the operation that could not be
    /// placed, with those overlapping it and the last ones placed before it.
    NotLinearizable {
        key: Vec<u8>,
        explanation: String,
        operations: Vec<Operation>,
    },
    /// The search budget ran out on `key`: neither proved nor refuted.
    Unknown {
        key: Vec<u8>,
        reason: String,
    },
}

impl Verdict {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable { .. })
    }

    /// "linearizable", "not_linearizable" or "unknown" (the bindings' `verdict`).
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Linearizable { .. } => "linearizable",
            Verdict::NotLinearizable { .. } => "not_linearizable",
            Verdict::Unknown { .. } => "unknown",
        }
    }

    /// What went wrong, in words: the key, the explanation and the operations involved (one
    /// per line), or why the search gave up; `None` for a linearizable history.
    pub fn counterexample(&self) -> Option<String> {
        match self {
            Verdict::Linearizable { .. } => None,
            Verdict::NotLinearizable {
                key,
                explanation,
                operations,
            } => {
                let mut text = format!("key {:?}: {explanation}", String::from_utf8_lossy(key));
                for op in operations {
                    text.push_str("\n  ");
                    text.push_str(&describe(op));
                }
                Some(text)
            }
            Verdict::Unknown { key, reason } => {
                Some(format!("key {:?}: {reason}", String::from_utf8_lossy(key)))
            }
        }
    }
}

type State = Option<Vec<u8>>;

/// Checks a whole history, key by key, every key absent at the start.
pub fn check(history: &[Operation], options: CheckOptions) -> Verdict {
    check_from(history, &BTreeMap::new(), options)
}

/// [`check`] for a history recorded over data that existed before it: `initial` holds each
/// key's value when recording began (keys not in it were absent).
pub fn check_from(
    history: &[Operation],
    initial: &BTreeMap<Vec<u8>, Vec<u8>>,
    options: CheckOptions,
) -> Verdict {
    let mut by_key: BTreeMap<&[u8], Vec<&Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.as_slice()).or_default().push(op);
    }
    let mut checked = 0;
    for (key, ops) in &by_key {
        let ops: Vec<&Operation> = ops.iter().copied().filter(|o| relevant(o)).collect();
        checked += ops.len();
        match check_key(&ops, initial.get(*key).cloned(), options) {
            KeyResult::Ok => {}
            KeyResult::Fail { explanation, shown } => {
                return Verdict::NotLinearizable {
                    key: key.to_vec(),
                    explanation,
                    operations: shown.into_iter().cloned().collect(),
                }
            }
            KeyResult::Budget(steps) => {
                return Verdict::Unknown {
                    key: key.to_vec(),
                    reason: format!(
                        "search budget of {steps} steps exhausted on {} operations",
                        ops.len()
                    ),
                }
            }
        }
    }
    Verdict::Linearizable {
        keys: by_key.len(),
        operations: checked,
    }
}

fn relevant(op: &Operation) -> bool {
    !matches!(
        (&op.input, &op.output),
        (_, OpOutput::Failed { .. }) | (OpInput::Get, OpOutput::Unknown { .. })
    )
}

fn is_unknown(op: &Operation) -> bool {
    matches!(op.output, OpOutput::Unknown { .. })
}

/// Applies `op` to `state`: the new state, or `None` if `op`'s output contradicts `state`.
fn step(state: &State, op: &Operation) -> Option<State> {
    let unknown = is_unknown(op);
    match (&op.input, &op.output) {
        (OpInput::Get, OpOutput::Value { value }) => (value == state).then(|| state.clone()),
        (OpInput::Put { value }, OpOutput::Put) => Some(Some(value.clone())),
        (OpInput::Put { value }, _) if unknown => Some(Some(value.clone())),
        (OpInput::Delete, OpOutput::Deleted { existed }) => {
            (*existed == state.is_some()).then_some(None)
        }
        (OpInput::Delete, _) if unknown => Some(None),
        (OpInput::Append { value }, out) => {
            let mut new = state.clone().unwrap_or_default();
            new.extend_from_slice(value);
            match out {
                OpOutput::Appended { new_len } => {
                    (*new_len == new.len() as u64).then_some(Some(new))
                }
                _ if unknown => Some(Some(new)),
                _ => None,
            }
        }
        (OpInput::Cas { expected, new }, out) => {
            let matches = state == expected;
            match out {
                OpOutput::Cas { success, current } => {
                    if matches {
                        (*success && current.as_ref() == Some(new)).then(|| Some(new.clone()))
                    } else {
                        (!*success && current == state).then(|| state.clone())
                    }
                }
                _ if unknown => Some(if matches {
                    Some(new.clone())
                } else {
                    state.clone()
                }),
                _ => None,
            }
        }
        _ => None,
    }
}

enum KeyResult<'a> {
    Ok,
    Fail {
        explanation: String,
        shown: Vec<&'a Operation>,
    },
    Budget(u64),
}

/// The search for one key. Events are call and return entries in a doubly linked list; placing
/// an operation removes both of its entries ("lift"), backtracking restores them.
fn check_key<'a>(ops: &[&'a Operation], initial: State, options: CheckOptions) -> KeyResult<'a> {
    let n = ops.len();
    if n == 0 {
        return KeyResult::Ok;
    }
    // Entry 0 is the head; entry 1 + 2i is op i's call, 2 + 2i its return.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        let ret = if is_unknown(op) {
            u64::MAX
        } else {
            op.return_ns.max(op.invoke_ns)
        };
        events.push((op.invoke_ns, true, i));
        events.push((ret, false, i));
    }
    // Calls before returns at equal times: equal timestamps are treated as concurrent.
    events.sort_by_key(|(t, is_call, i)| (*t, !*is_call, *i));
    let size = 2 * n + 1;
    let mut next = vec![0usize; size];
    let mut prev = vec![0usize; size];
    let entry_of =
        |(_, is_call, i): (u64, bool, usize)| if is_call { 1 + 2 * i } else { 2 + 2 * i };
    let mut last = 0;
    for e in &events {
        let id = entry_of(*e);
        next[last] = id;
        prev[id] = last;
        last = id;
    }
    next[last] = usize::MAX;
    let op_of = |entry: usize| (entry - 1) / 2;
    let is_call = |entry: usize| entry % 2 == 1;

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    // Memo of (linearized set, state) pairs seen, the state kept as its length and a 64-bit
    // hash: an append-heavy key's values grow with the run, and keeping each would make memory
    // grow with the square of the history.
    let mut cache: HashSet<(Vec<u64>, (usize, u64))> = HashSet::new();
    let mut calls: Vec<(usize, State)> = Vec::new();
    let mut state: State = initial;
    let mut entry = next[0];
    let mut steps: u64 = 0;
    let mut deepest: (usize, usize) = (0, usize::MAX); // (placed count, blocking op)

    let lift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let p = prev[e];
        let nx = next[e];
        next[p] = nx;
        if nx != usize::MAX {
            prev[nx] = p;
        }
    };
    let unlift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let p = prev[e];
        let nx = next[e];
        next[p] = e;
        if nx != usize::MAX {
            prev[nx] = e;
        }
    };

    while next[0] != usize::MAX {
        steps += 1;
        if steps > options.max_steps_per_key {
            return KeyResult::Budget(options.max_steps_per_key);
        }
        if entry == usize::MAX {
            // Cannot happen: a return entry always precedes the end of the list.
            break;
        }
        if is_call(entry) {
            let i = op_of(entry);
            if let Some(new_state) = step(&state, ops[i]) {
                let mut placed = linearized.clone();
                placed[i / 64] |= 1 << (i % 64);
                if cache.insert((placed.clone(), fingerprint(&new_state))) {
                    calls.push((entry, state));
                    state = new_state;
                    linearized = placed;
                    lift(&mut next, &mut prev, entry);
                    lift(&mut next, &mut prev, entry + 1);
                    entry = next[0];
                    continue;
                }
            }
            entry = next[entry];
        } else {
            // An operation returned before it could be placed: undo the last placement.
            if calls.len() >= deepest.0 {
                deepest = (calls.len(), op_of(entry));
            }
            let Some((call, prev_state)) = calls.pop() else {
                return fail(ops, deepest.1);
            };
            let i = op_of(call);
            state = prev_state;
            linearized[i / 64] &= !(1 << (i % 64));
            unlift(&mut next, &mut prev, call + 1);
            unlift(&mut next, &mut prev, call);
            entry = next[call];
        }
    }
    KeyResult::Ok
}

/// A state as the memo keeps it: absent, or the value's length and XXH64.
fn fingerprint(state: &State) -> (usize, u64) {
    match state {
        None => (usize::MAX, 0),
        Some(v) => (v.len(), xxhash_rust::xxh64::xxh64(v, 0)),
    }
}

fn fail<'a>(ops: &[&'a Operation], blocking: usize) -> KeyResult<'a> {
    let Some(bad) = ops.get(blocking) else {
        return KeyResult::Fail {
            explanation: "no linearization exists".into(),
            shown: ops.to_vec(),
        };
    };
    // The blocking operation, the ones overlapping it, and the three that completed last
    // before it: the smallest context that shows the contradiction in practice.
    let overlaps = |o: &Operation| {
        o.invoke_ns <= bad.return_ns && (is_unknown(o) || o.return_ns >= bad.invoke_ns)
    };
    let mut before: Vec<&Operation> = ops
        .iter()
        .copied()
        .filter(|o| !is_unknown(o) && o.return_ns < bad.invoke_ns)
        .collect();
    before.sort_by_key(|o| o.return_ns);
    let mut shown: Vec<&Operation> = before.iter().rev().take(3).rev().copied().collect();
    shown.extend(ops.iter().copied().filter(|o| overlaps(o)));
    shown.sort_by_key(|o| (o.invoke_ns, o.return_ns));
    shown.dedup_by(|a, b| std::ptr::eq(*a, *b));
    KeyResult::Fail {
        explanation: format!(
            "client {} {} (invoked at {} ns, returned at {} ns) cannot be placed in any order consistent with the others",
            bad.client,
            describe(bad),
            bad.invoke_ns,
            bad.return_ns
        ),
        shown,
    }
}

/// An operation in words, byte strings shown as (lossy) UTF-8.
pub fn describe(op: &Operation) -> String {
    let b = |v: &[u8]| format!("{:?}", String::from_utf8_lossy(v));
    let ob = |v: &Option<Vec<u8>>| v.as_deref().map(b).unwrap_or_else(|| "absent".into());
    let input = match &op.input {
        OpInput::Get => "get".to_string(),
        OpInput::Put { value } => format!("put {}", b(value)),
        OpInput::Delete => "delete".to_string(),
        OpInput::Append { value } => format!("append {}", b(value)),
        OpInput::Cas { expected, new } => format!("cas {} -> {}", ob(expected), b(new)),
    };
    let output = match &op.output {
        OpOutput::Value { value } => ob(value),
        OpOutput::Put => "ok".into(),
        OpOutput::Deleted { existed } => format!("existed={existed}"),
        OpOutput::Appended { new_len } => format!("len={new_len}"),
        OpOutput::Cas { success, current } => format!("success={success} current={}", ob(current)),
        OpOutput::Unknown { error } => format!("unknown ({error})"),
        OpOutput::Failed { error } => format!("failed ({error})"),
    };
    format!("{input} of {} -> {output}", b(&op.key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: u64, input: OpInput, output: OpOutput, invoke: u64, ret: u64) -> Operation {
        Operation {
            client,
            key: b"k".to_vec(),
            input,
            invoke_ns: invoke,
            return_ns: ret,
            output,
            error_kind: None,
        }
    }
    fn put(c: u64, v: &str, i: u64, r: u64) -> Operation {
        op(c, OpInput::Put { value: v.into() }, OpOutput::Put, i, r)
    }
    fn get(c: u64, v: Option<&str>, i: u64, r: u64) -> Operation {
        op(
            c,
            OpInput::Get,
            OpOutput::Value {
                value: v.map(|s| s.into()),
            },
            i,
            r,
        )
    }
    fn append(c: u64, v: &str, len: u64, i: u64, r: u64) -> Operation {
        op(
            c,
            OpInput::Append { value: v.into() },
            OpOutput::Appended { new_len: len },
            i,
            r,
        )
    }
    fn unknown(mut o: Operation) -> Operation {
        o.output = OpOutput::Unknown {
            error: "timeout".into(),
        };
        o
    }
    fn ok(h: &[Operation]) -> bool {
        check(h, CheckOptions::default()).is_linearizable()
    }

    #[test]
    fn sequential_history_with_every_operation_is_linearizable() {
        let h = vec![
            get(1, None, 0, 1),
            put(1, "a", 2, 3),
            get(1, Some("a"), 4, 5),
            append(1, "b", 2, 6, 7),
            op(
                1,
                OpInput::Cas {
                    expected: Some("ab".into()),
                    new: "c".into(),
                },
                OpOutput::Cas {
                    success: true,
                    current: Some("c".into()),
                },
                8,
                9,
            ),
            op(
                1,
                OpInput::Cas {
                    expected: None,
                    new: "d".into(),
                },
                OpOutput::Cas {
                    success: false,
                    current: Some("c".into()),
                },
                10,
                11,
            ),
            op(
                1,
                OpInput::Delete,
                OpOutput::Deleted { existed: true },
                12,
                13,
            ),
            op(
                1,
                OpInput::Delete,
                OpOutput::Deleted { existed: false },
                14,
                15,
            ),
            get(1, None, 16, 17),
        ];
        assert!(ok(&h));
    }

    #[test]
    fn a_read_of_a_value_never_written_is_caught() {
        let h = vec![put(1, "a", 0, 10), get(2, Some("b"), 20, 30)];
        let v = check(&h, CheckOptions::default());
        assert!(matches!(v, Verdict::NotLinearizable { .. }), "{v:?}");
    }

    #[test]
    fn concurrent_appends_linearize_in_the_order_their_lengths_show() {
        // Two overlapping appends; the lengths say "x" went first.
        let good = vec![
            append(1, "x", 1, 0, 10),
            append(2, "y", 2, 1, 9),
            get(3, Some("xy"), 11, 12),
        ];
        assert!(ok(&good));
        // Same lengths, but the read shows the other order.
        let bad = vec![
            append(1, "x", 1, 0, 10),
            append(2, "y", 2, 1, 9),
            get(3, Some("yx"), 11, 12),
        ];
        assert!(!ok(&bad));
    }

    #[test]
    fn a_stale_read_after_two_concurrent_writes_needs_the_search_to_expose_it() {
        // Both puts finish before either read. One of them is last; the first read shows "2", so
        // "2" is last, and the second read can never see "1" again — in either order of the puts.
        let h = vec![
            put(1, "1", 0, 100),
            put(2, "2", 0, 100),
            get(3, Some("2"), 110, 120),
            get(4, Some("1"), 130, 140),
        ];
        let v = check(&h, CheckOptions::default());
        match v {
            Verdict::NotLinearizable {
                operations,
                explanation,
                ..
            } => {
                assert!(operations.len() <= 4, "{operations:?}");
                assert!(explanation.contains("client 4"), "{explanation}");
            }
            other => panic!("expected a violation, got {other:?}"),
        }
        // Reads overlapping the puts may see either order.
        let h = vec![
            put(1, "1", 0, 100),
            put(2, "2", 0, 100),
            get(3, Some("2"), 50, 120),
            get(4, Some("1"), 60, 140),
        ];
        assert!(ok(&h));
    }

    #[test]
    fn an_unknown_write_may_or_may_not_have_taken_effect() {
        let seen = vec![
            put(1, "1", 0, 10),
            unknown(put(2, "2", 20, 30)),
            get(3, Some("2"), 40, 50),
        ];
        assert!(ok(&seen), "took effect");
        let not_seen = vec![
            put(1, "1", 0, 10),
            unknown(put(2, "2", 20, 30)),
            get(3, Some("1"), 40, 50),
        ];
        assert!(ok(&not_seen), "did not take effect (yet)");
        let flip = vec![
            put(1, "1", 0, 10),
            unknown(put(2, "2", 20, 30)),
            get(3, Some("2"), 40, 50),
            get(3, Some("1"), 60, 70),
        ];
        assert!(!ok(&flip), "once seen, an unknown write cannot be undone");
        // An unknown append's length is unknown too, but its bytes count.
        let h = vec![unknown(append(1, "a", 0, 0, 10)), append(2, "b", 2, 20, 30)];
        assert!(ok(&h));
        // Failed operations did nothing.
        let mut failed = put(2, "zz", 20, 30);
        failed.output = OpOutput::Failed {
            error: "invalid".into(),
        };
        assert!(!ok(&[
            put(1, "1", 0, 10),
            failed,
            get(3, Some("zz"), 40, 50)
        ]));
    }

    #[test]
    fn cas_results_must_match_the_state() {
        let cas = |c, e: Option<&str>, n: &str, s: bool, cur: Option<&str>, i, r| {
            op(
                c,
                OpInput::Cas {
                    expected: e.map(|x| x.into()),
                    new: n.into(),
                },
                OpOutput::Cas {
                    success: s,
                    current: cur.map(|x| x.into()),
                },
                i,
                r,
            )
        };
        // Two clients race to take a lock: exactly one may win.
        let one_winner = vec![
            cas(1, None, "a", true, Some("a"), 0, 10),
            cas(2, None, "b", false, Some("a"), 0, 10),
        ];
        assert!(ok(&one_winner));
        let two_winners = vec![
            cas(1, None, "a", true, Some("a"), 0, 10),
            cas(2, None, "b", true, Some("b"), 0, 10),
        ];
        assert!(!ok(&two_winners));
    }

    #[test]
    fn the_budget_turns_an_endless_search_into_unknown() {
        let h: Vec<Operation> = (0..40)
            .map(|i| unknown(append(i, "x", 0, 0, 10)))
            .chain([get(99, Some("q"), 20, 30)])
            .collect();
        let v = check(
            &h,
            CheckOptions {
                max_steps_per_key: 1_000,
            },
        );
        assert!(matches!(v, Verdict::Unknown { .. }), "{v:?}");
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut other = put(1, "z", 0, 10);
        other.key = b"other".to_vec();
        let h = vec![put(1, "a", 0, 10), other, get(2, Some("a"), 20, 30)];
        assert!(ok(&h));
        assert!(matches!(
            check(&h, CheckOptions::default()),
            Verdict::Linearizable {
                keys: 2,
                operations: 3
            }
        ));
    }

    #[test]
    fn a_history_over_existing_data_is_checked_from_its_initial_state() {
        // A read of "old" before any write: impossible from an empty store, fine from "old".
        let history = vec![
            get(1, Some("old"), 0, 10),
            put(2, "new", 20, 30),
            get(1, Some("new"), 40, 50),
        ];
        assert!(!check(&history, CheckOptions::default()).is_linearizable());
        let initial: BTreeMap<Vec<u8>, Vec<u8>> = [(b"k".to_vec(), b"old".to_vec())].into();
        assert!(check_from(&history, &initial, CheckOptions::default()).is_linearizable());
        // And a wrong initial state is caught.
        let wrong: BTreeMap<Vec<u8>, Vec<u8>> = [(b"k".to_vec(), b"other".to_vec())].into();
        assert!(!check_from(&history, &wrong, CheckOptions::default()).is_linearizable());
    }
}
