//! Where and how each connection dials: the URL (a [`Template`]: `{n}`, the
//! connection's number, and the data file's columns), request headers (`-H`, `Cookie`,
//! `Origin`, also templates), subprotocols, compression, local source addresses, and TLS
//! for `wss://`: extra trusted certificates (`--ca`), or none checked (`--insecure`).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use ringcast::server::DialRequest;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::data::DataTable;
use crate::template::{Fill, Names, Template};

/// How every connection of a run dials.
#[derive(Debug, Clone)]
pub struct Target {
    url: String,
    url_template: Template,
    headers: Vec<(String, Template)>,
    /// Subprotocols to offer, in order of preference.
    pub subprotocols: Vec<String>,
    /// Offer permessage-deflate.
    pub compress: bool,
    /// Local addresses to connect from, in turn (empty: the kernel's choice).
    pub sources: Vec<IpAddr>,
    data: Option<Arc<DataTable>>,
    tls: Option<Arc<ClientConfig>>,
}

/// A target's settings as the command line or a scenario file gives them.
#[derive(Debug, Clone, Default)]
pub struct TargetSpec {
    /// The URL template.
    pub url: String,
    /// `Name: value` header lines (values are templates).
    pub headers: Vec<String>,
    /// A `Cookie` header value.
    pub cookie: Option<String>,
    /// An `Origin` header value.
    pub origin: Option<String>,
    /// Subprotocols to offer.
    pub subprotocols: Vec<String>,
    /// Offer permessage-deflate.
    pub compress: bool,
    /// Local source addresses.
    pub sources: Vec<IpAddr>,
    /// The data file's rows.
    pub data: Option<Arc<DataTable>>,
    /// A PEM file of certificates to trust besides webpki's roots.
    pub ca: Option<std::path::PathBuf>,
    /// Check no certificate.
    pub insecure: bool,
}

impl Target {
    /// Checks the settings and builds the target.
    pub fn new(spec: TargetSpec) -> Result<Target, String> {
        let columns: &[String] = spec.data.as_deref().map_or(&[], |d| d.columns());
        let names = Names {
            columns,
            ..Names::default()
        };
        let url_template =
            Template::parse(&spec.url, &names).map_err(|e| format!("url template {e}"))?;
        let scheme = spec.url.split(':').next().unwrap_or_default();
        let secure = match scheme {
            "ws" => false,
            "wss" => true,
            other => {
                return Err(format!(
                    "url {:?}: scheme {other:?}, expected ws:// or wss://",
                    spec.url
                ))
            }
        };
        let mut lines = spec.headers.clone();
        lines.extend(spec.cookie.iter().map(|c| format!("Cookie: {c}")));
        lines.extend(spec.origin.iter().map(|o| format!("Origin: {o}")));
        let mut headers = Vec::new();
        for line in &lines {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("header {line:?}: expected 'Name: value'"))?;
            let name = name.trim();
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                return Err(format!("header {line:?}: {name:?} is not a header name"));
            }
            let value =
                Template::parse(value.trim(), &names).map_err(|e| format!("header {name}: {e}"))?;
            headers.push((name.to_owned(), value));
        }
        let tls = if secure {
            tls_config(spec.ca.as_deref(), spec.insecure)?
        } else if spec.ca.is_some() || spec.insecure {
            return Err("--ca and --insecure are for wss:// URLs".into());
        } else {
            None
        };
        Ok(Target {
            url: spec.url,
            url_template,
            headers,
            subprotocols: spec.subprotocols,
            compress: spec.compress,
            sources: spec.sources,
            data: spec.data,
            tls,
        })
    }

    /// The URL as given (a template).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The dial of connection number `n`, with `tag`, on `worker`.
    pub fn request(&self, n: u64, tag: u64, worker: usize) -> DialRequest {
        self.request_to(n, tag, worker, None)
    }

    /// [`request`](Self::request) to `url` instead of the target's (a scenario's
    /// `connect` step), with the same headers and settings.
    pub fn request_to(&self, n: u64, tag: u64, worker: usize, url: Option<&str>) -> DialRequest {
        let mut rng = fastrand::Rng::with_seed(n);
        let mut fill = Fill {
            n,
            seq: 0,
            data: self.data.as_deref(),
            samples: None,
            rng: &mut rng,
        };
        let url = match url {
            Some(url) => url.to_owned(),
            None => self.url_template.fill_string(&mut fill),
        };
        let headers = self
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), value.fill_string(&mut fill)))
            .collect();
        let source = (!self.sources.is_empty())
            .then(|| self.sources[(n % self.sources.len() as u64) as usize]);
        DialRequest {
            url,
            tag,
            subprotocols: self.subprotocols.clone(),
            enable_compression: self.compress,
            headers,
            source,
            worker: Some(worker),
            tls: self.tls.clone(),
        }
    }
}

/// RFC 9110 section 5.6.2: the characters of a token (a header name).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The TLS settings of `wss://` dials: `None` (the engine's default, webpki's roots)
/// unless `ca` adds certificates to trust or `insecure` checks none.
pub fn tls_config(ca: Option<&Path>, insecure: bool) -> Result<Option<Arc<ClientConfig>>, String> {
    if ca.is_none() && !insecure {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
    let mut config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = ca {
            let bad = |e: &dyn std::fmt::Display| format!("--ca {}: {e}", path.display());
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(&e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(&e))?;
            if certs.is_empty() {
                return Err(bad(&"no certificate in it"));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| bad(&e))?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// `--insecure`: any certificate is taken, for any name (a self-signed test server).
/// The handshake's signatures are still checked, so the peer holds the certificate's key:
/// the connection is encrypted, but to a server nobody vouched for.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str) -> TargetSpec {
        TargetSpec {
            url: url.into(),
            ..TargetSpec::default()
        }
    }

    #[test]
    fn each_connection_gets_its_url_and_headers() {
        let data = Arc::new(DataTable::parse("token\nabc\ndef\n").unwrap());
        let target = Target::new(TargetSpec {
            headers: vec!["Authorization: Bearer {token}".into()],
            cookie: Some("sid={n}".into()),
            origin: Some("https://example.test".into()),
            data: Some(data),
            ..spec("ws://127.0.0.1:9/ws?user={n}")
        })
        .unwrap();
        let request = target.request(1, 77, 0);
        assert_eq!(request.url, "ws://127.0.0.1:9/ws?user=1");
        assert_eq!(request.tag, 77);
        assert_eq!(
            request.headers,
            [
                ("Authorization".to_owned(), "Bearer def".to_owned()),
                ("Cookie".to_owned(), "sid=1".to_owned()),
                ("Origin".to_owned(), "https://example.test".to_owned()),
            ]
        );
        assert!(request.tls.is_none());
    }

    #[test]
    fn wss_takes_tls_settings_and_ws_refuses_them() {
        let insecure = Target::new(TargetSpec {
            insecure: true,
            ..spec("wss://localhost:9/")
        })
        .unwrap();
        assert!(insecure.request(0, 0, 0).tls.is_some());
        // Without --ca or --insecure: the engine's default roots.
        assert!(Target::new(spec("wss://localhost:9/"))
            .unwrap()
            .request(0, 0, 0)
            .tls
            .is_none());
        let err = Target::new(TargetSpec {
            insecure: true,
            ..spec("ws://localhost:9/")
        })
        .unwrap_err();
        assert!(err.contains("wss"), "{err}");
    }

    #[test]
    fn bad_schemes_headers_and_ca_files_are_refused() {
        assert!(Target::new(spec("http://x/"))
            .unwrap_err()
            .contains("scheme"));
        let err = Target::new(TargetSpec {
            headers: vec!["no colon".into()],
            ..spec("ws://x/")
        })
        .unwrap_err();
        assert!(err.contains("Name: value"), "{err}");
        let err = Target::new(TargetSpec {
            ca: Some("/nonexistent/ca.pem".into()),
            ..spec("wss://x/")
        })
        .unwrap_err();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
