//! The content digest that names a module: `sha256:<64 lowercase hex digits>`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// What a digest's text starts with.
pub const DIGEST_PREFIX: &str = "sha256:";
/// How many hex digits follow the prefix.
pub const DIGEST_HEX_LEN: usize = 64;

/// The content digest that names a module: `sha256:<hex>`, always in that canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleDigest(Arc<str>);

/// A text that is not a module digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed module digest {text:?}: expected sha256:<64 hex digits> or <64 hex digits>")]
pub struct DigestError {
    /// The text, cut to 100 characters.
    pub text: String,
}

impl ModuleDigest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        ModuleDigest(format!("{DIGEST_PREFIX}{}", hex::encode(Sha256::digest(bytes))).into())
    }

    /// A digest given as `sha256:<hex>` or `<hex>` (64 hex digits, either case), in its
    /// canonical form.
    pub fn parse(text: &str) -> Result<Self, DigestError> {
        let hex = text.strip_prefix(DIGEST_PREFIX).unwrap_or(text);
        if hex.len() == DIGEST_HEX_LEN && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(ModuleDigest(format!("{DIGEST_PREFIX}{}", hex.to_ascii_lowercase()).into()))
        } else {
            Err(DigestError { text: text.chars().take(100).collect() })
        }
    }

    /// `true` when `text` is a digest in its canonical form: `sha256:` and 64 lowercase hex
    /// digits, exactly what [`ModuleDigest`]'s `Display` writes.
    pub fn is_canonical(text: &str) -> bool {
        text.strip_prefix(DIGEST_PREFIX).is_some_and(|hex| {
            hex.len() == DIGEST_HEX_LEN && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
    }

    /// The hexadecimal part.
    pub fn hex(&self) -> &str {
        &self.0[DIGEST_PREFIX.len()..]
    }

    /// The first 12 hex digits, for logs.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }

    /// The canonical text, `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ModuleDigest {
    type Err = DigestError;

    fn from_str(text: &str) -> Result<Self, DigestError> {
        ModuleDigest::parse(text)
    }
}

impl fmt::Display for ModuleDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_of_bytes_is_their_sha256_in_canonical_text() {
        let digest = ModuleDigest::of(b"");
        assert_eq!(digest.to_string(), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(digest.short(), "e3b0c44298fc");
        assert!(ModuleDigest::is_canonical(digest.as_str()));
        assert_eq!(ModuleDigest::parse(digest.as_str()), Ok(digest.clone()));
    }

    #[test]
    fn parsing_accepts_the_bare_hex_and_either_case_and_gives_the_canonical_form() {
        let hex = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
        let canonical = ModuleDigest::of(b"");
        assert_eq!(ModuleDigest::parse(hex), Ok(canonical.clone()));
        assert_eq!(format!("sha256:{hex}").parse::<ModuleDigest>(), Ok(canonical));
        assert!(!ModuleDigest::is_canonical(hex));
        assert!(!ModuleDigest::is_canonical(&format!("sha256:{hex}")));
    }

    #[test]
    fn texts_that_are_not_digests_are_refused_and_named() {
        let long = "a".repeat(500);
        for text in ["", "sha256:", "sha256:abc", &"g".repeat(64), &format!("sha512:{}", "a".repeat(64)), &long] {
            let error = ModuleDigest::parse(text).unwrap_err();
            assert!(error.text.chars().count() <= 100, "{text}");
            assert!(error.to_string().contains("malformed module digest"), "{error}");
        }
        assert!(ModuleDigest::parse(&format!(" {}", "a".repeat(64))).is_err(), "no trimming");
    }
}
