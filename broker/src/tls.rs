//! TLS for the client listener: a rustls acceptor built from PEM files,
//! optional client-certificate verification, and the client certificate's
//! common name for [`ConnInfo::cert_cn`](crate::connection::ConnInfo).
//!
//! The `ring` provider is passed explicitly, so no process-wide default
//! provider has to be installed.

use crate::config::TlsListenerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConnection, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// Why a TLS acceptor could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A required setting is missing.
    #[error("listeners.tls.{0} is not set")]
    Missing(&'static str),
    /// A PEM file could not be read or holds malformed PEM.
    #[error("cannot read PEM file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O or PEM failure.
        #[source]
        source: std::io::Error,
    },
    /// A certificate file holds no certificate.
    #[error("no certificate found in {}", .0.display())]
    NoCertificate(PathBuf),
    /// A key file holds no private key.
    #[error("no private key found in {}", .0.display())]
    NoKey(PathBuf),
    /// A CA certificate was rejected.
    #[error("invalid CA certificate in {}", path.display())]
    BadCa {
        /// The CA file.
        path: PathBuf,
        /// Why rustls rejected it.
        #[source]
        source: rustls::Error,
    },
    /// The client-certificate verifier could not be built.
    #[error("cannot verify client certificates with CA {}", path.display())]
    Verifier {
        /// The CA file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// The certificate chain and key do not make a usable server identity.
    #[error("invalid certificate {} or key {}", cert.display(), key.display())]
    Identity {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why rustls rejected them.
        #[source]
        source: rustls::Error,
    },
}

/// Builds the acceptor for the TLS listener from its PEM files.
///
/// With `ca` set, client certificates signed by it are verified; they are
/// mandatory only with `require_client_cert`.
pub fn acceptor(cfg: &TlsListenerConfig) -> Result<TlsAcceptor, TlsError> {
    let cert_path = cfg.cert.as_deref().ok_or(TlsError::Missing("cert"))?;
    let key_path = cfg.key.as_deref().ok_or(TlsError::Missing("key"))?;
    let certs = read_certs(cert_path)?;
    let key = read_key(key_path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Identity {
            cert: cert_path.to_path_buf(),
            key: key_path.to_path_buf(),
            source,
        })?;
    let builder = match cfg.ca.as_deref() {
        None if cfg.require_client_cert => return Err(TlsError::Missing("ca")),
        None => builder.with_no_client_auth(),
        Some(ca_path) => {
            let mut roots = RootCertStore::empty();
            for ca in read_certs(ca_path)? {
                roots.add(ca).map_err(|source| TlsError::BadCa {
                    path: ca_path.to_path_buf(),
                    source,
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if cfg.require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier.build().map_err(|source| TlsError::Verifier {
                path: ca_path.to_path_buf(),
                source,
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|source| TlsError::Identity {
            cert: cert_path.to_path_buf(),
            key: key_path.to_path_buf(),
            source,
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn open(path: &Path) -> Result<BufReader<std::fs::File>, TlsError> {
    std::fs::File::open(path)
        .map(BufReader::new)
        .map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut open(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut open(path)?)
        .map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey(path.to_path_buf()))
}

/// The subject common name of the verified client certificate, if any.
///
/// rustls only exposes peer certificates that passed the verifier, so a
/// value here is authenticated.
pub fn peer_common_name(conn: &ServerConnection) -> Option<String> {
    conn.peer_certificates()?
        .first()
        .and_then(|c| common_name(c))
}

/// The first subject common name of a DER certificate.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// Certificates for tests: a CA, a server certificate for `localhost` and
/// `127.0.0.1`, and a client certificate, all generated with `rcgen`.
#[cfg(test)]
pub(crate) mod test_certs {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    use std::path::PathBuf;

    /// PEM material written to a temporary directory.
    pub(crate) struct TestPki {
        pub dir: tempfile::TempDir,
        pub ca: PathBuf,
        pub cert: PathBuf,
        pub key: PathBuf,
        pub ca_der: Vec<u8>,
        pub client_cert_der: Vec<u8>,
        pub client_key_der: Vec<u8>,
    }

    /// Generates a fresh PKI; the client certificate's CN is `client_cn`.
    pub(crate) fn generate(client_cn: &str) -> TestPki {
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Tern Test CA");
        let ca = ca_params.self_signed(&ca_key).expect("ca cert");

        let server_key = KeyPair::generate().expect("server key");
        let server_params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("server params");
        let server = server_params
            .signed_by(&server_key, &ca, &ca_key)
            .expect("server cert");

        let client_key = KeyPair::generate().expect("client key");
        let mut client_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        client_params
            .distinguished_name
            .push(DnType::CommonName, client_cn);
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client = client_params
            .signed_by(&client_key, &ca, &ca_key)
            .expect("client cert");

        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write pem");
            path
        };
        TestPki {
            ca: write("ca.pem", ca.pem()),
            cert: write("server.pem", server.pem()),
            key: write("server.key", server_key.serialize_pem()),
            ca_der: ca.der().to_vec(),
            client_cert_der: client.der().to_vec(),
            client_key_der: client_key.serialize_der(),
            dir,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pki: &test_certs::TestPki) -> TlsListenerConfig {
        TlsListenerConfig {
            enabled: true,
            cert: Some(pki.cert.clone()),
            key: Some(pki.key.clone()),
            ..TlsListenerConfig::default()
        }
    }

    #[test]
    fn builds_with_and_without_client_auth() {
        let pki = test_certs::generate("dev-1");
        let mut c = cfg(&pki);
        assert!(acceptor(&c).is_ok());
        c.ca = Some(pki.ca.clone());
        assert!(acceptor(&c).is_ok());
        c.require_client_cert = true;
        assert!(acceptor(&c).is_ok());
    }

    #[test]
    fn errors_name_the_file() {
        let pki = test_certs::generate("dev-1");
        let mut c = cfg(&pki);
        c.cert = Some(pki.dir.path().join("missing.pem"));
        let err = acceptor(&c).err().expect("missing file");
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let garbage = pki.dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not pem at all\n").expect("write");
        c.cert = Some(garbage.clone());
        let err = acceptor(&c).err().expect("no cert");
        assert!(matches!(err, TlsError::NoCertificate(_)), "{err}");
        assert!(err.to_string().contains("garbage.pem"), "{err}");

        c.cert = Some(pki.cert.clone());
        c.key = Some(pki.cert.clone());
        let err = acceptor(&c).err().expect("no key");
        assert!(matches!(err, TlsError::NoKey(_)), "{err}");

        let mut c = cfg(&pki);
        c.require_client_cert = true;
        assert!(matches!(acceptor(&c), Err(TlsError::Missing("ca"))));
    }

    #[test]
    fn extracts_common_name() {
        let pki = test_certs::generate("device-42");
        assert_eq!(
            common_name(&pki.client_cert_der).as_deref(),
            Some("device-42")
        );
        assert_eq!(common_name(&pki.ca_der).as_deref(), Some("Tern Test CA"));
        assert_eq!(common_name(b"garbage"), None);
    }
}
