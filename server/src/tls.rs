//! TLS (rustls): what a node serves with, and what a node or client dials with. With TLS on, a
//! node's one port (clients and peers) refuses plaintext; peers must present a certificate
//! signed by the cluster's CA (mutual TLS), clients may or must (`--client-cert-required`).

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::error::{ServerError, ServerResult};

/// PEM files a client (or a node dialing its peers) uses: the CA that signed the servers'
/// certificates, and optionally its own certificate and key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

fn read(path: &Path, what: &str) -> ServerResult<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| ServerError::Config(format!("cannot read {what} {path:?}: {e}")))
}

/// The dialing side's TLS settings.
pub fn client_config(files: &TlsFiles) -> ServerResult<ClientTlsConfig> {
    let mut config =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(&files.ca, "CA")?));
    match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            config = config.identity(Identity::from_pem(
                read(cert, "certificate")?,
                read(key, "key")?,
            ));
        }
        (None, None) => {}
        _ => {
            return Err(ServerError::Config(
                "a client certificate needs its key, and a key its certificate".into(),
            ))
        }
    }
    Ok(config)
}

/// The serving side's TLS settings: this node's certificate and key, and the CA whose
/// certificates it accepts from clients and peers.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
    client_cert_required: bool,
) -> ServerResult<ServerTlsConfig> {
    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(
            read(cert, "certificate")?,
            read(key, "key")?,
        ))
        .client_ca_root(Certificate::from_pem(read(client_ca, "CA")?))
        .client_auth_optional(!client_cert_required))
}
