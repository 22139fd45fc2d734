//! A throwaway PostgreSQL cluster for tests and benchmarks: found on
//! `PATH`, through `pg_config --bindir` or under `/usr/lib/postgresql`,
//! run as the `postgres` user when the caller is root, stopped
//! (immediately) when dropped.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

const INSTALL: &str = "PostgreSQL server binaries (initdb, pg_ctl) were not found on PATH \
                       nor in `pg_config --bindir`: install them, e.g. `apt-get install postgresql`";

/// A throwaway cluster, stopped (immediately) when dropped.
pub struct Cluster {
    bin: PathBuf,
    pub dir: PathBuf,
    pub port: u16,
    as_postgres: bool,
    /// Server options besides the port, socket folder and address.
    options: String,
}

fn find_bin() -> Option<PathBuf> {
    let from_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(dir) =
        from_config.filter(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
    {
        return Some(dir);
    }
    let has = |d: &PathBuf| d.join("initdb").exists() && d.join("pg_ctl").exists();
    let on_path =
        std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).find(|d| has(d)));
    on_path.or_else(|| {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|d| has(d))
            .collect();
        versions.sort();
        versions.pop()
    })
}

impl Cluster {
    pub fn start(name: &str) -> Cluster {
        Cluster::start_with(name, None)
    }

    /// A cluster that speaks TLS with `cert_pem` (the chain) and `key_pem`,
    /// and takes TCP connections over TLS only (`hostssl`): a plain one is
    /// refused with "no encryption".
    pub fn start_tls(name: &str, cert_pem: &str, key_pem: &str) -> Cluster {
        Cluster::start_with(name, Some((cert_pem, key_pem)))
    }

    fn start_with(name: &str, tls: Option<(&str, &str)>) -> Cluster {
        let bin = find_bin().unwrap_or_else(|| panic!("{INSTALL}"));
        let uid = Command::new("id").arg("-u").output().unwrap();
        let as_postgres = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        let dir = std::env::temp_dir().join(format!("goenhance-pg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cluster = Cluster {
            bin,
            dir,
            port,
            as_postgres,
            options: String::new(),
        };
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&cluster.dir)
                .status()
                .unwrap();
            assert!(ok.success(), "chown of the cluster folder failed");
        }
        let data = cluster.dir.join("data");
        cluster.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
            ],
        );
        if let Some((cert, key)) = tls {
            cluster.write(&data.join("server.crt"), cert, 0o644);
            cluster.write(&data.join("server.key"), key, 0o600);
            cluster.write(
                &data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
                0o600,
            );
            cluster.options =
                " -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key".into();
        }
        cluster.pg_ctl(&["start"]);
        cluster
    }

    /// Writes a file the server reads, owned by the server's user.
    fn write(&self, path: &std::path::Path, text: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        if self.as_postgres {
            let ok = Command::new("chown")
                .arg("postgres:postgres")
                .arg(path)
                .status()
                .unwrap();
            assert!(ok.success(), "chown of {} failed", path.display());
        }
    }

    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self.command(tool).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn pg_ctl(&self, action: &[&str]) {
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off{}",
            self.port,
            self.dir.display(),
            self.options
        );
        let mut args = vec![
            "-D",
            data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-o",
            &opts,
            "-w",
        ];
        args.extend_from_slice(action);
        self.run("pg_ctl", &args);
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self
            .command("pg_ctl")
            .args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Cluster {
    /// A plain client of the `postgres` database, its connection driven
    /// by a task of its own: for a test that writes or reads the tables
    /// itself.
    #[cfg(feature = "postgres")]
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    }

    /// The URL of database `db` on this cluster.
    pub fn url_of(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}
