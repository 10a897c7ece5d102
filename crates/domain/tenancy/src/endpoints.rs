//! Which LLM endpoints a tenant may send its model calls to. A tenant on `azure_openai`
//! has an endpoint of its own (`https://<resource>.openai.azure.com/...`), and one on
//! `openai_compatible` may run its own server, so a tenant admin can set a `base_url`.
//! The server then calls that URL with the tenant's key, so an unchecked URL would let
//! a tenant make the server call anything it can reach (SSRF): only origins on the
//! operator's allowlist are accepted, and the list is checked again on every call.

use trellis_kernel::{HttpUrl, InvalidValue};

/// The operator's allowlist of endpoint origins (`TRELLIS_LLM_ALLOWED_ENDPOINTS`):
/// `scheme://host[:port]`, where the host may start with `*.` to allow any subdomain
/// (not the bare domain). Empty, the default, means tenants cannot set an endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LlmEndpointPolicy {
    /// Origins as browsers serialise them (lower case, default port dropped); a
    /// wildcard keeps its `*.` in front of the host.
    origins: Vec<String>,
}

/// The label a wildcard stands in for while its origin is normalised.
const WILDCARD_LABEL: &str = "wildcard-label";

impl LlmEndpointPolicy {
    /// Reads a comma-separated list; blank entries are skipped.
    ///
    /// # Errors
    /// For an entry that is not an http(s) origin (a path, query or credentials
    /// included), or whose wildcard is not a whole leading label.
    pub fn parse_list(list: &str) -> Result<Self, InvalidValue> {
        let mut origins = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            origins.push(normalise(entry)?);
        }
        Ok(Self { origins })
    }

    /// Whether no endpoint at all is allowed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.origins.is_empty()
    }

    /// Whether `url` may be called: no credentials in it, and its origin is on the list.
    #[must_use]
    pub fn allows(&self, url: &HttpUrl) -> bool {
        let origin = url.origin();
        // A URL with `user:password@` does not start with its own origin; the server
        // never sends credentials it did not choose.
        if origin.is_empty() || !url.as_str().starts_with(&origin) {
            return false;
        }
        self.origins.iter().any(|allowed| matches(allowed, &origin))
    }
}

fn normalise(entry: &str) -> Result<String, InvalidValue> {
    let invalid = || {
        InvalidValue::new(
            "llm_allowed_endpoints",
            format!("`{entry}` is not an origin such as https://*.openai.azure.com"),
        )
    };
    let (scheme, rest) = entry.split_once("://").ok_or_else(invalid)?;
    let (wildcard, host) = match rest.strip_prefix("*.") {
        Some(host) => (true, host),
        None => (false, rest),
    };
    if host.contains('*') {
        return Err(invalid());
    }
    let probe = if wildcard {
        format!("{scheme}://{WILDCARD_LABEL}.{host}")
    } else {
        entry.to_owned()
    };
    let url = HttpUrl::parse(&probe).map_err(|_| invalid())?;
    let origin = url.origin();
    // Anything beyond the origin (a path other than `/`, a query, credentials) would
    // suggest a narrower rule than the origin check enforces.
    if url.as_str() != format!("{origin}/") {
        return Err(invalid());
    }
    Ok(if wildcard {
        origin.replacen(&format!("{WILDCARD_LABEL}."), "*.", 1)
    } else {
        origin
    })
}

fn matches(allowed: &str, origin: &str) -> bool {
    let Some((scheme, host)) = allowed.split_once("://*.") else {
        return allowed == origin;
    };
    let Some(rest) = origin
        .strip_prefix(scheme)
        .and_then(|r| r.strip_prefix("://"))
    else {
        return false;
    };
    // `rest` is `sub.domain[:port]`: the part before the allowed suffix must be whole
    // labels of a name, not part of a port or an IP address.
    rest.strip_suffix(host)
        .and_then(|prefix| prefix.strip_suffix('.'))
        .is_some_and(|sub| !sub.is_empty() && !sub.contains([':', '[', ']']))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn url(s: &str) -> HttpUrl {
        HttpUrl::parse(s).unwrap()
    }

    #[test]
    fn a_wildcard_allows_subdomains_but_not_the_domain_itself_nor_look_alikes() {
        let p = LlmEndpointPolicy::parse_list("https://*.openai.azure.com").unwrap();
        assert!(p.allows(&url(
            "https://acme.openai.azure.com/openai/deployments/gpt-4o"
        )));
        assert!(p.allows(&url("https://eu.acme.openai.azure.com/")));
        assert!(!p.allows(&url("https://openai.azure.com/")));
        assert!(!p.allows(&url("https://acme.openai.azure.com.evil.example/")));
        assert!(!p.allows(&url("https://evilopenai.azure.com/")));
        assert!(!p.allows(&url("http://acme.openai.azure.com/")));
        assert!(!p.allows(&url("https://acme.openai.azure.com:8443/")));
    }

    #[test]
    fn an_exact_origin_allows_any_path_on_it_and_only_its_port() {
        let p =
            LlmEndpointPolicy::parse_list(" http://127.0.0.1:8080 , https://llm.example.com:443")
                .unwrap();
        assert!(p.allows(&url("http://127.0.0.1:8080/v1")));
        assert!(!p.allows(&url("http://127.0.0.1:8081/v1")));
        assert!(!p.allows(&url("http://127.0.0.2:8080/v1")));
        // The default port is the same origin, written or not.
        assert!(p.allows(&url("https://LLM.example.com/v1")));
        assert!(!p.allows(&url("https://other.example.com/v1")));
    }

    #[test]
    fn a_url_with_credentials_is_never_allowed() {
        let p = LlmEndpointPolicy::parse_list("https://llm.example.com").unwrap();
        assert!(!p.allows(&url("https://user:secret@llm.example.com/v1")));
        assert!(!p.allows(&url("https://user@llm.example.com/v1")));
    }

    #[test]
    fn an_empty_list_allows_nothing() {
        let p = LlmEndpointPolicy::parse_list(" , ").unwrap();
        assert!(p.is_empty());
        assert!(!p.allows(&url("https://api.openai.com/v1")));
        assert!(LlmEndpointPolicy::default().is_empty());
    }

    #[test]
    fn entries_that_are_not_plain_origins_are_refused() {
        for bad in [
            "llm.example.com",
            "ftp://llm.example.com",
            "https://llm.example.com/v1",
            "https://llm.example.com?x=1",
            "https://user:pw@llm.example.com",
            "https://*",
            "https://a.*.example.com",
            "https://*example.com",
        ] {
            assert!(
                LlmEndpointPolicy::parse_list(bad).is_err(),
                "{bad} was accepted"
            );
        }
    }
}
