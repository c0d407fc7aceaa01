//! Generates the gRPC code from `proto/` with a vendored protoc, so no system package is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto");
    tonic_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&["proto/scalestore/v1/scalestore.proto"], &["proto"])?;
    // etcd's KV client, for `scalestore bench --target etcd`.
    tonic_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_protos(&["proto/etcd/kv.proto"], &["proto"])?;
    Ok(())
}
