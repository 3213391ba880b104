//! The bench's token, its keys and config, and the daemon processes it runs.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hyper::Method;
use hyper::body::Bytes;
use signetd::Algorithm;
use signetd::client::{Connection, Endpoint};
use tempfile::TempDir;

use crate::common::{ServedDaemon, TestToken, my_uid};
use crate::floor;
use crate::load::Target;
use crate::pki::{Leaf, Pki};

/// The identity the load generator's TLS certificate names.
const TLS_CLIENT: &str = "spiffe://bench.example/loadgen";

/// A throwaway token with a CA and one JWT and one raw-signing key per algorithm.
pub struct Bench {
    token: &'static TestToken,
    /// Where the disk-backed audit logs go; the disk row measures this filesystem.
    pub audit_parent: PathBuf,
    pub sessions: usize,
    work: TempDir,
    pki: Pki,
    client: Leaf,
    issuers: String,
    kids: Vec<(Algorithm, String)>,
}

fn issuer_name(algorithm: Algorithm, raw: bool) -> String {
    let alg = algorithm.to_string().to_lowercase();
    match raw {
        true => format!("bench-{alg}-raw"),
        false => format!("bench-{alg}"),
    }
}

fn issuer_toml(algorithm: Algorithm, raw: bool) -> String {
    let name = issuer_name(algorithm, raw);
    format!(
        "[issuers.{name}]\niss = \"https://{name}.example\"\nalgorithm = \"{algorithm}\"\n\
         audiences = [\"api\"]\nmax_ttl_seconds = 900\ncallers = [\"uid:{}\", \"{TLS_CLIENT}\"]\n{}",
        my_uid(),
        if raw { "raw_sign = true\n" } else { "" }
    )
}

impl Bench {
    pub fn new(o: &crate::Options) -> Bench {
        let sessions = std::thread::available_parallelism().map_or(2, |n| n.get());
        // The one token of this process: common::token() also points the module at it
        // for this process's own floor rows.
        let token = crate::common::token();
        let work = tempfile::tempdir().unwrap();
        let audit_parent = o
            .audit_dir
            .clone()
            .unwrap_or_else(|| env!("CARGO_TARGET_TMPDIR").into());
        std::fs::create_dir_all(&audit_parent).unwrap();
        let pki = Pki::new();
        let client = pki.ca.client(2, &[TLS_CLIENT], false);
        let issuers: String = o
            .algorithms
            .iter()
            .flat_map(|&a| [issuer_toml(a, false), issuer_toml(a, true)])
            .collect();
        let mut bench = Bench {
            token,
            audit_parent,
            sessions,
            work,
            pki,
            client,
            issuers,
            kids: Vec::new(),
        };
        // The CA and the keys, with the real CLI, as an operator makes them.
        let (config, _, _audit) = bench.write_config(false, 0, "");
        let mut first = true;
        for &algorithm in &o.algorithms {
            for raw in [false, true] {
                let issuer = issuer_name(algorithm, raw);
                let kid = match first {
                    true => bench.token.init_ca_and_key(&config, &issuer),
                    false => bench.generate(&config, &issuer),
                };
                first = false;
                if !raw {
                    bench.kids.push((algorithm, kid));
                }
            }
        }
        bench
    }

    fn generate(&self, config: &std::path::Path, issuer: &str) -> String {
        let c = config.to_str().unwrap();
        let (ok, out, err) = self
            .token
            .signetd(&["keys", "generate", "--issuer", issuer, "--config", c]);
        assert!(ok, "keys generate: {err}");
        out.split_whitespace().nth(5).unwrap().to_string()
    }

    /// The JWT key of `algorithm`'s issuer.
    pub fn kid(&self, algorithm: Algorithm) -> &str {
        &self.kids.iter().find(|(a, _)| *a == algorithm).unwrap().1
    }

    /// The bench token, opened in this process for the floor rows.
    pub fn open_token(&self) -> floor::Token {
        floor::Token::open(
            self.token.var("SIGNETD_PKCS11_MODULE"),
            self.token.var("SIGNETD_TOKEN_LABEL"),
            self.token.pin(),
        )
    }

    /// Writes the daemon's config: its audit log on tmpfs or under `audit_parent`, every
    /// per-caller limit lifted (one uid is the whole load: the limits would be what is
    /// measured), and a queue bound of 128 that the overload row goes past.
    /// `audit_settings` go into the `[audit]` table as they are.
    fn write_config(
        &self,
        tmpfs: bool,
        tls_port: u16,
        audit_settings: &str,
    ) -> (PathBuf, PathBuf, TempDir) {
        let name = if tmpfs { "tmpfs" } else { "disk" };
        let audit = match tmpfs {
            true => tempfile::tempdir_in("/dev/shm").unwrap(),
            false => tempfile::tempdir_in(&self.audit_parent).unwrap(),
        };
        let state = self.work.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let socket = self.work.path().join(format!("{name}.sock"));
        let tls = match tls_port {
            0 => String::new(),
            port => format!(
                "[tls]\nlisten = \"127.0.0.1:{port}\"\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\n",
                self.pki.tls.cert, self.pki.tls.key, self.pki.tls.client_ca
            ),
        };
        let text = format!(
            "{pkcs11}queue = 128\n\
             [listen]\nsocket = {socket:?}\nhttp = \"off\"\n\
             [audit]\ndir = {:?}\n{audit_settings}\
             [store]\nurl = \"sqlite://{state}/signetd.db\"\n\
             {tls}\
             [limits]\nrate_per_principal = \"1000000/s\"\nrate_per_issuer = \"1000000/s\"\n\
             max_connections_per_principal = 1024\n\
             [verify]\nsingle_use_callers = [\"uid:{uid}\"]\n\
             {issuers}",
            audit.path(),
            pkcs11 = self.token.pkcs11_toml_with(self.sessions),
            state = state.display(),
            uid = my_uid(),
            issuers = self.issuers,
        );
        let config = self.work.path().join(format!("{name}.toml"));
        std::fs::write(&config, text).unwrap();
        (config, socket, audit)
    }

    /// The server side of the in-process TLS floor: the daemon's own certificate, key
    /// and client CA.
    pub fn tls_server(&self) -> Arc<rustls::ServerConfig> {
        crate::host::server_config(
            &self.pki.server.pem,
            &self.pki.server.key_pem,
            &self.pki.ca.pem,
        )
    }

    /// A client config of its own (its own session cache) presenting the load
    /// generator's certificate.
    pub fn tls_client(&self) -> Arc<rustls::ClientConfig> {
        self.pki.client(Some(&self.client))
    }

    /// Starts `signetd serve` (a process of its own) with its audit log on disk or tmpfs.
    pub fn serve(&self, tmpfs: bool) -> Daemon<'_> {
        self.serve_under(tmpfs, "", &[], std::time::Duration::from_secs(20))
    }

    /// [`Bench::serve`] with `audit_settings` added to its `[audit]` table, run by `wrapper`
    /// (valgrind), waiting up to `wait` for it to be ready.
    pub fn serve_under(
        &self,
        tmpfs: bool,
        audit_settings: &str,
        wrapper: &[&str],
        wait: std::time::Duration,
    ) -> Daemon<'_> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (config, socket, audit) = self.write_config(tmpfs, port, audit_settings);
        let served = self
            .token
            .serve_under_within(wrapper, &config, &socket, wait);
        Daemon {
            bench: self,
            served,
            _audit: audit,
            socket,
            port,
        }
    }
}

/// A running `signetd serve`; dropping it stops it.
pub struct Daemon<'a> {
    bench: &'a Bench,
    // Dropped after `served` (fields drop in order): the daemon stops before its log goes.
    served: ServedDaemon,
    _audit: TempDir,
    socket: PathBuf,
    port: u16,
}

impl Daemon<'_> {
    pub fn pid(&self) -> String {
        self.served.0.id().to_string()
    }

    pub fn tls_authority(&self) -> String {
        format!("localhost:{}", self.port)
    }

    /// A TLS client config presenting the load generator's certificate. Its session
    /// cache is shared by every connection made with it, so handshakes resume.
    pub fn tls_client(&self) -> Arc<rustls::ClientConfig> {
        self.bench.tls_client()
    }

    /// The public key of `kid`, from the daemon's JWKS.
    pub async fn verifying_key(&self, kid: &str) -> crate::host::VerifyingKey {
        let socket = Endpoint::Unix(self.socket.clone());
        let mut connection = Connection::open(&socket).await.unwrap();
        let response = connection
            .request(Method::GET, "/.well-known/jwks.json", &[], Bytes::new())
            .await
            .unwrap();
        let jwks: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        crate::host::VerifyingKey::from_jwks(&jwks, kid)
    }

    /// The load generator's target for `algorithm`, with one freshly minted token to
    /// verify.
    pub async fn target(&self, algorithm: Algorithm) -> Target {
        let socket = Endpoint::Unix(self.socket.clone());
        let issuer = issuer_name(algorithm, false);
        let mut connection = Connection::open(&socket).await.unwrap();
        let body = serde_json::json!({"issuer": issuer, "aud": "api", "sub": "bench"});
        let response = connection
            .request(
                Method::POST,
                "/v1/tokens",
                &[("content-type", "application/json")],
                Bytes::from(body.to_string()),
            )
            .await
            .unwrap();
        assert!(response.status.is_success(), "{:?}", response.body);
        let minted: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        Target {
            socket,
            tls: Endpoint::Tls {
                authority: self.tls_authority(),
                config: self.tls_client(),
            },
            algorithm,
            issuer,
            raw_issuer: issuer_name(algorithm, true),
            token: minted["token"].as_str().unwrap().to_string(),
            unused: Arc::new(Mutex::new(Vec::new())),
        }
    }
}
