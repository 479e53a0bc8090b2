//! HTTPS for the built-in HTTP server (feature `tls`, on by default): TLS 1.2 and 1.3 by
//! rustls (with the `ring` provider), HTTP/2 or HTTP/1.1 chosen by ALPN. With
//! [`Config::tls`](crate::runtime::Config::tls) every HTTP socket of the server speaks TLS; the
//! environ then has `HTTPS=on` and `wsgi.url_scheme` `https`.
//!
//! Most deployments end TLS at the front end (nginx, a load balancer) and speak plain HTTP,
//! FastCGI or uwsgi behind it; this is for an app served straight to its clients.
//!
//! With client certificates ([`TlsConfig::from_pem_files_with_client_ca`], or a rustls
//! configuration that asks for them), each environ also has the variables Apache's mod_ssl
//! gives: `SSL_CLIENT_VERIFY`, `SUCCESS` for a client that showed a certificate (the
//! handshake refuses one that does not verify) and `NONE` for one that showed none, and
//! `SSL_CLIENT_CERT`, the client's certificate in PEM, for the app to read what it needs.
//!
//! ```no_run
//! use gateway_servers::runtime::Config;
//! use gateway_servers::tls::TlsConfig;
//!
//! let mut config = Config::default();
//! config.tls = Some(TlsConfig::from_pem_files("cert.pem".as_ref(), "key.pem".as_ref())?);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fmt;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::runtime::Stream;

/// The TLS side of an HTTPS server: its certificate chain, its key, the protocols it
/// offers, and whether it asks clients for certificates.
#[derive(Clone)]
pub struct TlsConfig {
    acceptor: tokio_rustls::TlsAcceptor,
    /// Whether clients are asked for a certificate: the environs of one that shows none then
    /// say `SSL_CLIENT_VERIFY=NONE`.
    client_auth: bool,
}

impl TlsConfig {
    /// The certificate chain in `cert` (PEM, the server's certificate first, then the
    /// intermediates) and its private key in `key` (PEM: PKCS#8, PKCS#1 or SEC1), offering
    /// HTTP/2 and HTTP/1.1 by ALPN. Fails, saying which file and why, when a file cannot be
    /// read, holds no certificate or key, or the key does not fit the certificate.
    pub fn from_pem_files(cert: &Path, key: &Path) -> io::Result<TlsConfig> {
        build(cert, key, None)
    }

    /// As [`from_pem_files`](Self::from_pem_files), and asks each client for a certificate
    /// signed by one of the authorities in `client_ca` (PEM, one certificate or more). With
    /// `required`, a client that shows none is refused in the handshake; without, it is served
    /// (`SSL_CLIENT_VERIFY=NONE`). A certificate that does not verify is refused either way.
    /// Fails, saying which file and why, as `from_pem_files` does, and when `client_ca` holds
    /// no certificate that can be an authority.
    pub fn from_pem_files_with_client_ca(
        cert: &Path,
        key: &Path,
        client_ca: &Path,
        required: bool,
    ) -> io::Result<TlsConfig> {
        build(cert, key, Some((client_ca, required)))
    }

    /// A rustls configuration of your own (other protocols, a resolver of certificates by
    /// name, client certificates verified your way). Offer `h2` by ALPN for HTTP/2 clients
    /// that need it. When it asks clients for certificates, the environs of a client that
    /// showed one have `SSL_CLIENT_VERIFY=SUCCESS` and `SSL_CLIENT_CERT`; those of a client
    /// that showed none have neither (rustls does not tell whether the configuration asked).
    pub fn new(config: Arc<rustls::ServerConfig>) -> TlsConfig {
        TlsConfig {
            acceptor: tokio_rustls::TlsAcceptor::from(config),
            client_auth: false,
        }
    }

    /// The TLS handshake on `stream`, whose first bytes `read` were read from it already:
    /// the decrypted stream once it is done, and the variables it gives the connection's
    /// environs (none unless clients are asked for certificates).
    pub(crate) async fn accept(
        &self,
        stream: Box<dyn Stream>,
        read: Bytes,
    ) -> io::Result<(Box<dyn Stream>, Vec<(Bytes, Bytes)>)> {
        let stream = self.acceptor.accept(Prefixed { read, stream }).await?;
        let verify = Bytes::from_static(b"SSL_CLIENT_VERIFY");
        let variables = match stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(<[_]>::first)
        {
            // rustls verified it, or the handshake would have failed.
            Some(certificate) => vec![
                (verify, Bytes::from_static(b"SUCCESS")),
                (
                    Bytes::from_static(b"SSL_CLIENT_CERT"),
                    Bytes::from(certificate_pem(certificate)),
                ),
            ],
            None if self.client_auth => vec![(verify, Bytes::from_static(b"NONE"))],
            None => Vec::new(),
        };
        Ok((Box::new(stream), variables))
    }
}

/// The configuration of [`TlsConfig::from_pem_files`], with client certificates from the
/// authorities in a file (and whether one is required) if given.
fn build(cert: &Path, key: &Path, clients: Option<(&Path, bool)>) -> io::Result<TlsConfig> {
    let invalid = |file: &Path, what: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {what}", file.display()),
        )
    };
    let certificates = |file: &Path| {
        let found = CertificateDer::pem_file_iter(file)
            .map_err(|e| invalid(file, e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(file, e.to_string()))?;
        match found.is_empty() {
            true => Err(invalid(file, "no certificate in it".to_owned())),
            false => Ok(found),
        }
    };
    let chain = certificates(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| invalid(key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(cert, e.to_string()))?;
    let builder = match clients {
        None => builder.with_no_client_auth(),
        Some((client_ca, required)) => {
            let mut roots = rustls::RootCertStore::empty();
            for authority in certificates(client_ca)? {
                roots
                    .add(authority)
                    .map_err(|e| invalid(client_ca, e.to_string()))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider);
            let verifier = match required {
                true => verifier,
                false => verifier.allow_unauthenticated(),
            };
            let verifier = verifier
                .build()
                .map_err(|e| invalid(client_ca, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key_der)
        .map_err(|e| invalid(key, format!("does not fit {}: {e}", cert.display())))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsConfig {
        client_auth: clients.is_some(),
        ..TlsConfig::new(Arc::new(config))
    })
}

/// A certificate in PEM, as `SSL_CLIENT_CERT` has it: base64 in lines of 64 characters
/// between the `CERTIFICATE` lines.
fn certificate_pem(certificate: &CertificateDer<'_>) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(certificate.as_ref());
    let mut pem = String::with_capacity(text.len() + text.len() / 64 + 64);
    pem.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in text.as_bytes().chunks(64) {
        // Base64 is ASCII: every chunk is text.
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// Two are equal when they share one rustls configuration (clones of one another).
impl PartialEq for TlsConfig {
    fn eq(&self, other: &TlsConfig) -> bool {
        Arc::ptr_eq(self.acceptor.config(), other.acceptor.config())
    }
}

impl Eq for TlsConfig {}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = self.acceptor.config();
        let alpn: Vec<String> = config
            .alpn_protocols
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        f.debug_struct("TlsConfig")
            .field("alpn", &alpn)
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
}

/// A stream that gives bytes read from it earlier before its own.
struct Prefixed {
    read: Bytes,
    stream: Box<dyn Stream>,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.read.is_empty() {
            return Pin::new(&mut self.stream).poll_read(cx, buf);
        }
        let n = self.read.len().min(buf.remaining());
        buf.put_slice(&self.read[..n]);
        self.read.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, data)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_prefixed_stream_gives_its_bytes_first_then_the_stream_s() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut stream = Prefixed {
            read: Bytes::from_static(b"hello "),
            stream: Box::new(near),
        };
        far.write_all(b"world").await.unwrap();
        drop(far);
        let mut all = String::new();
        stream.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }

    #[test]
    fn bad_files_are_errors_that_name_the_file() {
        let dir = std::env::temp_dir().join(format!("gateway-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let missing = dir.join("missing.pem");
        for (cert, key) in [(&missing, &empty), (&empty, &empty)] {
            let error = TlsConfig::from_pem_files(cert, key).unwrap_err();
            assert!(error.to_string().contains(".pem: "), "{error}");
        }
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = dir.join("cert.pem");
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        let key = dir.join("key.pem");
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["other".to_owned()]).unwrap();
        let other_key = dir.join("other-key.pem");
        std::fs::write(&other_key, other.signing_key.serialize_pem()).unwrap();
        assert!(TlsConfig::from_pem_files(&cert, &key).is_ok());
        assert!(TlsConfig::from_pem_files(&cert, &empty).is_err());
        let error = TlsConfig::from_pem_files(&cert, &other_key).unwrap_err();
        assert!(error.to_string().contains("does not fit"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
