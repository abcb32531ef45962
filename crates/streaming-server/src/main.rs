//! `rnats-streaming-server`: nats-streaming-server's command line over the library.

use std::process::ExitCode;

use rnats_streaming_server::options::{CommandLine, USAGE, VERSION};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn fatal(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("rnats-streaming-server: {msg}");
    ExitCode::from(1)
}

fn main() -> ExitCode {
    let cl = match CommandLine::parse(std::env::args().skip(1)) {
        Ok(cl) => cl,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("{USAGE}");
            return ExitCode::from(1);
        }
    };
    if cl.is_true("help") || cl.nats.is_true("help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if cl.is_true("version") || cl.nats.is_true("version") {
        println!(
            "rnats-streaming-server version {VERSION}, NATS Server version {}",
            rnats_server::options::VERSION
        );
        return ExitCode::SUCCESS;
    }
    let opts = match cl.options() {
        Ok(o) => o,
        Err(e) => return fatal(e),
    };
    if let Some(code) = offline_migration(&opts) {
        return code;
    }
    if cl.is_true("sql_create_schema") {
        return create_sql_schema(&opts.sql);
    }
    let debug = opts.nats.debug || opts.stan_debug;
    let trace = opts.nats.trace || opts.stan_trace;
    // RAFT internals (openraft) at warning level unless --cluster_raft_logging.
    if !opts.clustering.raft.raft_logging {
        rnats_server::log::quiet_targets(vec!["openraft".to_string()]);
    }
    if let Err(e) = rnats_server::log::init(
        debug,
        trace,
        opts.nats.logtime,
        opts.nats.log_file.as_deref(),
    ) {
        return fatal(format!("could not open log file: {e}"));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fatal(e),
    };
    runtime.block_on(run(opts))
}

/// `--migrate_from` and `--migrate_check`: the report on stdout, errors on stderr; None when
/// neither is asked for (the server starts).
fn offline_migration(opts: &rnats_streaming_server::Options) -> Option<ExitCode> {
    use rnats_streaming::migrate;
    let ref_opts = opts.reference_options();
    if let Some(src) = &opts.migrate_check {
        return Some(match migrate::check(src, &ref_opts, &opts.limits) {
            Ok(report) => {
                println!("{report}");
                if report.is_clean() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => fatal(format_args!("checking {}: {e}", src.display())),
        });
    }
    let src = opts.migrate_from.as_ref()?;
    let dst = opts.dir.as_deref().unwrap_or(std::path::Path::new(""));
    Some(
        match migrate::migrate(src, dst, &ref_opts, &opts.file_options, &opts.limits) {
            Ok(report) => {
                println!("{report}");
                println!(
                    "migrated: start with -st FILE --dir {}; {} is unchanged",
                    dst.display(),
                    src.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => fatal(format_args!(
                "migrating {} into {} failed: {e} (nothing was written to {})",
                src.display(),
                dst.display(),
                dst.display()
            )),
        },
    )
}

/// `--sql_create_schema`: runs the schema script of `--sql_driver` on `--sql_source` (tables
/// and indexes that exist are left alone) and lists what it ran.
fn create_sql_schema(sql: &rnats_streaming_server::options::SqlOptions) -> ExitCode {
    use rnats_streaming::store::sql::{create_schema, schema_script};
    let so = match sql.store_options() {
        Ok(o) => o,
        Err(e) => return fatal(e),
    };
    if let Err(e) = create_schema(so.driver, &so.source) {
        return fatal(format!("unable to create the SQL schema: {e}"));
    }
    println!(
        "SQL schema for {} created (tables and indexes that existed were left as they were):",
        so.driver
    );
    let script = schema_script(so.driver);
    let body: Vec<&str> = script
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect();
    for stmt in body.join("\n").split(';') {
        if let Some(head) = stmt.lines().map(str::trim).find(|l| !l.is_empty()) {
            println!("  {}", head.trim_end_matches('(').trim_end());
        }
    }
    ExitCode::SUCCESS
}

async fn run(opts: rnats_streaming_server::Options) -> ExitCode {
    use tokio::signal::unix::{SignalKind, signal};
    let pid_file = opts.nats.pid_file.clone();
    let server = match rnats_streaming_server::start(opts).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("STREAM: Failed to start: {e}");
            return fatal(e);
        }
    };
    if let Some(path) = &pid_file
        && let Err(e) = std::fs::write(path, std::process::id().to_string())
    {
        tracing::error!("Could not write pidfile: {e}");
    }
    let (Ok(mut int), Ok(mut term), Ok(mut usr1), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::user_defined1()),
        signal(SignalKind::hangup()),
    ) else {
        return fatal("could not install signal handlers");
    };
    let code = loop {
        tokio::select! {
            _ = int.recv() => {
                tracing::info!("STREAM: Trapped \"interrupt\" signal");
                break ExitCode::SUCCESS;
            }
            _ = term.recv() => {
                tracing::info!("STREAM: Trapped \"terminated\" signal");
                break ExitCode::from(143);
            }
            _ = usr1.recv() => {
                if let Err(e) = rnats_server::log::reopen() {
                    tracing::error!("Could not reopen log file: {e}");
                }
            }
            _ = hup.recv() => {
                tracing::warn!("STREAM: Configuration reload is not supported, ignoring SIGHUP");
            }
            () = server.stopped() => match server.error() {
                Some(e) => {
                    tracing::error!("STREAM: {e}");
                    break ExitCode::from(1);
                }
                None => break ExitCode::SUCCESS,
            },
        }
    };
    server.shutdown().await;
    if let Some(path) = &pid_file {
        let _ = std::fs::remove_file(path);
    }
    code
}
