//! Connecting to PostgreSQL, with TLS asked for in the URL the way libpq
//! users already write it: `sslmode` (`disable`, `prefer`, `require`,
//! `verify-ca`, `verify-full`), `sslrootcert` (the CA), `sslcert` and
//! `sslkey` (a client certificate). Every PostgreSQL connection coffer makes
//! (history store and export, cluster coordination, bulk jobs) goes
//! through [`connect`].
//!
//! Without `sslmode` the connection is plain, as before TLS was built in:
//! an unasked-for encryption would change the cost of every export row.
//! `require` without `sslrootcert` encrypts without checking the server
//! (libpq's meaning); with it, or with `verify-ca`, the certificate must
//! chain to that CA (the system's CAs when no file is named); `verify-full`
//! also checks that it names the host connected to.

use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use postgres::{Client, NoTls};
use postgres_openssl::MakeTlsConnector;
use thiserror::Error;

/// The URL's TLS parameters, and the URL without them for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTarget {
    /// What the driver is given: the URL with coffer's TLS keys removed
    /// and `sslmode` translated to one the driver knows.
    driver_url: String,
    mode: SslMode,
    root_cert: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

#[derive(Debug, Error)]
pub enum PgConnectError {
    #[error("PostgreSQL URL: {0}")]
    Url(String),
    #[error("PostgreSQL TLS: {setting} {path:?}: {source}")]
    TlsFile {
        setting: &'static str,
        path: String,
        source: openssl::error::ErrorStack,
    },
    #[error("PostgreSQL TLS: {0}")]
    Tls(#[from] openssl::error::ErrorStack),
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] postgres::Error),
}

/// Opens one connection to `url` (a `postgres://` URL or libpq's
/// `key=value` form; TLS parameters need the URL form).
pub fn connect(url: &str) -> Result<Client, PgConnectError> {
    let target = PgTarget::parse(url)?;
    let client = match target.connector()? {
        None => Client::connect(&target.driver_url, NoTls)?,
        Some(connector) => Client::connect(&target.driver_url, connector)?,
    };
    Ok(client)
}

const TLS_KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

impl PgTarget {
    pub fn parse(url: &str) -> Result<PgTarget, PgConnectError> {
        let mut target = PgTarget {
            driver_url: url.to_owned(),
            mode: SslMode::Disable,
            root_cert: None,
            cert: None,
            key: None,
        };
        let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
        let Some((base, query)) = url.split_once('?').filter(|_| is_url) else {
            return Ok(target);
        };
        let mut kept = Vec::new();
        let mut mode_given = false;
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !TLS_KEYS.contains(&key) {
                kept.push(pair);
                continue;
            }
            let value = percent_decode(value).ok_or_else(|| PgConnectError::Url(format!("{key}: bad %-escape")))?;
            match key {
                "sslmode" => {
                    mode_given = true;
                    target.mode = match value.as_str() {
                        "disable" => SslMode::Disable,
                        "prefer" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        other => {
                            return Err(PgConnectError::Url(format!(
                                "sslmode={other}: expected disable, prefer, require, verify-ca or verify-full"
                            )))
                        }
                    }
                }
                "sslrootcert" => target.root_cert = Some(value),
                "sslcert" => target.cert = Some(value),
                _ => target.key = Some(value),
            }
        }
        let files_given = target.root_cert.is_some() || target.cert.is_some() || target.key.is_some();
        if files_given && (!mode_given || target.mode == SslMode::Disable) {
            return Err(PgConnectError::Url(
                "sslrootcert, sslcert and sslkey need sslmode=require, verify-ca or verify-full".into(),
            ));
        }
        if target.cert.is_some() != target.key.is_some() {
            return Err(PgConnectError::Url("sslcert and sslkey go together".into()));
        }
        let driver_mode = match target.mode {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "require",
        };
        let driver_mode = format!("sslmode={driver_mode}");
        kept.push(&driver_mode);
        target.driver_url = format!("{base}?{}", kept.join("&"));
        Ok(target)
    }

    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// The TLS connector the mode needs; `None` for a plain connection.
    fn connector(&self) -> Result<Option<MakeTlsConnector>, PgConnectError> {
        if self.mode == SslMode::Disable {
            return Ok(None);
        }
        let mut builder = SslConnector::builder(SslMethod::tls_client())?;
        let verify_chain = match self.mode {
            SslMode::Prefer => false,
            SslMode::Require => self.root_cert.is_some(),
            _ => true,
        };
        if verify_chain {
            if let Some(path) = &self.root_cert {
                builder
                    .set_ca_file(path)
                    .map_err(|source| file_error("sslrootcert", path, source))?;
            }
        } else {
            builder.set_verify(SslVerifyMode::NONE);
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            builder
                .set_certificate_chain_file(cert)
                .map_err(|source| file_error("sslcert", cert, source))?;
            builder
                .set_private_key_file(key, SslFiletype::PEM)
                .map_err(|source| file_error("sslkey", key, source))?;
        }
        let mut connector = MakeTlsConnector::new(builder.build());
        let verify_hostname = self.mode == SslMode::VerifyFull;
        connector.set_callback(move |config, _host| {
            config.set_verify_hostname(verify_hostname);
            Ok(())
        });
        Ok(Some(connector))
    }
}

fn file_error(setting: &'static str, path: &str, source: openssl::error::ErrorStack) -> PgConnectError {
    PgConnectError::TlsFile {
        setting,
        path: path.to_owned(),
        source,
    }
}

/// `%XX` escapes, as URLs carry paths with spaces or `&`.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_without_tls_parameters_stays_plain() {
        let target = PgTarget::parse("postgres://u@h:5432/db?application_name=coffer").unwrap();
        assert_eq!(target.mode(), SslMode::Disable);
        assert_eq!(
            target.driver_url,
            "postgres://u@h:5432/db?application_name=coffer&sslmode=disable"
        );
        let plain = PgTarget::parse("host=h user=u").unwrap();
        assert_eq!(plain.driver_url, "host=h user=u");
    }

    #[test]
    fn libpq_parameters_are_taken_out_for_the_driver() {
        let target = PgTarget::parse(
            "postgresql://u@h/db?sslmode=verify-full&sslrootcert=%2Ftmp%2Fmy%20ca.pem&connect_timeout=5",
        )
        .unwrap();
        assert_eq!(target.mode(), SslMode::VerifyFull);
        assert_eq!(target.root_cert.as_deref(), Some("/tmp/my ca.pem"));
        assert_eq!(
            target.driver_url,
            "postgresql://u@h/db?connect_timeout=5&sslmode=require"
        );
    }

    #[test]
    fn inconsistent_tls_parameters_are_refused() {
        for url in [
            "postgres://h/db?sslmode=verify-everything",
            "postgres://h/db?sslrootcert=/ca.pem",
            "postgres://h/db?sslmode=disable&sslrootcert=/ca.pem",
            "postgres://h/db?sslmode=require&sslcert=/c.pem",
            "postgres://h/db?sslmode=require&sslrootcert=%zz",
        ] {
            assert!(matches!(PgTarget::parse(url), Err(PgConnectError::Url(_))), "{url}");
        }
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let target = PgTarget::parse("postgres://h/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem").unwrap();
        let error = target.connector().err().expect("no such file").to_string();
        assert!(error.contains("sslrootcert \"/nonexistent/ca.pem\""), "{error}");
    }
}
