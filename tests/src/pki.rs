//! Certificates for the TLS tests, generated with rcgen: a CA and leaves it signs.

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, SanType};

/// A distinguished name of just a common name.
fn named(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// A certificate authority.
pub struct Pki {
    /// The CA certificate (PEM).
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    /// A new CA.
    #[allow(clippy::new_without_default, reason = "each CA has a new key: not a default value")]
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Its own name: a leaf with the same subject as its issuer looks self-signed to OpenSSL
        // and BoringSSL (grpcio refuses it), whatever the signature says.
        params.distinguished_name = named("xds-tests CA");
        let key = KeyPair::generate().expect("key");
        let ca = params.self_signed(&key).expect("ca");
        Self { ca_pem: ca.pem(), issuer: Issuer::new(params, key) }
    }

    /// (cert PEM, key PEM) for the given SANs.
    pub fn leaf(&self, sans: Vec<SanType>) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = sans;
        params.distinguished_name = named("xds-tests leaf");
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }
}

/// The names a server certificate for loopback carries: `localhost` and 127.0.0.1.
pub fn server_sans() -> Vec<SanType> {
    vec![SanType::DnsName("localhost".try_into().expect("dns")), SanType::IpAddress([127, 0, 0, 1].into())]
}
