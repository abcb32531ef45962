//! `rnats-server`: nats-server's command line over the rnats-server library.

use std::process::ExitCode;
use std::time::Duration;

use rnats_server::flags::{Flags, USAGE};
use rnats_server::options::{Options, VERSION};
use rnats_server::{config, log};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn fatal(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("rnats-server: {msg}");
    ExitCode::from(1)
}

fn main() -> ExitCode {
    let flags = match Flags::parse(std::env::args().skip(1)) {
        Ok(flags) => flags,
        Err(e) => {
            // As the reference's usage printer: the error, the usage, exit status 0.
            eprintln!("{e}");
            eprintln!("{USAGE}");
            return ExitCode::SUCCESS;
        }
    };
    if flags.is_true("help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if flags.is_true("version") {
        println!("rnats-server: v{VERSION}");
        return ExitCode::SUCCESS;
    }
    let mut opts = Options::default();
    if let Some(path) = flags.get("config") {
        if let Err(e) = config::apply_file(std::path::Path::new(path), &mut opts) {
            return fatal(e);
        }
    } else if flags.is_true("test_config") {
        return fatal("must specify [-c, --config] option to check configuration file syntax");
    }
    if let Err(e) = flags.apply(&mut opts) {
        return fatal(e);
    }
    if let Err(e) = opts.validate() {
        return fatal(e);
    }
    if flags.is_true("test_config") {
        println!(
            "rnats-server: configuration file {} is valid",
            flags.get("config").unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    if flags.get("signal").is_some() {
        return fatal("--signal is not supported by this build yet");
    }
    if let Err(e) = log::init(
        opts.debug,
        opts.trace,
        opts.logtime,
        opts.log_file.as_deref(),
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

async fn run(opts: Options) -> ExitCode {
    let pid_file = opts.pid_file.clone();
    let server = match rnats_server::start(opts).await {
        Ok(server) => server,
        Err(e) => {
            tracing::error!("{e}");
            return fatal(e);
        }
    };
    if let Some(path) = &pid_file
        && let Err(e) = std::fs::write(path, std::process::id().to_string())
    {
        tracing::error!("Could not write pidfile: {e}");
    }
    let signal = wait_for_signal().await;
    tracing::info!("Trapped \"{signal}\" signal");
    server.shutdown(Duration::from_secs(5)).await;
    if let Some(path) = &pid_file {
        let _ = std::fs::remove_file(path);
    }
    ExitCode::SUCCESS
}

async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return "interrupt";
    };
    tokio::select! {
        _ = int.recv() => "interrupt",
        _ = term.recv() => "terminated",
    }
}
