//! Throwaway database servers for tests: PostgreSQL and MariaDB from the system's packages
//! (Debian: `apt-get install -y postgresql mariadb-server`), started in a temporary directory
//! on a free loopback port, one fresh database per test.
//!
//! ```text
//! DbServer::shared(kind)     one server per test binary (lazily started, stopped at exit)
//! DbServer::start(kind)      a private server the test may kill and restart; stopped on Drop
//!   .create_database()       a new empty database → its name
//!   .source(db)              the DSN of that database in the SQL store's driver form
//!   .sql(db, statement)      runs SQL through the command-line client (inspect, break schema)
//!   .kill() / .restart()     SIGKILL every process of the server / start it again, same data
//! ```
//!
//! # How the servers run
//!
//! * `initdb` / `mariadb-install-db` create a data directory under a temporary directory, and
//!   the server listens on `127.0.0.1:<port>` (a port the OS picked for a socket bound to port
//!   0) and on a unix socket in that directory, used by the command-line clients.
//! * PostgreSQL refuses to run as root. When the tests run as root (CI), every server command
//!   runs as `nobody` through `setpriv`, and the directory is handed to that user.
//! * Each server is spawned with `setpriv --pdeathsig` from one long-lived thread of the test
//!   process, so it gets a shutdown signal when the test process exits, even if nothing drops
//!   it (the shared servers live in statics, which Rust never drops). Directories left behind
//!   by a test process that is gone are removed when the next one starts a server.
//! * Tuned for tests, not for durability against power loss: PostgreSQL runs with
//!   `fsync=off` (a commit still reaches the kernel before it returns, so killing the server
//!   loses nothing), MariaDB with `innodb_flush_log_at_trx_commit=2` (the same guarantee).
//!   [`Options::durable`] restores fsync for measurements.
//!
//! # Missing packages
//!
//! [`DbServer::shared`] returns `None` (and says so on stderr) when the binaries are not
//! installed, so tests can skip; with `RNATS_REQUIRE_SQL=1` (as `scripts/test.sh` sets) a
//! missing binary fails the test instead, naming the package to install.

use std::fmt;
use std::fs;
use std::io::{self, Read as _};
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The environment variable that turns missing database binaries into test failures.
pub const REQUIRE_ENV: &str = "RNATS_REQUIRE_SQL";

/// How long a server may take to accept connections after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful stop may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Prefix of the temporary directories (followed by the test process ID).
const DIR_PREFIX: &str = "rnats-testdb-";
/// The MariaDB account the tests connect with over TCP.
const MY_USER: &str = "rnats";
const MY_PASSWORD: &str = "rnats-pw";

/// Which database server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Postgres,
    MariaDb,
}

impl Kind {
    /// The SQL store's driver name for this server (`postgres` or `mysql`).
    pub fn driver(self) -> &'static str {
        match self {
            Kind::Postgres => "postgres",
            Kind::MariaDb => "mysql",
        }
    }

    /// The Debian package that provides this server.
    pub fn package(self) -> &'static str {
        match self {
            Kind::Postgres => "postgresql",
            Kind::MariaDb => "mariadb-server",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Postgres => "PostgreSQL",
            Kind::MariaDb => "MariaDB",
        })
    }
}

/// Errors of the harness.
#[derive(Debug)]
pub enum TestDbError {
    /// The server's binaries are not installed.
    Missing {
        kind: Kind,
        what: String,
    },
    /// A command failed; `output` is what it printed (or the server log).
    Failed {
        what: String,
        output: String,
    },
    Io {
        what: String,
        source: io::Error,
    },
}

impl fmt::Display for TestDbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TestDbError::Missing { kind, what } => write!(
                f,
                "{kind} is not installed ({what} not found): apt-get install -y {}",
                kind.package()
            ),
            TestDbError::Failed { what, output } => write!(f, "{what} failed:\n{output}"),
            TestDbError::Io { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for TestDbError {}

type Result<T> = std::result::Result<T, TestDbError>;

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> TestDbError {
    let what = what.into();
    move |source| TestDbError::Io { what, source }
}

/// Server options.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// fsync on commit (PostgreSQL `fsync=on`, MariaDB `innodb_flush_log_at_trx_commit=1`).
    pub durable: bool,
}

/// Binaries of one installation.
#[derive(Debug, Clone)]
struct Bins {
    init: PathBuf,
    server: PathBuf,
    client: PathBuf,
}

fn find_bins(kind: Kind) -> Result<Bins> {
    match kind {
        Kind::Postgres => {
            // Debian installs the server binaries per major version, newest wins.
            let mut dirs: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
                .map(|rd| {
                    rd.filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                        .collect()
                })
                .unwrap_or_default();
            dirs.sort_by_key(|d| {
                d.parent()
                    .and_then(|p| p.file_name())
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.parse::<u32>().ok())
                    .unwrap_or(0)
            });
            let dir = dirs
                .into_iter()
                .rev()
                .find(|d| d.join("postgres").is_file() && d.join("initdb").is_file());
            let (init, server) = match dir {
                Some(d) => (d.join("initdb"), d.join("postgres")),
                None => (
                    which("initdb").ok_or_else(|| missing(kind, "initdb"))?,
                    which("postgres").ok_or_else(|| missing(kind, "postgres"))?,
                ),
            };
            let client = which("psql").ok_or_else(|| missing(kind, "psql"))?;
            Ok(Bins {
                init,
                server,
                client,
            })
        }
        Kind::MariaDb => Ok(Bins {
            init: which("mariadb-install-db")
                .or_else(|| which("mysql_install_db"))
                .ok_or_else(|| missing(kind, "mariadb-install-db"))?,
            server: which("mariadbd")
                .or_else(|| which("mysqld"))
                .ok_or_else(|| missing(kind, "mariadbd"))?,
            client: which("mariadb")
                .or_else(|| which("mysql"))
                .ok_or_else(|| missing(kind, "mariadb"))?,
        }),
    }
}

fn missing(kind: Kind, what: &str) -> TestDbError {
    TestDbError::Missing {
        kind,
        what: what.to_owned(),
    }
}

/// `name` in `$PATH` or the sbin directories (where Debian puts `mariadbd`).
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The user servers run as: `None` for the current user, or (uid, gid) of `nobody` when the
/// tests run as root.
fn run_as() -> Result<Option<(u32, u32)>> {
    let status = fs::read_to_string("/proc/self/status").map_err(io_err("/proc/self/status"))?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u32>().ok());
    if euid != Some(0) {
        return Ok(None);
    }
    let id = |flag: &str| -> Result<u32> {
        let out = Command::new("id")
            .args([flag, "nobody"])
            .output()
            .map_err(io_err("id nobody"))?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| TestDbError::Failed {
                what: format!("id {flag} nobody"),
                output: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
    };
    Ok(Some((id("-u")?, id("-g")?)))
}

/// A command for `bin` running as `user` (through `setpriv`) with a parent-death signal.
fn server_command(bin: &Path, user: Option<(u32, u32)>, death_signal: Option<&str>) -> Command {
    let mut cmd = Command::new("setpriv");
    if let Some((uid, gid)) = user {
        cmd.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg("--clear-groups");
    }
    if let Some(sig) = death_signal {
        cmd.arg(format!("--pdeathsig={sig}"));
    }
    cmd.arg("--").arg(bin);
    cmd
}

/// Spawns every server from one thread that lives as long as the process, so that the
/// parent-death signal (tied to the spawning thread) fires only when the process exits.
fn spawn(mut cmd: Command) -> io::Result<Child> {
    type Req = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Req>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Req>();
        std::thread::Builder::new()
            .name("test-db-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawn the test-db spawner thread");
        Mutex::new(tx)
    });
    cmd.process_group(0);
    let (rtx, rrx) = mpsc::channel();
    tx.lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, rtx))
        .map_err(|_| io::Error::other("test-db spawner thread is gone"))?;
    rrx.recv()
        .map_err(|_| io::Error::other("test-db spawner thread is gone"))?
}

/// Removes directories of earlier test processes that are gone.
fn remove_stale_dirs() {
    let Ok(rd) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io_err("bind 127.0.0.1:0"))?;
    Ok(l.local_addr().map_err(io_err("local_addr"))?.port())
}

/// A database server of the tests (see the module documentation).
pub struct DbServer {
    kind: Kind,
    opts: Options,
    bins: Bins,
    user: Option<(u32, u32)>,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    next_db: AtomicU32,
}

impl fmt::Debug for DbServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbServer")
            .field("kind", &self.kind)
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl DbServer {
    /// The server shared by the tests of this process, started on first use. `None` when the
    /// binaries are missing and `RNATS_REQUIRE_SQL` is not `1` (the caller skips its test);
    /// panics when they are missing and required, or when the server fails to start.
    pub fn shared(kind: Kind) -> Option<&'static DbServer> {
        static PG: OnceLock<Option<DbServer>> = OnceLock::new();
        static MY: OnceLock<Option<DbServer>> = OnceLock::new();
        let cell = match kind {
            Kind::Postgres => &PG,
            Kind::MariaDb => &MY,
        };
        cell.get_or_init(|| Self::start_or_skip(kind, Options::default()))
            .as_ref()
    }

    /// [`DbServer::start_with`], or `None` (with a note on stderr) when the binaries are
    /// missing and not required. Panics on any other failure.
    pub fn start_or_skip(kind: Kind, opts: Options) -> Option<DbServer> {
        match Self::start_with(kind, opts) {
            Ok(s) => Some(s),
            Err(e @ TestDbError::Missing { .. }) => {
                assert!(
                    std::env::var(REQUIRE_ENV).as_deref() != Ok("1"),
                    "{REQUIRE_ENV}=1 but {e}"
                );
                eprintln!("skipping: {e} (set {REQUIRE_ENV}=1 to make this a failure)");
                None
            }
            Err(e) => panic!("cannot start a {kind} test server: {e}"),
        }
    }

    /// A private server with default options.
    pub fn start(kind: Kind) -> Result<DbServer> {
        Self::start_with(kind, Options::default())
    }

    /// Creates a data directory and starts a server on it.
    pub fn start_with(kind: Kind, opts: Options) -> Result<DbServer> {
        let bins = find_bins(kind)?;
        which("setpriv").ok_or_else(|| missing(kind, "setpriv (util-linux)"))?;
        remove_stale_dirs();
        let user = run_as()?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir()
            .map_err(io_err("create a temporary directory"))?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(io_err(format!("chown {}", dir.path().display())))?;
        }
        let mut s = DbServer {
            kind,
            opts,
            bins,
            user,
            dir,
            port: free_port()?,
            child: None,
            next_db: AtomicU32::new(0),
        };
        s.init_data_dir()?;
        s.launch()?;
        if kind == Kind::MariaDb {
            s.client_sql(
                None,
                &format!(
                    "CREATE USER '{MY_USER}'@'%' IDENTIFIED BY '{MY_PASSWORD}'; \
                     GRANT ALL PRIVILEGES ON *.* TO '{MY_USER}'@'%'; FLUSH PRIVILEGES;"
                ),
            )?;
        }
        Ok(s)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn my_socket(&self) -> PathBuf {
        self.dir.path().join("mysql.sock")
    }

    fn init_data_dir(&self) -> Result<()> {
        let mut cmd = server_command(&self.bins.init, self.user, None);
        cmd.current_dir(self.dir.path());
        match self.kind {
            Kind::Postgres => {
                cmd.arg("-D").arg(self.data_dir()).args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]);
            }
            Kind::MariaDb => {
                // --no-defaults must come first: ignore /etc/mysql of the machine.
                cmd.arg("--no-defaults")
                    .arg(format!("--datadir={}", self.data_dir().display()))
                    .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
            }
        }
        run(
            cmd,
            &format!("{} ({})", self.bins.init.display(), self.kind),
        )
    }

    /// Starts the server process on the existing data directory and waits until it answers.
    fn launch(&mut self) -> Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(io_err("open the server log"))?;
        let log2 = log.try_clone().map_err(io_err("clone the log handle"))?;
        let mut cmd;
        match self.kind {
            Kind::Postgres => {
                cmd = server_command(&self.bins.server, self.user, Some("INT"));
                let fsync = if self.opts.durable { "on" } else { "off" };
                cmd.arg("-D")
                    .arg(self.data_dir())
                    .arg("-p")
                    .arg(self.port.to_string())
                    .arg("-k")
                    .arg(self.dir.path())
                    .args(["-c", "listen_addresses=127.0.0.1"])
                    .args(["-c", &format!("fsync={fsync}")])
                    .args(["-c", "max_connections=200"]);
            }
            Kind::MariaDb => {
                cmd = server_command(&self.bins.server, self.user, Some("TERM"));
                let flush = if self.opts.durable { 1 } else { 2 };
                cmd.arg("--no-defaults")
                    .arg(format!("--datadir={}", self.data_dir().display()))
                    .arg(format!("--socket={}", self.my_socket().display()))
                    .arg(format!("--port={}", self.port))
                    .arg(format!(
                        "--pid-file={}",
                        self.dir.path().join("my.pid").display()
                    ))
                    .arg(format!("--tmpdir={}", self.dir.path().display()))
                    .arg(format!("--innodb-flush-log-at-trx-commit={flush}"))
                    .args([
                        "--bind-address=127.0.0.1",
                        "--skip-name-resolve",
                        "--skip-log-bin",
                        "--innodb-buffer-pool-size=64M",
                        "--max-connections=300",
                    ]);
            }
        }
        cmd.current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let child = spawn(cmd).map_err(io_err(format!(
            "start {} (setpriv)",
            self.bins.server.display()
        )))?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(TestDbError::Failed {
                    what: format!("{} exited with {status} while starting", self.kind),
                    output: self.log_tail(),
                });
            }
            if self.client_sql(None, "SELECT 1").is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(TestDbError::Failed {
                    what: format!(
                        "{} did not accept connections within {READY_TIMEOUT:?}",
                        self.kind
                    ),
                    output: self.log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(self.log_path()) {
            let _ = f.read_to_string(&mut s);
        }
        if self.kind == Kind::MariaDb
            && let Ok(e) = fs::read_to_string(self.data_dir().join("mariadb.err"))
        {
            s.push_str(&e);
        }
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Which server this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The SQL store driver name (`postgres` or `mysql`).
    pub fn driver(&self) -> &'static str {
        self.kind.driver()
    }

    /// Creates a new, empty database and returns its name.
    pub fn create_database(&self) -> Result<String> {
        let n = self.next_db.fetch_add(1, Ordering::Relaxed);
        let name = format!("t{}_{n}", std::process::id());
        self.client_sql(None, &format!("CREATE DATABASE {name}"))?;
        Ok(name)
    }

    /// The data source of database `db` in the driver's own form: libpq `key=value` for
    /// PostgreSQL, `user:password@tcp(host:port)/db` for MySQL.
    pub fn source(&self, db: &str) -> String {
        match self.kind {
            Kind::Postgres => format!(
                "host=127.0.0.1 port={} user=postgres dbname={db} sslmode=disable",
                self.port
            ),
            Kind::MariaDb => format!("{MY_USER}:{MY_PASSWORD}@tcp(127.0.0.1:{})/{db}", self.port),
        }
    }

    /// The data source of database `db` as a URL (PostgreSQL) or with parameters (MySQL).
    pub fn url_source(&self, db: &str) -> String {
        match self.kind {
            Kind::Postgres => format!(
                "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
                self.port
            ),
            Kind::MariaDb => format!(
                "{MY_USER}:{MY_PASSWORD}@tcp(127.0.0.1:{})/{db}?timeout=5s&charset=utf8mb4",
                self.port
            ),
        }
    }

    /// Runs SQL in database `db` through the command-line client and returns what it printed
    /// (tab-separated rows, no header).
    pub fn sql(&self, db: &str, statements: &str) -> Result<String> {
        self.client_sql(Some(db), statements)
    }

    fn client_sql(&self, db: Option<&str>, statements: &str) -> Result<String> {
        let mut cmd = Command::new(&self.bins.client);
        match self.kind {
            Kind::Postgres => {
                cmd.arg("-h")
                    .arg(self.dir.path())
                    .arg("-p")
                    .arg(self.port.to_string())
                    .args(["-U", "postgres", "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1"])
                    .args(["-d", db.unwrap_or("postgres")])
                    .args(["-c", statements]);
            }
            Kind::MariaDb => {
                cmd.arg("--no-defaults")
                    .arg(format!("--socket={}", self.my_socket().display()))
                    .args(["-u", "root", "-N", "-B"]);
                if let Some(db) = db {
                    cmd.arg(db);
                }
                cmd.args(["-e", statements]);
            }
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(io_err(format!("run {}", self.bins.client.display())))?;
        if !out.status.success() {
            return Err(TestDbError::Failed {
                what: format!("{}: {statements}", self.bins.client.display()),
                output: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Whether the server process is running (it was not killed or stopped).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills every process of the server with SIGKILL (a crash) and waits for the main one.
    /// PostgreSQL backends run in sessions of their own (not the postmaster's process group)
    /// and would go on serving their connections for a while, so the server is stopped
    /// (SIGSTOP: it forks no more), its descendants are looked up, then all are killed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            signal(&[pid], "STOP");
            let mut pids = descendants(pid);
            pids.push(pid);
            signal(&pids, "KILL");
            signal_group(pid, "KILL");
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same data directory and port (after [`kill`] or
    /// [`stop`]).
    ///
    /// [`kill`]: DbServer::kill
    /// [`stop`]: DbServer::stop
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.stop();
        }
        self.launch()
    }

    /// Stops the server gracefully (killing it if it takes longer than 30 s).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let sig = match self.kind {
            Kind::Postgres => "INT",
            Kind::MariaDb => "TERM",
        };
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    signal_group(child.id(), "KILL");
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        // Backends of a stopped PostgreSQL exit with it; anything left is killed.
        signal_group(child.id(), "KILL");
    }
}

/// Sends `sig` to processes.
fn signal(pids: &[u32], sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg("--")
        .args(pids.iter().map(u32::to_string))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Every descendant of `pid`, from `/proc/<pid>/stat` parent links.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may contain spaces and parentheses.
            let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u32>().ok());
            if let Some(pp) = ppid {
                parent_of.push((p, pp));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for &(c, pp) in &parent_of {
            if pp == p && !out.contains(&c) {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out
}

/// Sends `sig` to the process group `pgid` (the server was spawned as a group leader).
fn signal_group(pgid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn run(mut cmd: Command, what: &str) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("run {what}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TestDbError::Failed {
            what: what.to_owned(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }
}

impl Drop for DbServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(kind: Kind) {
        let Some(mut s) = DbServer::start_or_skip(kind, Options::default()) else {
            return;
        };
        let db = s.create_database().unwrap();
        s.sql(&db, "CREATE TABLE t (a INTEGER)").unwrap();
        s.sql(&db, "INSERT INTO t VALUES (41), (1)").unwrap();
        assert_eq!(s.sql(&db, "SELECT SUM(a) FROM t").unwrap().trim(), "42");
        // A crash loses nothing committed, and the server comes back on the same port.
        let port = s.port();
        s.kill();
        assert!(!s.is_running());
        assert!(s.sql(&db, "SELECT 1").is_err());
        s.restart().unwrap();
        assert_eq!(s.port(), port);
        assert_eq!(s.sql(&db, "SELECT COUNT(*) FROM t").unwrap().trim(), "2");
        // Again: a restarted server is killed just as well.
        s.kill();
        assert!(s.sql(&db, "SELECT 1").is_err());
        s.restart().unwrap();
        assert_eq!(s.sql(&db, "SELECT COUNT(*) FROM t").unwrap().trim(), "2");
        let e = s.sql(&db, "SELECT nope FROM t").unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn postgres_starts_survives_kill_and_restarts() {
        roundtrip(Kind::Postgres);
    }

    #[test]
    fn mariadb_starts_survives_kill_and_restarts() {
        roundtrip(Kind::MariaDb);
    }
}
