//! Value objects that validate on construction, so a domain type holding an `Email` or a
//! `Slug` never holds a malformed one. Serialised as their plain string.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A field value that failed validation; `field` names the input, `reason` says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidValue {
    pub field: &'static str,
    pub reason: String,
}

impl InvalidValue {
    #[must_use]
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

macro_rules! string_value {
    ($name:ident) => {
        impl $name {
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The text, without copying it.
            #[must_use]
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// An email address, trimmed and lower-cased so uniqueness is case-insensitive.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);
string_value!(Email);

impl Email {
    /// # Errors
    /// When the text is not a plausible `local@domain.tld` address of at most 254 bytes.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let s = s.trim();
        // Every email of every page of users read back comes through here, and
        // Unicode case mapping goes character by character; for ASCII text it is
        // exactly the byte-wise mapping.
        let s = if s.is_ascii() {
            s.to_ascii_lowercase()
        } else {
            s.to_lowercase()
        };
        Self::check(&s)?;
        Ok(Self(s))
    }

    /// [`Email::parse`] of text the caller owns, kept as it is when it is already in
    /// normal form (ASCII, lower case, no surrounding space), as stored emails are.
    ///
    /// # Errors
    /// As [`Email::parse`].
    pub fn parse_owned(s: String) -> Result<Self, InvalidValue> {
        let normal = s.is_ascii() && !s.bytes().any(|b| b.is_ascii_uppercase()) && s.trim() == s;
        if !normal {
            return Self::parse(&s);
        }
        Self::check(&s)?;
        Ok(Self(s))
    }

    /// Checks an email already trimmed and lower-cased.
    fn check(s: &str) -> Result<(), InvalidValue> {
        let bad = |why: &str| Err(InvalidValue::new("email", why));
        if s.is_empty() || s.len() > 254 {
            return bad("must be 1 to 254 characters");
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return bad("must contain @");
        };
        if local.is_empty() || local.len() > 64 || local.contains('@') {
            return bad("the part before @ is not valid");
        }
        // Checked as it is split: every email of every page of users read comes
        // through here, and collecting the labels first cost an allocation each.
        let bad_label = |l: &str| {
            l.is_empty()
                || l.len() > 63
                || l.starts_with('-')
                || l.ends_with('-')
                || !l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        };
        if !domain.contains('.') || domain.split('.').any(bad_label) {
            return bad("the domain is not valid");
        }
        // The domain's labels are letters, digits and hyphens by now.
        if local.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad("must not contain spaces");
        }
        Ok(())
    }
}

/// A URL-safe tenant identifier: 2–63 lower-case letters, digits and single hyphens,
/// so it can also serve as a DNS label (subdomain).
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Slug(String);
string_value!(Slug);

impl Slug {
    /// # Errors
    /// When the text is not a lower-case DNS label of 2 to 63 characters.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        Self::parse_field("slug", s)
    }

    /// Same rules, reporting `field` (e.g. `subdomain`) in the error.
    ///
    /// # Errors
    /// As [`Slug::parse`].
    pub fn parse_field(field: &'static str, s: &str) -> Result<Self, InvalidValue> {
        let ok_chars = s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !(2..=63).contains(&s.len())
            || !ok_chars
            || s.starts_with('-')
            || s.ends_with('-')
            || s.contains("--")
        {
            return Err(InvalidValue::new(
                field,
                "must be 2 to 63 lower-case letters, digits or single hyphens, not starting or ending with a hyphen",
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

/// A CSS hex colour, `#rgb` or `#rrggbb`, stored lower-case.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct HexColor(String);
string_value!(HexColor);

impl HexColor {
    /// # Errors
    /// When the text is not `#` followed by 3 or 6 hex digits.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let hex = s.strip_prefix('#').unwrap_or("");
        if !(hex.len() == 3 || hex.len() == 6) || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(InvalidValue::new("color", "must be #rgb or #rrggbb"));
        }
        Ok(Self(s.to_lowercase()))
    }
}

/// An absolute `http` or `https` URL of at most 2048 bytes.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct HttpUrl(String);
string_value!(HttpUrl);

impl HttpUrl {
    /// # Errors
    /// When the text is not an absolute http(s) URL with a host.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        if s.len() > 2048 {
            return Err(InvalidValue::new("url", "must be at most 2048 characters"));
        }
        let url = url::Url::parse(s).map_err(|e| InvalidValue::new("url", e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(InvalidValue::new(
                "url",
                "must be an absolute http or https URL",
            ));
        }
        Ok(Self(url.to_string()))
    }

    /// The origin (`scheme://host[:port]`), as browsers send it in `Origin`.
    #[must_use]
    pub fn origin(&self) -> String {
        url::Url::parse(&self.0)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_to_lower_case() {
        assert_eq!(
            Email::parse(" Ann@Example.COM ").unwrap().as_str(),
            "ann@example.com"
        );
        assert_eq!(
            Email::parse("ÅSA@Example.com").unwrap().as_str(),
            "åsa@example.com"
        );
    }

    #[test]
    fn owned_emails_parse_as_borrowed_ones_do() {
        for text in [
            "ann@example.com",
            " Ann@Example.COM ",
            "ÅSA@Example.com",
            "ann@example",
            "a b@example.com",
            "ann@-x.com",
            "",
        ] {
            assert_eq!(
                Email::parse_owned(text.to_owned()).map(|e| e.into_string()),
                Email::parse(text).map(|e| e.into_string()),
                "{text:?}"
            );
        }
    }

    #[test]
    fn malformed_emails_are_refused() {
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "a b@example.com",
            "ann@-x.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn slugs_must_be_dns_labels() {
        assert!(Slug::parse("acme-co").is_ok());
        for bad in ["A", "a", "acme_co", "-acme", "acme-", "ac--me", "Acme"] {
            assert!(Slug::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn colours_must_be_hex() {
        assert_eq!(HexColor::parse("#FFAA00").unwrap().as_str(), "#ffaa00");
        assert!(HexColor::parse("#abc").is_ok());
        for bad in ["ffaa00", "#ffaa0", "#gggggg", "red"] {
            assert!(HexColor::parse(bad).is_err());
        }
    }

    #[test]
    fn only_http_urls_are_accepted() {
        assert!(HttpUrl::parse("https://cdn.example.com/logo.png").is_ok());
        assert!(HttpUrl::parse("javascript:alert(1)").is_err());
        assert!(HttpUrl::parse("/relative").is_err());
        assert_eq!(
            HttpUrl::parse("https://a.example.com:8443/x")
                .unwrap()
                .origin(),
            "https://a.example.com:8443"
        );
    }

    #[test]
    fn value_objects_validate_when_deserialised() {
        assert!(serde_json::from_str::<Email>("\"nope\"").is_err());
    }
}
