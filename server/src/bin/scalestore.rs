//! The `scalestore` command line (see `scalestore --help`).

#[tokio::main]
async fn main() {
    let code = scalestore_server::cli::main_with(std::env::args().collect()).await;
    std::process::exit(code);
}
