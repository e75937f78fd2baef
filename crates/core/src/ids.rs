//! Node and group identifiers: 32 bytes, written like Solidity's `bytes32("1111")`.
//!
//! A human label is its ASCII bytes left-aligned and zero padded. Display shows
//! the label when the bytes are printable ASCII followed only by zeros, and
//! `0x` + 64 hex digits otherwise; `FromStr` accepts both forms, so the two
//! round-trip. No label can be mistaken for hex: hex is 66 characters, a label
//! at most 32.

use std::fmt;
use std::str::FromStr;

use crate::error::IdError;

fn label_bytes(label: &str) -> Result<[u8; 32], IdError> {
    let bytes = label.as_bytes();
    if bytes.is_empty() {
        return Err(IdError::Empty);
    }
    if bytes.len() > 32 {
        return Err(IdError::TooLong { len: bytes.len() });
    }
    if !bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return Err(IdError::NotPrintable);
    }
    let mut out = [0u8; 32];
    out[..bytes.len()].copy_from_slice(bytes);
    Ok(out)
}

/// The printable label of `bytes`, if it has one.
fn label_of(bytes: &[u8; 32]) -> Option<&str> {
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(32);
    if len == 0 || bytes[len..].iter().any(|&b| b != 0) {
        return None;
    }
    let head = &bytes[..len];
    if !head.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return None;
    }
    std::str::from_utf8(head).ok()
}

fn parse_id(s: &str) -> Result<[u8; 32], IdError> {
    if s.len() == 66 && (s.starts_with("0x") || s.starts_with("0X")) {
        let mut out = [0u8; 32];
        hex::decode_to_slice(&s[2..], &mut out).map_err(|_| IdError::BadHex)?;
        return Ok(out);
    }
    label_bytes(s)
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 32]);

        impl $name {
            /// Wraps raw `bytes32` as found on chain.
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// `bytes32("<label>")`: ASCII left-aligned, zero padded. The label must
            /// be 1 to 32 bytes of printable ASCII.
            pub fn from_label(label: &str) -> Result<Self, IdError> {
                label_bytes(label).map(Self)
            }

            /// The raw 32 bytes.
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// The human label, when the bytes are printable ASCII then zeros.
            pub fn label(&self) -> Option<&str> {
                label_of(&self.0)
            }

            /// `0x` followed by 64 lowercase hex digits.
            pub fn to_hex(&self) -> String {
                format!("0x{}", hex::encode(self.0))
            }

            /// The form used inside MQTT topics: the label if it only has
            /// `[A-Za-z0-9_-]`, else the 0x-hex form.
            pub fn topic_segment(&self) -> String {
                match self.label() {
                    Some(l) if l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') => {
                        l.to_owned()
                    }
                    _ => self.to_hex(),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.label() {
                    Some(l) => f.write_str(l),
                    None => f.write_str(&self.to_hex()),
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($what, "({})"), self)
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            /// Accepts a label (`1111`) or `0x` + 64 hex digits.
            fn from_str(s: &str) -> Result<Self, IdError> {
                parse_id(s).map(Self)
            }
        }

        impl From<[u8; 32]> for $name {
            fn from(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }
        }
    };
}

id_type!(
    /// A node's identifier in the KeyRegistry (`bytes32`).
    NodeId,
    "NodeId"
);
id_type!(
    /// A group's identifier in the KeyRegistry (`bytes32`).
    GroupId,
    "GroupId"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_matches_solidity_bytes32() {
        let id = NodeId::from_label("1111").expect("valid label");
        let mut expected = [0u8; 32];
        expected[..4].copy_from_slice(b"1111");
        assert_eq!(id.as_bytes(), &expected);
        assert_eq!(id.to_string(), "1111");
        assert_eq!(format!("{id:?}"), "NodeId(1111)");
    }

    #[test]
    fn label_limits() {
        assert_eq!(NodeId::from_label(""), Err(IdError::Empty));
        assert_eq!(
            GroupId::from_label(&"a".repeat(33)),
            Err(IdError::TooLong { len: 33 })
        );
        assert!(GroupId::from_label(&"a".repeat(32)).is_ok());
        assert_eq!(NodeId::from_label("a\nb"), Err(IdError::NotPrintable));
    }

    #[test]
    fn non_printable_displays_as_hex_and_round_trips() {
        let mut raw = [0u8; 32];
        raw[0] = 0xff;
        raw[31] = 1;
        let id = GroupId::from_bytes(raw);
        let shown = id.to_string();
        assert_eq!(shown.len(), 66);
        assert_eq!(shown.parse::<GroupId>(), Ok(id));
        // interior zero then non-zero: not a label
        let mut gap = [0u8; 32];
        gap[0] = b'a';
        gap[2] = b'b';
        assert_eq!(NodeId::from_bytes(gap).label(), None);
        assert_eq!(NodeId::from_bytes([0; 32]).label(), None);
    }

    #[test]
    fn from_str_accepts_both_forms() {
        let a: NodeId = "hsu0001".parse().expect("label");
        let b: NodeId = a.to_hex().parse().expect("hex");
        assert_eq!(a, b);
        assert_eq!(
            "0xzz".parse::<NodeId>().map(|n| n.to_string()),
            Ok("0xzz".to_owned())
        );
        let bad = format!("0x{}", "g".repeat(64));
        assert_eq!(bad.parse::<NodeId>(), Err(IdError::BadHex));
    }

    #[test]
    fn topic_segment_is_safe() {
        assert_eq!(
            GroupId::from_label("hsu0001").expect("ok").topic_segment(),
            "hsu0001"
        );
        let spaced = GroupId::from_label("a b").expect("ok");
        assert_eq!(spaced.topic_segment(), spaced.to_hex());
        let slash = GroupId::from_label("a/b").expect("ok");
        assert!(slash.topic_segment().starts_with("0x"));
    }
}
