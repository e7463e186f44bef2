//! CMS SignedData (RFC 5652), just enough to sign a configuration profile
//! with the server's TLS certificate: the content attached, SHA-256, signed
//! attributes (content type, message digest), the certificate chain, one
//! signer (ECDSA P-256 or RSA PKCS#1 v1.5). Apple devices show such a
//! profile as verified when the certificate chains to a trusted root.

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};

const OID_SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
const OID_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const OID_CONTENT_TYPE: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x03];
const OID_MESSAGE_DIGEST: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x04];
const OID_ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const OID_SHA256_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];

#[derive(Debug, thiserror::Error)]
pub enum CmsError {
    #[error("the certificate is not DER this signer can read")]
    Certificate,
    #[error("the private key is neither a PKCS#8 ECDSA P-256 nor an RSA key")]
    Key,
    #[error("signing failed")]
    Sign,
}

/// `content` wrapped in a CMS SignedData signed by `key` (PKCS#8, or PKCS#1
/// for RSA), whose certificate is `chain[0]`.
pub fn sign(content: &[u8], chain: &[Vec<u8>], key: &[u8]) -> Result<Vec<u8>, CmsError> {
    let cert = chain.first().ok_or(CmsError::Certificate)?;
    let (issuer, serial) = issuer_and_serial(cert).ok_or(CmsError::Certificate)?;
    let signer = Signer::from_key(key)?;
    let sha256 = seq(&[oid(OID_SHA256), vec![0x05, 0x00]]);
    let attributes = [
        seq(&[oid(OID_CONTENT_TYPE), set(&[oid(OID_DATA)])]),
        seq(&[
            oid(OID_MESSAGE_DIGEST),
            set(&[tlv(0x04, digest(&SHA256, content).as_ref())]),
        ]),
    ];
    // Signed as a SET; stored as [0] IMPLICIT.
    let signed = set(&attributes);
    let signature = signer.sign(&signed)?;
    let mut stored = signed.clone();
    stored[0] = 0xa0;
    let signer_info = seq(&[
        int(1),
        seq(&[issuer, serial]),
        sha256.clone(),
        stored,
        seq(&signer.algorithm()),
        tlv(0x04, &signature),
    ]);
    let certificates = tlv(0xa0, &chain.concat());
    let signed_data = seq(&[
        int(1),
        set(&[sha256]),
        seq(&[oid(OID_DATA), tlv(0xa0, &tlv(0x04, content))]),
        certificates,
        set(&[signer_info]),
    ]);
    Ok(seq(&[oid(OID_SIGNED_DATA), tlv(0xa0, &signed_data)]))
}

enum Signer {
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

impl Signer {
    fn from_key(key: &[u8]) -> Result<Self, CmsError> {
        if let Ok(k) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, key) {
            return Ok(Self::Ecdsa(k));
        }
        RsaKeyPair::from_pkcs8(key)
            .or_else(|_| RsaKeyPair::from_der(key))
            .map(Self::Rsa)
            .map_err(|_| CmsError::Key)
    }

    fn algorithm(&self) -> Vec<Vec<u8>> {
        match self {
            Self::Ecdsa(_) => vec![oid(OID_ECDSA_SHA256)],
            Self::Rsa(_) => vec![oid(OID_SHA256_RSA), vec![0x05, 0x00]],
        }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CmsError> {
        let rng = SystemRandom::new();
        match self {
            Self::Ecdsa(k) => k
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| CmsError::Sign),
            Self::Rsa(k) => {
                let mut out = vec![0; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, message, &mut out)
                    .map_err(|_| CmsError::Sign)?;
                Ok(out)
            }
        }
    }
}

/// The issuer Name and serialNumber of a certificate, as DER.
fn issuer_and_serial(cert: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (_, certificate, _) = read(cert)?;
    let (_, tbs, _) = read(certificate)?;
    let mut rest = tbs;
    let (tag, _, after) = read(rest)?;
    if tag == 0xa0 {
        rest = after; // [0] version
    }
    let serial_len = rest.len() - read(rest)?.2.len();
    let serial = rest[..serial_len].to_vec();
    rest = read(rest)?.2; // serial
    rest = read(rest)?.2; // signature algorithm
    let issuer_len = rest.len() - read(rest)?.2.len();
    Some((rest[..issuer_len].to_vec(), serial))
}

/// One DER element: (tag, contents, what follows).
fn read(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *der.first()?;
    let first = *der.get(1)?;
    let (len, start) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = der.get(2..2 + n)?;
        (
            bytes.iter().fold(0usize, |l, b| (l << 8) | *b as usize),
            2 + n,
        )
    };
    let end = start.checked_add(len)?;
    Some((tag, der.get(start..end)?, der.get(end..)?))
}

fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(contents);
    out
}

fn seq(items: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x30, &items.concat())
}

/// A DER SET OF: its elements sorted by their encoding.
fn set(items: &[Vec<u8>]) -> Vec<u8> {
    let mut sorted = items.to_vec();
    sorted.sort();
    tlv(0x31, &sorted.concat())
}

fn oid(der: &[u8]) -> Vec<u8> {
    tlv(0x06, der)
}

fn int(n: u8) -> Vec<u8> {
    tlv(0x02, &[n])
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};

    #[test]
    fn a_signature_over_the_signed_attributes_verifies() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["mail.example.com".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let content = b"<plist>profile</plist>";
        let der = sign(content, &[cert.der().to_vec()], &key.serialize_der()).unwrap();
        // ContentInfo → [0] → SignedData → signerInfos (the last SET).
        let (_, info, _) = read(&der).unwrap();
        let after_oid = read(info).unwrap().2;
        let explicit = read(after_oid).unwrap().1;
        let (_, signed_data, _) = read(explicit).unwrap();
        let mut fields = Vec::new();
        let mut rest = signed_data;
        while !rest.is_empty() {
            let (tag, body, after) = read(rest).unwrap();
            fields.push((tag, body, &rest[..rest.len() - after.len()]));
            rest = after;
        }
        let (_, signer_infos, _) = fields.last().unwrap();
        let (_, signer_info, _) = read(signer_infos).unwrap();
        let mut parts = Vec::new();
        let mut rest = signer_info;
        while !rest.is_empty() {
            let (tag, body, after) = read(rest).unwrap();
            parts.push((tag, body, rest[..rest.len() - after.len()].to_vec()));
            rest = after;
        }
        let mut attributes = parts[3].2.clone();
        assert_eq!(attributes[0], 0xa0);
        attributes[0] = 0x31;
        let signature = parts[5].1;
        let public = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, key.public_key_raw());
        public.verify(&attributes, signature).unwrap();
        // The content is attached, byte for byte.
        assert!(der.windows(content.len()).any(|w| w == content));
    }
}
