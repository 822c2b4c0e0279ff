//! DKIM signing of our mails, by lettre.

use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
    DkimSigningKey,
};
use lettre::message::header::HeaderName;

use super::ComposeError;

/// The signing key and where its public half is published (`selector._domainkey.domain`).
#[derive(Clone)]
pub struct DkimKey {
    pub selector: String,
    /// The signing domain (`d=`); it should be the domain of `From` for DMARC to align.
    pub domain: String,
    pub algorithm: DkimAlgorithm,
    /// RSA: the private key as PKCS#1 PEM (`-----BEGIN RSA PRIVATE KEY-----`).
    /// Ed25519: the 32-byte private key (seed), base64.
    pub private_key: String,
}

impl std::fmt::Debug for DkimKey {
    // The private key stays out of logs and panic messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimKey")
            .field("selector", &self.selector)
            .field("domain", &self.domain)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// RSA-SHA256 is what every receiver checks; Ed25519-SHA256 (RFC 8463) is not yet checked
/// by all, so a domain using it should publish an RSA key beside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DkimAlgorithm {
    Rsa,
    Ed25519,
}

/// The headers the signature covers: every header we set but `Content-Type`. One that a mail
/// lacks (no `In-Reply-To` on the first of a thread) is signed as absent, so nobody can add
/// it later without breaking the signature.
///
/// Not `Content-Type`: lettre keeps a multipart body's `Content-Type` with the body, not
/// among the message's headers, so it would sign it as absent while every verifier finds it
/// and fails the signature. The body hash still covers every part and its boundaries.
const SIGNED_HEADERS: &[&str] = &[
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "In-Reply-To",
    "References",
    "MIME-Version",
];

/// A lettre signing configuration for `key`, with relaxed canonicalisation of headers and
/// body: relays that re-fold a header or change trailing whitespace do not break it.
pub(super) fn config(key: &DkimKey) -> Result<DkimConfig, ComposeError> {
    let algorithm = match key.algorithm {
        DkimAlgorithm::Rsa => DkimSigningAlgorithm::Rsa,
        DkimAlgorithm::Ed25519 => DkimSigningAlgorithm::Ed25519,
    };
    let private_key = DkimSigningKey::new(key.private_key.trim(), algorithm)
        .map_err(|error| ComposeError::DkimKey(error.to_string()))?;
    if !super::headers::is_domain(&key.domain) || !super::headers::is_domain(&key.selector) {
        return Err(ComposeError::DkimKey(
            "the selector and domain must be DNS names".to_owned(),
        ));
    }
    Ok(DkimConfig::new(
        key.selector.clone(),
        key.domain.clone(),
        private_key,
        SIGNED_HEADERS
            .iter()
            .map(|name| HeaderName::new_from_ascii_str(name))
            .collect(),
        DkimCanonicalization {
            header: DkimCanonicalizationType::Relaxed,
            body: DkimCanonicalizationType::Relaxed,
        },
    ))
}
