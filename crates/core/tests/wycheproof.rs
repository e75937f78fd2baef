//! Wycheproof secp256k1 vectors through anchormq's own key parsing and
//! signature policy (not k256 directly).
//!
//! ECDSA (P1363, r||s — our wire form): valid low-S signatures must verify;
//! every invalid one must be refused; *valid high-S* signatures must be refused
//! too, because anchormq accepts low-S only (no malleability).
//! ECDH: every public key goes through `NodePublicKey::from_sec1_bytes` before
//! use; invalid points must be refused there, and accepted keys must give
//! Wycheproof's shared secret through the ECDH code `ecies` uses.

use anchormq_core::{KeyError, NodePublicKey, NodeSecretKey};
use k256::pkcs8::ObjectIdentifier;
use k256::pkcs8::spki::SubjectPublicKeyInfoRef;
use wycheproof::TestResult;

fn is_high_s(sig: &[u8]) -> bool {
    k256::ecdsa::Signature::from_slice(sig).is_ok_and(|s| s.normalize_s().is_some())
}

#[test]
fn ecdsa_secp256k1_sha256_p1363_under_low_s_policy() {
    let set =
        wycheproof::ecdsa::TestSet::load(wycheproof::ecdsa::TestName::EcdsaSecp256k1Sha256P1363)
            .expect("test set");
    let (mut accepted, mut high_s_refused, mut invalid_refused) = (0, 0, 0);
    for group in set.test_groups {
        let key = NodePublicKey::from_sec1_bytes(&group.key.key)
            .expect("Wycheproof ECDSA keys are valid points");
        for t in group.tests {
            let got = key.verify_sha256(&t.msg, &t.sig);
            match t.result {
                TestResult::Valid if is_high_s(&t.sig) => {
                    assert_eq!(
                        got,
                        Err(KeyError::HighS),
                        "tc {} is valid but high-S: policy must refuse",
                        t.tc_id
                    );
                    high_s_refused += 1;
                }
                TestResult::Valid => {
                    assert_eq!(got, Ok(()), "tc {} ({}) must verify", t.tc_id, t.comment);
                    accepted += 1;
                }
                TestResult::Invalid => {
                    assert!(
                        got.is_err(),
                        "tc {} ({}) must be refused",
                        t.tc_id,
                        t.comment
                    );
                    invalid_refused += 1;
                }
                // no "acceptable" cases in this set at the time of writing; take either answer
                TestResult::Acceptable => {}
            }
        }
    }
    eprintln!(
        "ECDSA P1363: {accepted} valid low-S accepted, {high_s_refused} valid high-S refused, {invalid_refused} invalid refused"
    );
    // the set really exercises all three paths
    assert!(accepted > 50, "{accepted}");
    assert!(high_s_refused > 50, "{high_s_refused}");
    assert!(invalid_refused > 50, "{invalid_refused}");
}

const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256K1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.10");

/// The raw SEC1 point inside an SPKI, if it is an EC key on secp256k1.
fn spki_point(der: &[u8]) -> Option<Vec<u8>> {
    let spki = SubjectPublicKeyInfoRef::try_from(der).ok()?;
    if spki.algorithm.oid != EC_PUBLIC_KEY || spki.algorithm.parameters_oid().ok()? != SECP256K1 {
        return None;
    }
    spki.subject_public_key.as_bytes().map(<[u8]>::to_vec)
}

fn secret_32(raw: &[u8]) -> Option<[u8; 32]> {
    let trimmed: Vec<u8> = raw.iter().copied().skip_while(|&b| b == 0).collect();
    if trimmed.len() > 32 {
        return None;
    }
    let mut out = [0u8; 32];
    out[32 - trimmed.len()..].copy_from_slice(&trimmed);
    Some(out)
}

#[test]
fn ecdh_secp256k1_points_are_validated_before_use() {
    let set = wycheproof::ecdh::TestSet::load(wycheproof::ecdh::TestName::EcdhSecp256k1)
        .expect("test set");
    let (mut agreed, mut refused_by_our_parser, mut refused_earlier) = (0, 0, 0);
    for group in set.test_groups {
        for t in group.tests {
            let secret =
                NodeSecretKey::from_bytes(&secret_32(&t.private_key).expect("scalar fits"))
                    .expect("valid secret");
            let outcome = match spki_point(&t.public_key) {
                None => None,
                Some(point) => match NodePublicKey::from_sec1_bytes(&point) {
                    Err(_) => {
                        if t.result == TestResult::Invalid {
                            refused_by_our_parser += 1;
                        }
                        None
                    }
                    Ok(public) => Some(secret.ecdh_x(&public).expect("valid point multiplies")),
                },
            };
            match (t.result, outcome) {
                (TestResult::Valid, Some(x)) => {
                    assert_eq!(x.as_slice(), t.shared_secret.as_slice(), "tc {}", t.tc_id);
                    agreed += 1;
                }
                (TestResult::Valid, None) => {
                    panic!("tc {} ({}) is valid but was refused", t.tc_id, t.comment)
                }
                (TestResult::Invalid, Some(_)) => {
                    panic!("tc {} ({}) is invalid but was used", t.tc_id, t.comment)
                }
                (TestResult::Invalid, None) => refused_earlier += 1,
                (TestResult::Acceptable, Some(x)) => {
                    assert_eq!(x.as_slice(), t.shared_secret.as_slice(), "tc {}", t.tc_id)
                }
                (TestResult::Acceptable, None) => {}
            }
        }
    }
    eprintln!(
        "ECDH: {agreed} valid agreed, {refused_earlier} invalid refused ({refused_by_our_parser} by our point parser)"
    );
    assert!(agreed > 50, "{agreed}");
    assert!(
        refused_by_our_parser > 0,
        "no invalid point reached our parser"
    );
    assert!(refused_earlier >= refused_by_our_parser);
}
