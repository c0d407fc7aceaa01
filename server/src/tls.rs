//! TLS (rustls): what a node serves with, and what a node or client dials with. With TLS on, a
//! node's one port (clients and peers) refuses plaintext; clients may or must present a
//! certificate (`--client-cert-required`). Peers always must (mutual TLS), and a peer stream is
//! let in only with a node's certificate: one that chains to the peer CA (`--peer-tls-ca`, by
//! default `--tls-ca`), is valid for both serving and dialing (every node does both, as etcd
//! asks of peer certificates; a client-only certificate of the same CA is refused), and, with
//! `--peer-cert-allowed-hostname`, names that host.

use std::path::{Path, PathBuf};

use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
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

/// PEM contents (not paths) a client dials with: the CA and optionally its certificate and
/// key (Node's `tls` options take contents, as its own `tls` module does).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsPem {
    pub ca: Vec<u8>,
    pub cert: Option<Vec<u8>>,
    pub key: Option<Vec<u8>>,
}

impl TlsFiles {
    /// The files' contents.
    pub fn load(&self) -> ServerResult<TlsPem> {
        let optional =
            |path: &Option<PathBuf>, what| path.as_deref().map(|p| read(p, what)).transpose();
        Ok(TlsPem {
            ca: read(&self.ca, "CA")?,
            cert: optional(&self.cert, "certificate")?,
            key: optional(&self.key, "key")?,
        })
    }
}

/// The dialing side's TLS settings.
pub fn client_config(files: &TlsFiles) -> ServerResult<ClientTlsConfig> {
    client_config_pem(&files.load()?)
}

/// `tls`, checking the nodes' certificates against `name` instead of the host dialed when a
/// name is given (`--tls-server-name`, `Dialing::tls_server_name`).
pub fn with_server_name(tls: ClientTlsConfig, name: Option<&str>) -> ClientTlsConfig {
    match name {
        Some(name) => tls.domain_name(name),
        None => tls,
    }
}

/// [`client_config`] from PEM contents.
pub fn client_config_pem(pem: &TlsPem) -> ServerResult<ClientTlsConfig> {
    let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pem.ca));
    match (&pem.cert, &pem.key) {
        (Some(cert), Some(key)) => {
            config = config.identity(Identity::from_pem(cert, key));
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

/// How a node dials its peers: with its peer certificate, trusting serving certificates of
/// either CA (every node serves clients and peers on one port with its `--tls-cert`).
pub fn peer_dialing_config(tls: &crate::config::NodeTls) -> ServerResult<ClientTlsConfig> {
    let config = client_config(&tls.peer)?;
    if tls.peer.ca == tls.client_ca {
        return Ok(config);
    }
    Ok(config.ca_certificate(Certificate::from_pem(read(&tls.client_ca, "CA")?)))
}

/// The serving side's TLS settings: this node's certificate and key, and the CAs whose
/// certificates it accepts in the handshake: the clients' and the peers' (which of the two a
/// peer stream needs is [`PeerVerifier`]'s business).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
    peer_ca: &Path,
    client_cert_required: bool,
) -> ServerResult<ServerTlsConfig> {
    let mut roots = read(client_ca, "CA")?;
    if peer_ca != client_ca {
        roots.push(b'\n');
        roots.extend(read(peer_ca, "peer CA")?);
    }
    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(
            read(cert, "certificate")?,
            read(key, "key")?,
        ))
        .client_ca_root(Certificate::from_pem(roots))
        .client_auth_optional(!client_cert_required))
}

/// How a node serves over TLS: the handshake's settings, and the check of peer streams.
pub struct ServingTls {
    pub config: ServerTlsConfig,
    pub peers: std::sync::Arc<PeerVerifier>,
}

impl ServingTls {
    /// From a node's TLS files (see [`server_config`] and [`PeerVerifier`]).
    pub fn new(tls: &crate::config::NodeTls) -> ServerResult<ServingTls> {
        Ok(ServingTls {
            config: server_config(
                &tls.cert,
                &tls.key,
                &tls.client_ca,
                &tls.peer.ca,
                tls.client_cert_required,
            )?,
            peers: std::sync::Arc::new(PeerVerifier::new(
                &tls.peer.ca,
                tls.peer_cert_allowed_hostname.as_deref(),
            )?),
        })
    }
}

/// Decides whether the certificate chain a caller presented is a node's (see the module
/// comment): checked when a peer stream opens.
#[derive(Debug)]
pub struct PeerVerifier {
    anchors: Vec<TrustAnchor<'static>>,
    allowed_hostname: Option<ServerName<'static>>,
}

impl PeerVerifier {
    /// From the peer CA's PEM file (every certificate in it is trusted) and the optional name
    /// a peer certificate must be valid for.
    pub fn new(peer_ca: &Path, allowed_hostname: Option<&str>) -> ServerResult<PeerVerifier> {
        let pem = read(peer_ca, "peer CA")?;
        let cas = rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ServerError::Config(format!("peer CA {peer_ca:?}: {e}")))?;
        let anchors = cas
            .iter()
            .map(|ca| webpki::anchor_from_trusted_cert(ca).map(|a| a.to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ServerError::Config(format!("peer CA {peer_ca:?}: {e:?}")))?;
        if anchors.is_empty() {
            return Err(ServerError::Config(format!(
                "peer CA {peer_ca:?} holds no certificate"
            )));
        }
        let allowed_hostname = allowed_hostname
            .map(|h| {
                ServerName::try_from(h.to_string()).map_err(|e| {
                    ServerError::Config(format!("--peer-cert-allowed-hostname {h}: {e}"))
                })
            })
            .transpose()?;
        Ok(PeerVerifier {
            anchors,
            allowed_hostname,
        })
    }

    /// Lets `request` in only if its caller presented a node's certificate; `doing` names what
    /// it tried, for the refusal.
    pub fn check<T>(&self, request: &tonic::Request<T>, doing: &str) -> Result<(), tonic::Status> {
        let chain = request.peer_certs().unwrap_or_default();
        self.verify(&chain).map_err(|why| {
            tonic::Status::permission_denied(format!("{doing} needs a node's certificate: {why}"))
        })
    }

    /// `Err` says why `chain` (leaf first) is not a node's certificate.
    pub fn verify(&self, chain: &[CertificateDer<'_>]) -> Result<(), String> {
        let (leaf, intermediates) = chain.split_first().ok_or("no certificate presented")?;
        let leaf = webpki::EndEntityCert::try_from(leaf).map_err(|e| format!("{e:?}"))?;
        for (usage, what) in [
            (webpki::KeyUsage::client_auth(), "dialing (clientAuth)"),
            (webpki::KeyUsage::server_auth(), "serving (serverAuth)"),
        ] {
            leaf.verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &self.anchors,
                intermediates,
                UnixTime::now(),
                usage,
                None,
                None,
            )
            .map_err(|e| {
                format!("not a node certificate of this cluster's peer CA valid for {what}: {e:?}")
            })?;
        }
        if let Some(name) = &self.allowed_hostname {
            leaf.verify_is_valid_for_subject_name(name)
                .map_err(|e| format!("not valid for {name:?}: {e:?}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };

    struct Ca {
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    fn ca(name: &str) -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Ca {
            cert: params.self_signed(&key).expect("ca"),
            key,
        }
    }

    fn leaf(ca: &Ca, name: &str, usages: Vec<ExtendedKeyUsagePurpose>) -> CertificateDer<'static> {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec![name.to_string()]).expect("params");
        params.extended_key_usages = usages;
        let cert = params.signed_by(&key, &ca.cert, &ca.key).expect("sign");
        cert.der().clone()
    }

    fn verifier(ca: &Ca, hostname: Option<&str>) -> PeerVerifier {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.cert.pem()).expect("write");
        PeerVerifier::new(&path, hostname).expect("verifier")
    }

    #[test]
    fn only_a_node_certificate_of_the_peer_ca_passes_as_a_peer() {
        use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        let (peers, other) = (ca("peers"), ca("other"));
        let node = leaf(&peers, "node-1.example", vec![ServerAuth, ClientAuth]);
        let client_only = leaf(&peers, "node-1.example", vec![ClientAuth]);
        let foreign = leaf(&other, "node-1.example", vec![ServerAuth, ClientAuth]);
        let v = verifier(&peers, None);
        assert_eq!(v.verify(std::slice::from_ref(&node)), Ok(()));
        assert!(v.verify(&[client_only]).is_err());
        assert!(v.verify(&[foreign]).is_err());
        assert!(v.verify(&[]).is_err());
        let named = verifier(&peers, Some("node-1.example"));
        assert_eq!(named.verify(std::slice::from_ref(&node)), Ok(()));
        let elsewhere = verifier(&peers, Some("node-2.example"));
        let refused = elsewhere.verify(&[node]).expect_err("another host's name");
        assert!(refused.contains("node-2.example"), "{refused}");
    }
}
