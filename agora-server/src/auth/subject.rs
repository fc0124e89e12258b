//! Certificate subjects as RFC 4514 strings (`CN=billing,O=Acme`): the subject of a
//! client's TLS certificate, and the `certificate = "…"` a user is declared with, both
//! written the same way so that they compare as strings. The order is RFC 4514's (the
//! last RDN of the certificate first), as `openssl x509 -noout -subject -nameopt
//! RFC2253` prints it; attribute types are upper case, with no blanks around `,`, `+`
//! and `=`.

use x509_parser::prelude::{FromDer, X509Certificate};

/// The subject of a certificate (DER), normalised; `None` if it does not parse.
pub(crate) fn subject_of(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let registry = x509_parser::objects::oid_registry();
    let mut rdns = Vec::new();
    for rdn in cert.subject().iter().collect::<Vec<_>>().into_iter().rev() {
        let mut parts = Vec::new();
        for a in rdn.iter() {
            let oid = a.attr_type();
            let name = match x509_parser::objects::oid2sn(oid, registry) {
                Ok(sn) => short_name(sn).to_owned(),
                Err(_) => oid.to_id_string(),
            };
            let value = a.as_str().ok()?;
            parts.push(format!("{}={}", name.to_ascii_uppercase(), escape(value)));
        }
        rdns.push(parts.join("+"));
    }
    Some(rdns.join(","))
}

/// The names RFC 4514 gives the attribute types where the registry's differ.
fn short_name(sn: &str) -> &str {
    match sn {
        "commonName" => "CN",
        "countryName" => "C",
        "localityName" => "L",
        "stateOrProvinceName" => "ST",
        "organizationName" => "O",
        "organizationalUnitName" => "OU",
        "streetAddress" => "STREET",
        "domainComponent" => "DC",
        "userId" => "UID",
        other => other,
    }
}

/// RFC 4514's escapes for an attribute value.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A subject as written in the config file, in the form [`subject_of`] gives: blanks
/// around separators dropped, attribute types upper case. Escapes are kept as written.
pub(crate) fn normalise(text: &str) -> Result<String, String> {
    let mut rdns = Vec::new();
    for rdn in split_unescaped(text, ',') {
        let mut parts = Vec::new();
        for attr in split_unescaped(&rdn, '+') {
            let Some((t, v)) = attr.split_once('=') else {
                return Err(format!(
                    "'{text}' is not an RFC 4514 subject like CN=billing,O=Acme"
                ));
            };
            let (t, v) = (t.trim(), v.trim());
            if t.is_empty() || v.is_empty() {
                return Err(format!("'{text}': an attribute needs a type and a value"));
            }
            parts.push(format!("{}={v}", t.to_ascii_uppercase()));
        }
        rdns.push(parts.join("+"));
    }
    Ok(rdns.join(","))
}

/// `text` split at each `sep` not escaped by a backslash.
fn split_unescaped(text: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut escaped = false;
    for c in text.chars() {
        if c == sep && !escaped {
            out.push(String::new());
            continue;
        }
        escaped = c == '\\' && !escaped;
        out.last_mut().expect("never empty").push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_subjects_are_normalised() {
        assert_eq!(normalise("CN=billing").unwrap(), "CN=billing");
        assert_eq!(
            normalise(" cn = billing , o=Acme\\, Inc").unwrap(),
            "CN=billing,O=Acme\\, Inc"
        );
        assert!(normalise("billing").is_err());
        assert!(normalise("CN=").is_err());
    }

    #[test]
    fn a_certificates_subject_reads_last_rdn_first() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "Acme, Inc");
        dn.push(rcgen::DnType::CommonName, "billing");
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(subject_of(cert.der()).unwrap(), "CN=billing,O=Acme\\, Inc");
    }
}
