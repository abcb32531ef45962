//! `rnats`: a NATS command-line client with natscli's command shapes.
//!
//! ```text
//! rnats [-s URL] [--context NAME] [--user U --password P | --creds F | --nkey F]
//!       [--tlsca F --tlscert F --tlskey F] [--timeout D] COMMAND
//! rnats pub SUBJECT [BODY] [--count N] [--sleep D] [-H K:V]...
//! rnats sub SUBJECT [--queue Q] [--count N] [--wait D] [--raw] [--headers] [--timestamps]
//! rnats req SUBJECT [BODY] [-H K:V]... [--raw] [--replies N [--reply-timeout D]]
//! rnats reply SUBJECT [BODY] [--echo | --command CMD] [--queue Q] [--count N]
//! rnats bench SUBJECT --pub N --sub N --msgs N --size BYTES [--request] [--queue G]
//!       [--pubsleep D] [--pubbatch N] [--csv FILE] [--json] [--plot FILE.svg]
//! rnats rtt [--iterations N]
//! rnats context add NAME [--description D] [--select] | select NAME | ls | show [NAME] | rm NAME
//! rnats server info|ping [--monitor URL | -m PORT] [--json]
//! rnats stan [--cluster ID] [--client-id ID] pub CHANNEL [BODY] [--count N]
//! rnats stan [--cluster ID] [--client-id ID] sub CHANNEL [--all | --last | --seq N | --since D]
//!       [--durable NAME] [--queue Q] [--count N] [--unsubscribe] [--raw]
//! ```
//!
//! Exit status: 0 on success, 1 on any error (one line on stderr saying what to do), including
//! a `-ERR` the server sends for a publish or subscription it refused (`refusal`).
//! Messages go to stdout; progress lines go to stderr.

mod bench;
mod context;
mod monitor;
mod plot;
mod refusal;
mod rtt;
mod stan;
mod util;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use rnats_client::{
    Client, ConnectErrorKind, ConnectOptions, Event, HeaderMap, Message, PublishError,
    RequestError, RequestErrorKind,
};
use tokio::sync::broadcast::Receiver;

use crate::util::{TemplateContext, parse_duration, parse_header, render};

#[derive(Parser, Debug)]
#[command(
    name = "rnats",
    version,
    about = "NATS command-line client",
    propagate_version = true
)]
struct Cli {
    /// NATS server URL(s), comma separated [default: the context's, else nats://127.0.0.1:4222]
    #[arg(
        short = 's',
        long = "server",
        env = "NATS_URL",
        global = true,
        help_heading = "Connection options"
    )]
    server: Option<String>,

    /// Connection settings saved with `rnats context add` (default: the selected context)
    #[arg(
        long,
        env = "NATS_CONTEXT",
        global = true,
        help_heading = "Connection options",
        value_name = "NAME"
    )]
    context: Option<String>,

    /// Username or token
    #[arg(
        long,
        env = "NATS_USER",
        global = true,
        help_heading = "Connection options"
    )]
    user: Option<String>,

    /// Password
    #[arg(
        long,
        env = "NATS_PASSWORD",
        global = true,
        help_heading = "Connection options",
        hide_env_values = true
    )]
    password: Option<String>,

    /// Time to wait for the connection and for responses
    #[arg(long, default_value = "5s", value_parser = parse_duration, global = true,
        help_heading = "Connection options")]
    timeout: Duration,

    /// Connection name shown by the server
    #[arg(
        long = "connection-name",
        global = true,
        help_heading = "Connection options"
    )]
    connection_name: Option<String>,

    /// User credentials file (JWT and nkey seed, as nsc writes them)
    #[arg(
        long,
        env = "NATS_CREDS",
        global = true,
        help_heading = "Connection options",
        value_name = "FILE"
    )]
    creds: Option<PathBuf>,

    /// File holding the user's nkey seed (SU…)
    #[arg(
        long,
        env = "NATS_NKEY",
        global = true,
        help_heading = "Connection options",
        value_name = "FILE"
    )]
    nkey: Option<PathBuf>,

    /// CA certificate(s) to verify the server with (implies TLS)
    #[arg(
        long,
        env = "NATS_CA",
        global = true,
        help_heading = "Connection options",
        value_name = "FILE"
    )]
    tlsca: Option<PathBuf>,

    /// Client certificate for mutual TLS (with --tlskey)
    #[arg(
        long,
        env = "NATS_CERT",
        global = true,
        help_heading = "Connection options",
        value_name = "FILE"
    )]
    tlscert: Option<PathBuf>,

    /// Private key of the client certificate
    #[arg(
        long,
        env = "NATS_KEY",
        global = true,
        help_heading = "Connection options",
        value_name = "FILE"
    )]
    tlskey: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Publish a message (body from the argument, else from stdin)
    Pub(PubArgs),
    /// Subscribe to a subject and print the messages
    Sub(SubArgs),
    /// Send a request and print the reply
    #[command(alias = "request")]
    Req(ReqArgs),
    /// Answer requests with a fixed body, the request itself, or a command's output
    Reply(ReplyArgs),
    /// Measure throughput (pub, pub/sub, queue) or request/reply latency
    Bench(bench::BenchArgs),
    /// Server information from the monitoring endpoint (/varz)
    Server(monitor::ServerArgs),
    /// NATS Streaming: publish to or subscribe to a channel
    Stan(stan::StanArgs),
    /// Manage saved connection settings (shared with natscli)
    #[command(alias = "ctx")]
    Context(context::ContextArgs),
    /// Measure the round-trip time to the server
    Rtt(rtt::RttArgs),
}

#[derive(Args, Debug)]
struct PubArgs {
    /// Subject to publish to
    subject: String,
    /// Message body; templates like {{Count}}, {{TimeStamp}}, {{ID}} are expanded
    body: Option<String>,
    /// Publish this many messages
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Pause between messages
    #[arg(long, value_parser = parse_duration)]
    sleep: Option<Duration>,
    /// Header, Key:Value (repeatable, templates allowed)
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Reply subject to send with the message
    #[arg(long)]
    reply: Option<String>,
    /// Print nothing but errors
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct SubArgs {
    /// Subject to subscribe to (wildcards allowed)
    subject: String,
    /// Join this queue group
    #[arg(long)]
    queue: Option<String>,
    /// Exit after this many messages
    #[arg(long)]
    count: Option<u64>,
    /// Print only the message bodies, one per line
    #[arg(short, long)]
    raw: bool,
    /// Print message headers too
    #[arg(long)]
    headers: bool,
    /// Print the time each message was received
    #[arg(long, alias = "ts")]
    timestamps: bool,
    /// Exit after this long without any message (natscli's --wait)
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    wait: Option<Duration>,
}

#[derive(Args, Debug)]
struct ReqArgs {
    /// Subject to send the request to
    subject: String,
    /// Request body (else from stdin); templates allowed
    body: Option<String>,
    /// Header, Key:Value (repeatable)
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Print only the reply body
    #[arg(short, long)]
    raw: bool,
    /// Wait for this many replies (several services answering); 0: all until --timeout
    #[arg(long, value_name = "N")]
    replies: Option<u64>,
    /// With --replies: the longest wait between one reply and the next
    #[arg(long = "reply-timeout", default_value = "300ms", value_parser = parse_duration)]
    reply_timeout: Duration,
}

#[derive(Args, Debug)]
struct ReplyArgs {
    /// Subject to serve
    subject: String,
    /// Reply body; templates like {{Count}} and {{Request}} are expanded
    body: Option<String>,
    /// Reply with the request body
    #[arg(long, conflicts_with_all = ["body", "command"])]
    echo: bool,
    /// Run this shell command per request (request body on stdin) and reply with its output
    #[arg(long, conflicts_with = "body")]
    command: Option<String>,
    /// Queue group to join
    #[arg(long, default_value = "NATS-RPLY-22")]
    queue: String,
    /// Exit after this many requests
    #[arg(long)]
    count: Option<u64>,
    /// Wait this long before each reply
    #[arg(long, value_parser = parse_duration)]
    sleep: Option<Duration>,
}

/// A failure, as one line that says what to do.
pub struct Failure(pub String);

impl<S: Into<String>> From<S> for Failure {
    fn from(s: S) -> Self {
        Failure(s.into())
    }
}

pub type Result<T, E = Failure> = std::result::Result<T, E>;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // bench runs many connections: all cores; everything else is one connection.
    let rt = if matches!(cli.command, Command::Bench(_)) {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rnats: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg)) => {
            eprintln!("rnats: error: {}", msg.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let global = cli.global()?;
    let command = match cli.command {
        Command::Bench(a) => return bench::run(&global, a).await,
        Command::Server(a) => return monitor::run(&global, a).await,
        Command::Context(a) => return context::run(&global, a),
        Command::Rtt(a) => return rtt::run(&global, a).await,
        other => other,
    };
    let client = connect(&global).await?;
    let mut events = client.events();
    let ev = &mut events;
    let result = match command {
        Command::Pub(a) => publish(&client, a, ev).await,
        Command::Sub(a) => subscribe(&client, a, ev).await,
        Command::Req(a) => request(&client, a, cli.timeout, ev).await,
        Command::Reply(a) => reply(&client, a, ev).await,
        Command::Stan(a) => stan::run(&client, cli.timeout, a).await,
        Command::Bench(_) | Command::Server(_) | Command::Context(_) | Command::Rtt(_) => {
            unreachable!("handled above")
        }
    };
    client.close().await;
    result
}

/// The global options, for the commands that live in other modules: the flags (and their
/// environment variables), else the context's settings.
pub struct Global {
    pub server: String,
    /// `--server` as given (for `context add`).
    pub server_flag: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub timeout: Duration,
    pub connection_name: Option<String>,
    pub creds: Option<PathBuf>,
    pub nkey: Option<PathBuf>,
    pub tlsca: Option<PathBuf>,
    pub tlscert: Option<PathBuf>,
    pub tlskey: Option<PathBuf>,
}

impl Cli {
    fn global(&self) -> Result<Global> {
        // Managing contexts needs none; everything else takes the named or selected one.
        let ctx = match &self.command {
            Command::Context(_) => None,
            _ => context::load(self.context.as_deref())?,
        };
        let from = |key: &str| ctx.as_ref().and_then(|c| c.get(key));
        let path = |flag: &Option<PathBuf>, key: &str| {
            flag.clone().or_else(|| from(key).map(PathBuf::from))
        };
        let given_user = self.user.is_some() || self.password.is_some();
        Ok(Global {
            server: self
                .server
                .clone()
                .or_else(|| from("url"))
                .unwrap_or_else(|| "nats://127.0.0.1:4222".into()),
            server_flag: self.server.clone(),
            user: if given_user {
                self.user.clone()
            } else {
                from("user").or_else(|| from("token"))
            },
            password: if given_user {
                self.password.clone()
            } else {
                from("password").filter(|_| from("user").is_some())
            },
            timeout: self.timeout,
            connection_name: self.connection_name.clone(),
            creds: path(&self.creds, "creds"),
            nkey: path(&self.nkey, "nkey"),
            tlsca: path(&self.tlsca, "ca"),
            tlscert: path(&self.tlscert, "cert"),
            tlskey: path(&self.tlskey, "key"),
        })
    }
}

impl Global {
    /// Whether anything beyond a plain, anonymous connection was asked for.
    pub fn has_security(&self) -> bool {
        self.user.is_some()
            || self.password.is_some()
            || self.creds.is_some()
            || self.nkey.is_some()
            || self.tlsca.is_some()
            || self.tlscert.is_some()
            || self.tlskey.is_some()
    }

    /// Connect options from the global flags: name, timeouts, credentials, TLS.
    pub fn connect_options(&self) -> Result<ConnectOptions> {
        let mut opts = ConnectOptions::new()
            .connect_timeout(self.timeout)
            .request_timeout(self.timeout)
            .name(
                self.connection_name
                    .clone()
                    .unwrap_or_else(|| "rnats".into()),
            );
        match (&self.user, &self.password) {
            (Some(u), Some(p)) => opts = opts.user_and_password(u, p),
            (Some(token), None) => opts = opts.token(token),
            (None, Some(_)) => return Err("--password needs --user".into()),
            (None, None) => {}
        }
        if self.creds.is_some() && self.nkey.is_some() {
            return Err("give either --creds or --nkey, not both".into());
        }
        if let Some(path) = &self.creds {
            opts = opts.credentials_file(path);
        }
        if let Some(path) = &self.nkey {
            opts = opts.nkey(util::read_nkey_seed(path)?);
        }
        if let Some(ca) = &self.tlsca {
            opts = opts.add_root_certificates(ca);
        }
        match (&self.tlscert, &self.tlskey) {
            (Some(cert), Some(key)) => opts = opts.add_client_certificate(cert, key),
            (Some(_), None) => {
                return Err("--tlscert needs --tlskey (the certificate's private key)".into());
            }
            (None, Some(_)) => return Err("--tlskey needs --tlscert".into()),
            (None, None) => {}
        }
        Ok(opts)
    }
}

/// One line that says why the connection failed and what to do.
pub fn connect_failure(server: &str, e: &rnats_client::ConnectError) -> Failure {
    let hint = match e.kind() {
        ConnectErrorKind::InvalidAddress => "use nats://host:port (comma-separate several)",
        ConnectErrorKind::Io | ConnectErrorKind::NoServers => {
            "is a NATS server running there? Pick one with --server or NATS_URL"
        }
        ConnectErrorKind::TimedOut => "check the address, or raise --timeout",
        ConnectErrorKind::AuthorizationViolation => {
            "give valid credentials with --user/--password, --creds or --nkey"
        }
        ConnectErrorKind::TlsRequired => {
            "one side wants TLS and the other does not offer it: use tls:// and --tlsca for a TLS server, or drop the TLS options"
        }
        ConnectErrorKind::Tls => {
            "check --tlsca (the CA that signed the server's certificate) and --tlscert/--tlskey"
        }
        ConnectErrorKind::Credentials => "check the file given with --creds or --nkey",
        ConnectErrorKind::ServerError | ConnectErrorKind::Protocol => {
            "check that this is a NATS server"
        }
    };
    Failure(format!("cannot connect to {server}: {e}: {hint}"))
}

async fn connect(g: &Global) -> Result<Client> {
    let opts = g.connect_options()?;
    let server = &g.server;
    opts.connect(server.as_str())
        .await
        .map_err(|e| connect_failure(server, &e))
}

fn read_stdin() -> Result<Vec<u8>> {
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .map_err(|e| format!("cannot read the body from stdin: {e}"))?;
    Ok(body)
}

/// The body of each published message: the argument, else stdin (read once), as a template
/// (`{{Count}}`…) when it is text.
pub(crate) struct Bodies {
    arg: Option<String>,
    stdin: Option<Vec<u8>>,
}

impl Bodies {
    pub(crate) fn new(arg: Option<String>) -> Result<Bodies> {
        let stdin = match &arg {
            Some(_) => None,
            None => Some(read_stdin()?),
        };
        Ok(Bodies { arg, stdin })
    }

    pub(crate) fn render(&self, ctx: &TemplateContext<'_>) -> Result<Vec<u8>> {
        Ok(match (&self.arg, &self.stdin) {
            (Some(t), _) => render(t, ctx)?,
            (None, Some(b)) => match std::str::from_utf8(b) {
                Ok(t) => render(t, ctx)?,
                Err(_) => b.clone(),
            },
            (None, None) => unreachable!("body from argument or stdin"),
        })
    }
}

fn headers_from(args: &[String], ctx: &TemplateContext<'_>) -> Result<Option<HeaderMap>> {
    if args.is_empty() {
        return Ok(None);
    }
    let mut h = HeaderMap::new();
    for a in args {
        let (k, v) = parse_header(a)?;
        let v = render(&v, ctx)?;
        h.append(k, String::from_utf8_lossy(&v).into_owned());
    }
    Ok(Some(h))
}

fn publish_failure(subject: &str, e: PublishError) -> Failure {
    Failure(format!("cannot publish to {subject:?}: {e}"))
}

async fn publish(client: &Client, a: PubArgs, events: &mut Receiver<Event>) -> Result<()> {
    let bodies = Bodies::new(a.body.clone())?;
    let mut last_len = 0;
    for i in 1..=a.count {
        let ctx = TemplateContext {
            count: i,
            request: None,
        };
        let body = bodies.render(&ctx)?;
        let headers = headers_from(&a.headers, &ctx)?;
        let r = match (&a.reply, &headers) {
            (None, None) => client.publish(&a.subject, &body).await,
            (Some(r), None) => client.publish_with_reply(&a.subject, r, &body).await,
            (None, Some(h)) => client.publish_with_headers(&a.subject, h, &body).await,
            (Some(r), Some(h)) => {
                client
                    .publish_with_reply_and_headers(&a.subject, r, h, &body)
                    .await
            }
        };
        r.map_err(|e| publish_failure(&a.subject, e))?;
        if let Some(d) = a.sleep.filter(|_| i < a.count) {
            // Between paced messages, a refusal stops the run at once.
            client
                .flush()
                .await
                .map_err(|e| format!("the server did not confirm the publish: {e}"))?;
            if let Some(text) = refusal::pending(events) {
                return Err(refusal::refused(
                    &format!("the publish to {:?}", a.subject),
                    &text,
                ));
            }
            tokio::time::sleep(d).await;
        }
        last_len = body.len();
    }
    // The server answers the flush's PING after the PUBs: a -ERR for them came first.
    client
        .flush()
        .await
        .map_err(|e| format!("the server did not confirm the publish: {e}"))?;
    if let Some(text) = refusal::pending(events) {
        return Err(refusal::refused(
            &format!("the publish to {:?}", a.subject),
            &text,
        ));
    }
    if !a.quiet && a.count == 1 {
        eprintln!("Published {last_len} bytes to {:?}", a.subject);
    } else if !a.quiet && a.count > 1 {
        eprintln!("Published {} messages to {:?}", a.count, a.subject);
    }
    Ok(())
}

async fn subscribe(client: &Client, a: SubArgs, events: &mut Receiver<Event>) -> Result<()> {
    let mut sub = match &a.queue {
        Some(q) => client.queue_subscribe(a.subject.clone(), q.clone()).await,
        None => client.subscribe(a.subject.clone()).await,
    }
    .map_err(|e| format!("cannot subscribe to {:?}: {e}", a.subject))?;
    client
        .flush()
        .await
        .map_err(|e| format!("the server did not confirm the subscription: {e}"))?;
    let what = format!("the subscription to {:?}", a.subject);
    if let Some(text) = refusal::pending(events) {
        return Err(refusal::refused(&what, &text));
    }
    match &a.queue {
        Some(q) => eprintln!("Subscribing on {} in group {q}", a.subject),
        None => eprintln!("Subscribing on {}", a.subject),
    }
    if a.count == Some(0) {
        return Ok(());
    }
    let mut n = 0u64;
    let stdout = std::io::stdout();
    // --wait: the quiet period after which the command ends (restarted by each message).
    let quiet = |w: Option<Duration>| async move {
        match w {
            Some(w) => tokio::time::sleep(w).await,
            None => std::future::pending().await,
        }
    };
    loop {
        let msg = tokio::select! {
            () = quiet(a.wait) => {
                eprintln!("No message for {:?}: done", a.wait.unwrap_or_default());
                return Ok(());
            }
            m = sub.next() => match m {
                Some(m) => m,
                None => return Err("the connection closed: is the server still running?".into()),
            },
            text = refusal::next(events) => return Err(refusal::refused(&what, &text)),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        n += 1;
        let mut out = stdout.lock();
        print_message(&mut out, &msg, n, &a).map_err(|e| format!("cannot write to stdout: {e}"))?;
        if a.count.is_some_and(|c| n >= c) {
            return Ok(());
        }
    }
}

fn print_message(out: &mut impl Write, m: &Message, n: u64, a: &SubArgs) -> std::io::Result<()> {
    if a.timestamps {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        write!(out, "{} ", util::rfc3339(now))?;
    }
    if !a.raw {
        match &m.reply {
            Some(r) => writeln!(out, "[#{n}] Received on {:?} with reply {r:?}", m.subject)?,
            None => writeln!(out, "[#{n}] Received on {:?}", m.subject)?,
        }
    }
    if let Some(h) = m.headers.as_ref().filter(|_| a.headers) {
        write!(out, "{h}")?;
        if !a.raw {
            writeln!(out)?;
        }
    }
    out.write_all(&m.payload)?;
    writeln!(out)?;
    if !a.raw {
        writeln!(out)?;
    }
    out.flush()
}

fn request_failure(subject: &str, e: RequestError, timeout: Duration) -> Failure {
    Failure(match e.kind() {
        RequestErrorKind::NoResponders => format!(
            "no responders on {subject:?}: nobody is subscribed to it; start a service first (e.g. rnats reply {subject} BODY)"
        ),
        RequestErrorKind::TimedOut => {
            format!(
                "no reply on {subject:?} within {timeout:?}: check the service or raise --timeout"
            )
        }
        _ => format!("request on {subject:?} failed: {e}"),
    })
}

async fn request(
    client: &Client,
    a: ReqArgs,
    timeout: Duration,
    events: &mut Receiver<Event>,
) -> Result<()> {
    let ctx = TemplateContext {
        count: 1,
        request: None,
    };
    let body = match &a.body {
        Some(t) => render(t, &ctx)?,
        None => read_stdin()?,
    };
    let headers = headers_from(&a.headers, &ctx)?;
    if !a.raw {
        eprintln!("Sending request on {:?}", a.subject);
    }
    if let Some(want) = a.replies {
        return request_many(client, &a, body, headers, want, timeout, events).await;
    }
    let mut req = rnats_client::Request::new().payload(body).timeout(timeout);
    if let Some(h) = headers {
        req = req.headers(h);
    }
    let started = Instant::now();
    let what = format!("the request on {:?}", a.subject);
    let m = tokio::select! {
        r = client.send_request(&a.subject, req) => match r {
            Ok(m) => m,
            // A refusal explains a timeout better than the timeout does.
            Err(e) => return Err(match refusal::pending(events) {
                Some(text) => refusal::refused(&what, &text),
                None => request_failure(&a.subject, e, timeout),
            }),
        },
        text = refusal::next(events) => return Err(refusal::refused(&what, &text)),
    };
    let mut out = std::io::stdout().lock();
    let note = (!a.raw).then(|| format!("Received with rtt {:?}", started.elapsed()));
    print_reply(&mut out, &m, note.as_deref())
        .map_err(|e| format!("cannot write to stdout: {e}"))?;
    Ok(())
}

/// A reply as `req` prints it: with `note` (not raw), the note on stderr and the headers
/// before the payload; the payload always ends with a newline.
fn print_reply(out: &mut impl Write, m: &Message, note: Option<&str>) -> std::io::Result<()> {
    if let Some(note) = note {
        eprintln!("{note}");
        if let Some(h) = &m.headers {
            write!(out, "{h}")?;
            writeln!(out)?;
        }
    }
    out.write_all(&m.payload)?;
    if !m.payload.ends_with(b"\n") {
        writeln!(out)?;
    }
    out.flush()
}

/// `req --replies N`: the request goes to every service listening, and each reply is printed
/// as it comes, until N came (0: until the timeout), or none came for `--reply-timeout`.
async fn request_many(
    client: &Client,
    a: &ReqArgs,
    body: Vec<u8>,
    headers: Option<HeaderMap>,
    want: u64,
    timeout: Duration,
    events: &mut Receiver<Event>,
) -> Result<()> {
    let what = format!("the request on {:?}", a.subject);
    let inbox = client.new_inbox();
    let mut sub = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| format!("cannot subscribe to the reply inbox: {e}"))?;
    let sent = match &headers {
        Some(h) => {
            client
                .publish_with_reply_and_headers(&a.subject, &inbox, h, &body)
                .await
        }
        None => client.publish_with_reply(&a.subject, &inbox, &body).await,
    };
    sent.map_err(|e| publish_failure(&a.subject, e))?;
    client
        .flush()
        .await
        .map_err(|e| format!("the server did not confirm the request: {e}"))?;
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut got = 0u64;
    let mut out = std::io::stdout().lock();
    loop {
        // The first reply may take the whole timeout, later ones at most --reply-timeout
        // (with --replies 0, everything until the timeout).
        let until = if got == 0 || want == 0 {
            deadline
        } else {
            deadline.min(tokio::time::Instant::now() + a.reply_timeout)
        };
        let m = tokio::select! {
            m = sub.next() => match m {
                Some(m) => m,
                None => return Err("the connection closed: is the server still running?".into()),
            },
            text = refusal::next(events) => return Err(refusal::refused(&what, &text)),
            () = tokio::time::sleep_until(until) => break,
        };
        if m.status == Some(rnats_client::NO_RESPONDERS) && got == 0 {
            return Err(request_failure(
                &a.subject,
                RequestError::new(RequestErrorKind::NoResponders),
                timeout,
            ));
        }
        got += 1;
        let note =
            (!a.raw).then(|| format!("Received reply {got} with rtt {:?}", started.elapsed()));
        print_reply(&mut out, &m, note.as_deref())
            .map_err(|e| format!("cannot write to stdout: {e}"))?;
        if want > 0 && got >= want {
            break;
        }
    }
    if got == 0 {
        return Err(format!(
            "no reply on {:?} within {timeout:?}: check the service or raise --timeout",
            a.subject
        )
        .into());
    }
    if !a.raw {
        eprintln!("{got} replies");
    }
    Ok(())
}

async fn reply(client: &Client, a: ReplyArgs, events: &mut Receiver<Event>) -> Result<()> {
    if a.body.is_none() && !a.echo && a.command.is_none() {
        return Err("say what to reply: a BODY argument, --echo, or --command CMD".into());
    }
    let mut sub = client
        .queue_subscribe(a.subject.clone(), a.queue.clone())
        .await
        .map_err(|e| format!("cannot subscribe to {:?}: {e}", a.subject))?;
    client
        .flush()
        .await
        .map_err(|e| format!("the server did not confirm the subscription: {e}"))?;
    let what = format!("the subscription to {:?}", a.subject);
    if let Some(text) = refusal::pending(events) {
        return Err(refusal::refused(&what, &text));
    }
    eprintln!("Listening on {:?} in group {:?}", a.subject, a.queue);
    if a.count == Some(0) {
        return Ok(());
    }
    let mut n = 0u64;
    loop {
        let msg = tokio::select! {
            m = sub.next() => match m {
                Some(m) => m,
                None => return Err("the connection closed: is the server still running?".into()),
            },
            text = refusal::next(events) => return Err(refusal::refused(&what, &text)),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        n += 1;
        eprintln!("[#{n}] Received on {:?}", msg.subject);
        let Some(reply_to) = msg.reply.as_deref() else {
            eprintln!("[#{n}] no reply subject: nothing to answer");
            continue;
        };
        if let Some(d) = a.sleep {
            tokio::time::sleep(d).await;
        }
        let ctx = TemplateContext {
            count: n,
            request: Some(&msg.payload),
        };
        let body = if a.echo {
            msg.payload.to_vec()
        } else if let Some(cmd) = &a.command {
            match run_command(cmd, &msg.payload).await {
                Ok(out) => out,
                Err(e) => {
                    eprintln!("[#{n}] {e}; not replying");
                    continue;
                }
            }
        } else {
            render(a.body.as_deref().unwrap_or_default(), &ctx)?
        };
        client
            .publish(reply_to, &body)
            .await
            .map_err(|e| publish_failure(reply_to, e))?;
        if a.count.is_some_and(|c| n >= c) {
            client
                .flush()
                .await
                .map_err(|e| format!("the server did not confirm the reply: {e}"))?;
            return Ok(());
        }
    }
}

/// Runs `cmd` with `sh -c`, the request body on stdin; its stdout is the reply.
async fn run_command(cmd: &str, input: &[u8]) -> Result<Vec<u8>, String> {
    let (cmd, input) = (cmd.to_string(), input.to_vec());
    tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
        let stdin = child.stdin.take();
        // Written from another thread, so that a command with a lot of output cannot block us.
        let writer = std::thread::spawn(move || {
            if let Some(mut stdin) = stdin {
                // A command that does not read its input may close stdin early: not an error.
                let _ = stdin.write_all(&input);
            }
        });
        let out = child
            .wait_with_output()
            .map_err(|e| format!("command {cmd:?} failed: {e}"))?;
        let _ = writer.join();
        if !out.status.success() {
            return Err(format!("command {cmd:?} exited with {}", out.status));
        }
        Ok(out.stdout)
    })
    .await
    .map_err(|e| format!("command task failed: {e}"))?
}
