//! Where and how to connect: `mqtt://host:port` or `mqtts://host:port`, credentials, TLS.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use rustls::{ClientConfig, RootCertStore};

/// Username and password for the broker. The password never appears in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Username.
    pub username: String,
    /// Password.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How to reach a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Use TLS (`mqtts://`).
    pub tls: bool,
    /// PEM file of the CA that signs the broker's certificate; the system roots when `None`.
    pub ca_file: Option<PathBuf>,
    /// Username and password, if the broker asks for them.
    pub credentials: Option<Credentials>,
    /// MQTT client identifier; must be unique per broker.
    pub client_id: String,
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// Start a new session on every connection (the link resends and resubscribes itself), or ask
    /// the broker to keep the session so it queues QoS 1 messages while this client is away.
    pub clean_session: bool,
    /// Largest packet sent, in bytes. Any packet the broker sends is accepted (up to MQTT's own
    /// limit): a retained message too large for us to read would otherwise drop the connection at
    /// every reconnect and lock the client out; the reader refuses such content instead.
    pub max_packet_size: usize,
    /// QoS 1 messages in flight at once.
    pub inflight: u16,
}

/// A broker URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid broker URL {url:?}: {reason}")]
pub struct BrokerUrlError {
    /// The URL, with any password removed.
    pub url: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl BrokerConfig {
    /// Parses `mqtt://[user[:password]@]host[:port]` (port 1883) or `mqtts://…` (port 8883).
    pub fn from_url(url: &str, client_id: impl Into<String>) -> Result<Self, BrokerUrlError> {
        let fail = |reason| BrokerUrlError {
            url: anchormq_core::redact_url(url),
            reason,
        };
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else {
            return Err(fail("expected mqtt:// or mqtts://"));
        };
        let rest = rest.trim_end_matches('/');
        let (credentials, host_port) = match rest.rsplit_once('@') {
            Some((userinfo, host_port)) => {
                let (username, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                if username.is_empty() {
                    return Err(fail("empty username before '@'"));
                }
                (
                    Some(Credentials {
                        username: username.to_owned(),
                        password: password.to_owned(),
                    }),
                    host_port,
                )
            }
            None => (None, rest),
        };
        if host_port.contains('/') {
            return Err(fail("a broker URL has no path"));
        }
        let (host, port) = match host_port.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => (
                host,
                port.parse::<u16>()
                    .map_err(|_| fail("port is not a number from 1 to 65535"))?,
            ),
            _ => (host_port, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(fail("missing host"));
        }
        if port == 0 {
            return Err(fail("port is not a number from 1 to 65535"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            tls,
            ca_file: None,
            credentials,
            client_id: client_id.into(),
            keep_alive: Duration::from_secs(30),
            clean_session: true,
            max_packet_size: 1024 * 1024,
            inflight: 100,
        })
    }

    /// The URL without credentials, for logs.
    pub fn display_url(&self) -> String {
        format!(
            "{}://{}:{}",
            if self.tls { "mqtts" } else { "mqtt" },
            self.host,
            self.port
        )
    }

    pub(crate) fn options(&self) -> Result<MqttOptions, std::io::Error> {
        let mut options = MqttOptions::new(self.client_id.clone(), self.host.clone(), self.port);
        options
            .set_keep_alive(self.keep_alive)
            .set_clean_session(self.clean_session)
            .set_max_packet_size(MQTT_MAX_PACKET, self.max_packet_size)
            .set_inflight(self.inflight.max(1));
        if let Some(credentials) = &self.credentials {
            options.set_credentials(credentials.username.clone(), credentials.password.clone());
        }
        if self.tls {
            let tls = self.tls_config()?;
            options.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(tls))));
        }
        Ok(options)
    }

    /// rustls with the ring provider named here rather than taken from the process: the build
    /// holds two providers, and rustls refuses to guess between them. Trusts the CA file, or the
    /// system's roots without one.
    fn tls_config(&self) -> Result<ClientConfig, std::io::Error> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let invalid =
            |message: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, message);
        let mut roots = RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| invalid(format!("cannot read CA file {}: {e}", path.display())))?;
                for cert in certs {
                    roots.add(cert).map_err(|e| {
                        invalid(format!(
                            "CA file {}: unusable certificate: {e}",
                            path.display()
                        ))
                    })?;
                }
                if roots.is_empty() {
                    return Err(invalid(format!(
                        "CA file {} holds no PEM certificate",
                        path.display()
                    )));
                }
            }
            None => {
                // Unreadable entries among the system's roots are skipped, as browsers do.
                let (added, _ignored) =
                    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                if added == 0 {
                    return Err(invalid(
                        "no CA certificates found on this system: give the broker's CA file".into(),
                    ));
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("TLS setup: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }
}

/// MQTT 3.1.1's largest packet: a 268,435,455-byte remaining length plus a 5-byte fixed header.
const MQTT_MAX_PACKET: usize = 268_435_455 + 5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_tls_urls_with_default_ports() {
        let plain = BrokerConfig::from_url("mqtt://127.0.0.1:1884", "c").unwrap();
        assert_eq!(
            (plain.host.as_str(), plain.port, plain.tls),
            ("127.0.0.1", 1884, false)
        );
        let tls = BrokerConfig::from_url("mqtts://broker.example", "c").unwrap();
        assert_eq!(
            (tls.host.as_str(), tls.port, tls.tls),
            ("broker.example", 8883, true)
        );
        let v6 = BrokerConfig::from_url("mqtt://[::1]:1999", "c").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 1999));
    }

    #[test]
    fn credentials_are_parsed_and_never_printed() {
        let config = BrokerConfig::from_url("mqtt://alice:s3cret@localhost:1883", "c").unwrap();
        let credentials = config.credentials.clone().unwrap();
        assert_eq!(
            (credentials.username.as_str(), credentials.password.as_str()),
            ("alice", "s3cret")
        );
        assert!(!format!("{config:?}").contains("s3cret"));
        assert_eq!(config.display_url(), "mqtt://localhost:1883");
    }

    #[test]
    fn an_unusable_ca_file_is_refused_before_connecting() {
        let mut config = BrokerConfig::from_url("mqtts://127.0.0.1:8883", "c").unwrap();
        config.ca_file = Some(PathBuf::from("/nonexistent/ca.pem"));
        let error = config.options().unwrap_err().to_string();
        assert!(
            error.starts_with("cannot read CA file /nonexistent/ca.pem: "),
            "{error}"
        );
        let not_pem = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        config.ca_file = Some(PathBuf::from(not_pem));
        let error = config.options().unwrap_err().to_string();
        assert_eq!(error, format!("CA file {not_pem} holds no PEM certificate"));
    }

    #[test]
    fn bad_urls_say_what_is_wrong_without_the_password() {
        let cases = [
            ("http://host:1883", "expected mqtt:// or mqtts://"),
            ("mqtt://host:99999", "port is not a number from 1 to 65535"),
            ("mqtt://host:0", "port is not a number from 1 to 65535"),
            ("mqtt://:1883", "missing host"),
            ("mqtt://host:1883/topic", "a broker URL has no path"),
            ("mqtt://:pw@host", "empty username before '@'"),
        ];
        for (url, reason) in cases {
            let error = BrokerConfig::from_url(url, "c").unwrap_err();
            assert_eq!(error.reason, reason, "{url}");
        }
        let error = BrokerConfig::from_url("mqtt://bob:hunter2@host:x", "c").unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }
}
