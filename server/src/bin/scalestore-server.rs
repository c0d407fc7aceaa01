//! `scalestore-server`: one ScaleStore node (see `scalestore-server --help`). Stops gracefully
//! on SIGTERM or Ctrl-C: leaderships are handed off first, nothing acknowledged is lost.
//! Exit codes: 0 stopped cleanly; 2 the cluster to join could not be reached; 64 bad flags,
//! configuration or data dir; 1 anything else.

use clap::Parser;
use scalestore_server::config::{ServerArgs, ServerConfig};
use scalestore_server::process::Stop;
use tokio::signal::unix::{signal, SignalKind};

#[tokio::main]
async fn main() {
    let args = match ServerArgs::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => scalestore_server::cli::EXIT_USAGE,
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let config = match ServerConfig::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(e.exit_code());
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.json_logs {
        logs.json().init();
    } else {
        logs.init();
    }
    // SIGTERM or Ctrl-C: hand leaderships off, then stop. SIGUSR1: stop at once (what
    // `scalestore dev` sends when it tears its whole cluster down).
    let shutdown = async {
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::user_defined1()),
        ) {
            (Ok(mut term), Ok(mut now)) => {
                tokio::select! {
                    _ = term.recv() => Stop::HandOff,
                    _ = tokio::signal::ctrl_c() => Stop::HandOff,
                    _ = now.recv() => Stop::Now,
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                Stop::HandOff
            }
        }
    };
    if let Err(e) = scalestore_server::process::run_until(config, shutdown).await {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}
