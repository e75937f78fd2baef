//! Certificates for a TLS broker, made at run time: a throwaway CA and a server certificate it
//! signs for 127.0.0.1 and localhost. Nothing is checked in, and the keys never leave the folder
//! the caller gives (a test's temp dir).

use std::path::{Path, PathBuf};

/// Making or writing the certificates failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsFilesError {
    /// rcgen could not make a key or a certificate.
    #[error("cannot make the test certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// PEM files for a TLS listener: the CA clients trust, and the server's certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificate (give it to clients, e.g. `--broker-ca`).
    pub ca: PathBuf,
    /// The server certificate, signed by the CA, for 127.0.0.1 and localhost.
    pub cert: PathBuf,
    /// The server's private key (mode 0600).
    pub key: PathBuf,
}

impl TlsFiles {
    /// Makes a new CA named `name` and a server certificate it signs, and writes them into `dir`
    /// as `<name>-ca.pem`, `<name>-server.pem` and `<name>-server.key`. Two calls with different
    /// names give two CAs that do not trust each other's servers.
    pub fn generate(dir: &Path, name: &str) -> Result<Self, TlsFilesError> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };

        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("anchormq test CA {name}"));
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate()?;
        let mut server_params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server_params.signed_by(&server_key, &issuer)?;

        let files = Self {
            ca: dir.join(format!("{name}-ca.pem")),
            cert: dir.join(format!("{name}-server.pem")),
            key: dir.join(format!("{name}-server.key")),
        };
        write(&files.ca, ca_cert.pem().as_bytes(), 0o644)?;
        write(&files.cert, server_cert.pem().as_bytes(), 0o644)?;
        write(&files.key, server_key.serialize_pem().as_bytes(), 0o600)?;
        Ok(files)
    }
}

fn write(path: &Path, content: &[u8], mode: u32) -> Result<(), TlsFilesError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let error = |source| TlsFilesError::Write {
        path: path.to_owned(),
        source,
    };
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(error)?
        .write_all(content)
        .map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_three_pem_files_with_a_private_key_only_the_owner_reads() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let files = TlsFiles::generate(dir.path(), "t").expect("generate");
        for path in [&files.ca, &files.cert] {
            let text = std::fs::read_to_string(path).expect("read");
            assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{text}");
        }
        let key = std::fs::metadata(&files.key).expect("key");
        assert_eq!(key.permissions().mode() & 0o777, 0o600);
        // Never overwrites: a second CA of the same name in the same folder is refused.
        assert!(matches!(
            TlsFiles::generate(dir.path(), "t"),
            Err(TlsFilesError::Write { .. })
        ));
    }
}
