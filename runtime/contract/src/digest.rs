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
#[error("{text:?} is not a module digest: expected sha256:<64 hex digits>")]
pub struct MalformedDigest {
    /// The text given, cut to its first 100 characters.
    pub text: String,
}

impl ModuleDigest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        ModuleDigest(format!("{DIGEST_PREFIX}{}", hex::encode(Sha256::digest(bytes))).into())
    }

    /// Reads the text form `sha256:<64 hex digits>` (hex digits in either case; kept in
    /// lowercase). Anything else, bare hex included, is refused: this is how a digest is
    /// read from JSON or TOML ([`FromStr`], `Deserialize`), a pipeline spec's `module`
    /// included.
    pub fn parse(text: &str) -> Result<Self, MalformedDigest> {
        match text.strip_prefix(DIGEST_PREFIX) {
            Some(hex) if hex.len() == DIGEST_HEX_LEN && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Ok(ModuleDigest(format!("{DIGEST_PREFIX}{}", hex.to_ascii_lowercase()).into()))
            }
            _ => Err(MalformedDigest { text: text.chars().take(100).collect() }),
        }
    }

    /// Reads a digest as the admin API's paths and reload bodies name a stored module: the
    /// text form ([`ModuleDigest::parse`]) or its 64 hex digits alone.
    pub fn parse_allowing_bare_hex(text: &str) -> Result<Self, MalformedDigest> {
        if text.starts_with(DIGEST_PREFIX) {
            return ModuleDigest::parse(text);
        }
        ModuleDigest::parse(&format!("{DIGEST_PREFIX}{text}"))
            .map_err(|_| MalformedDigest { text: text.chars().take(100).collect() })
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
    type Err = MalformedDigest;

    /// The text form only ([`ModuleDigest::parse`]).
    fn from_str(text: &str) -> Result<Self, MalformedDigest> {
        ModuleDigest::parse(text)
    }
}

impl serde::Serialize for ModuleDigest {
    /// As its text form, `sha256:<hex>`.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ModuleDigest {
    /// From its text form only ([`ModuleDigest::parse`]).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = ModuleDigest;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a module digest, sha256:<64 hex digits>")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<ModuleDigest, E> {
                ModuleDigest::parse(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Text)
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
    fn a_digest_reads_only_from_its_text_form_in_either_case_and_shows_in_lowercase() {
        let hex = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
        let canonical = ModuleDigest::of(b"");
        assert_eq!(format!("sha256:{hex}").parse::<ModuleDigest>(), Ok(canonical.clone()));
        assert_eq!(ModuleDigest::parse(&format!("sha256:{hex}")), Ok(canonical.clone()));
        assert_eq!(ModuleDigest::parse(hex).unwrap_err().text, hex, "bare hex is not the text form");
        assert!(!ModuleDigest::is_canonical(hex));
        assert!(!ModuleDigest::is_canonical(&format!("sha256:{hex}")));
    }

    #[test]
    fn a_digest_in_a_path_may_also_be_the_bare_hex() {
        let hex = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
        let canonical = ModuleDigest::of(b"");
        assert_eq!(ModuleDigest::parse_allowing_bare_hex(hex), Ok(canonical.clone()));
        assert_eq!(ModuleDigest::parse_allowing_bare_hex(&format!("sha256:{hex}")), Ok(canonical));
        for text in ["", "sha256:", &format!("sha256:sha256:{hex}"), &hex[1..]] {
            let error = ModuleDigest::parse_allowing_bare_hex(text).unwrap_err();
            assert_eq!(error.text, text, "the error names the text given");
        }
    }

    #[test]
    fn texts_that_are_not_digests_are_refused_and_named() {
        let digest = ModuleDigest::of(b"module");
        let hex = digest.hex().to_owned();
        let long = "a".repeat(500);
        for text in [
            "",
            "sha256:",
            "sha256:abc",
            "f.wasm",
            &"g".repeat(64),
            &format!("sha256:{}", &hex[1..]),
            &format!("sha256:{hex}0"),
            &format!("sha256:{}g", &hex[1..]),
            &format!("SHA256:{hex}"),
            &format!("sha512:{hex}"),
            &long,
        ] {
            let error = ModuleDigest::parse(text).unwrap_err();
            assert!(error.text.chars().count() <= 100, "{text}");
            assert!(error.to_string().ends_with("is not a module digest: expected sha256:<64 hex digits>"), "{error}");
        }
        assert!(ModuleDigest::parse(&format!(" sha256:{hex}")).is_err(), "no trimming");
        assert_eq!(ModuleDigest::parse(&long).unwrap_err().text.len(), 100, "a long text is cut in the error");
    }

    #[test]
    fn a_digest_is_serialised_as_its_text_form_and_read_only_from_it() {
        use serde::de::IntoDeserializer as _;
        use serde::de::value::{Error, StrDeserializer};

        let digest = ModuleDigest::of(b"module");
        let read = |text: &str| {
            let deserializer: StrDeserializer<'_, Error> = text.into_deserializer();
            <ModuleDigest as serde::Deserialize>::deserialize(deserializer)
        };
        assert_eq!(read(digest.as_str()), Ok(digest.clone()));
        let error = read(digest.hex()).unwrap_err().to_string();
        assert!(error.ends_with("is not a module digest: expected sha256:<64 hex digits>"), "{error}");
    }
}
