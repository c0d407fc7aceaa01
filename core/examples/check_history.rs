//! Checks a recorded history (JSON lines, as `History::to_jsonl` writes them) for
//! linearizability and prints the verdict.
//!
//! Usage: `check_history FILE [--max-steps N]`

use scalestore::checker::{check, describe, CheckOptions, Verdict};
use scalestore::History;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: check_history FILE [--max-steps N]")?;
    let mut options = CheckOptions::default();
    if let (Some(flag), Some(n)) = (args.next(), args.next()) {
        if flag == "--max-steps" {
            options.max_steps_per_key = n.parse()?;
        }
    }
    let ops = History::from_jsonl(&std::fs::read_to_string(&path)?)?;
    let verdict = check(&ops, options);
    match &verdict {
        Verdict::Linearizable { keys, operations } => {
            println!("linearizable: {operations} operations on {keys} keys")
        }
        Verdict::NotLinearizable {
            key,
            explanation,
            operations,
        } => {
            println!(
                "NOT linearizable on key {:?}: {explanation}",
                String::from_utf8_lossy(key)
            );
            for op in operations {
                println!(
                    "  [{} .. {}] client {}: {}",
                    op.invoke_ns,
                    op.return_ns,
                    op.client,
                    describe(op)
                );
            }
        }
        Verdict::Unknown { key, reason } => println!(
            "unknown on key {:?}: {reason}",
            String::from_utf8_lossy(key)
        ),
    }
    if !verdict.is_linearizable() {
        std::process::exit(1);
    }
    Ok(())
}
