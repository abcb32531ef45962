//! `rnats-server`: nats-server's command line over the rnats-server library.

use std::process::ExitCode;
use std::time::Duration;

use rnats_server::flags::{Flags, USAGE};
use rnats_server::options::{Options, VERSION};
use rnats_server::{config, log};

#[cfg(feature = "mimalloc")]
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
    if let Some(spec) = flags.get("signal") {
        return send_signal(spec);
    }
    if flags.is_true("test_config") && flags.get("config").is_none() {
        return fatal("must specify [-c, --config] option to check configuration file syntax");
    }
    let opts = match load_options(&flags) {
        Ok(opts) => opts,
        Err(e) => return fatal(e),
    };
    if flags.is_true("test_config") {
        println!(
            "rnats-server: configuration file {} is valid",
            flags.get("config").unwrap_or_default()
        );
        return ExitCode::SUCCESS;
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
    runtime.block_on(run(opts, flags))
}

/// Builds the options from the config file and the flags, as at start (also for reloads).
fn load_options(flags: &Flags) -> Result<Options, Box<dyn std::error::Error>> {
    let mut opts = Options::default();
    if let Some(path) = flags.get("config") {
        config::apply_file(std::path::Path::new(path), &mut opts)?;
    }
    flags.apply(&mut opts)?;
    opts.validate()?;
    Ok(opts)
}

async fn run(opts: Options, flags: Flags) -> ExitCode {
    use tokio::signal::unix::{SignalKind, signal};
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
    let streams = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined1()),
        signal(SignalKind::user_defined2()),
    );
    let (Ok(mut int), Ok(mut term), Ok(mut hup), Ok(mut usr1), Ok(mut usr2)) = streams else {
        return fatal("could not install signal handlers");
    };
    loop {
        tokio::select! {
            _ = int.recv() => {
                tracing::info!("Trapped \"interrupt\" signal");
                break;
            }
            _ = term.recv() => {
                tracing::info!("Trapped \"terminated\" signal");
                // Lame duck mode runs to its end; SIGINT still stops at once.
                if !server.in_lame_duck() {
                    break;
                }
            }
            _ = hup.recv() => {
                tracing::info!("Trapped \"hangup\" signal");
                match load_options(&flags) {
                    Ok(new) => {
                        let _ = server.reload(new);
                    }
                    Err(e) => tracing::error!("Failed to reload server configuration: {e}"),
                }
            }
            _ = usr1.recv() => {
                tracing::info!("Trapped \"user defined signal 1\" signal");
                if let Err(e) = log::reopen() {
                    tracing::error!("Could not reopen log file: {e}");
                }
            }
            _ = usr2.recv() => {
                tracing::info!("Trapped \"user defined signal 2\" signal");
                server.lame_duck();
            }
            () = server.stopped() => break,
        }
    }
    server.shutdown(Duration::from_secs(5)).await;
    if let Some(path) = &pid_file {
        let _ = std::fs::remove_file(path);
    }
    ExitCode::SUCCESS
}

/// `--signal cmd[=pid|pidfile]`: sends a signal to a running rnats-server.
fn send_signal(spec: &str) -> ExitCode {
    let (cmd, target) = match spec.split_once('=') {
        Some((c, t)) => (c, Some(t)),
        None => (spec, None),
    };
    let sig = match cmd {
        "stop" => "KILL",
        "quit" => "INT",
        "term" => "TERM",
        "reload" => "HUP",
        "reopen" => "USR1",
        "ldm" => "USR2",
        _ => return fatal(format!("unknown signal \"{cmd}\"")),
    };
    let pid = match target {
        Some(t) if t.chars().all(|c| c.is_ascii_digit()) => t.to_string(),
        Some(path) => match std::fs::read_to_string(path) {
            Ok(p) => p.trim().to_string(),
            Err(e) => return fatal(format!("could not read pid file {path}: {e}")),
        },
        None => {
            let out = std::process::Command::new("pgrep")
                .args(["-x", "rnats-server"])
                .output();
            let pids: Vec<String> = out
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            let own = std::process::id().to_string();
            let pids: Vec<String> = pids.into_iter().filter(|p| *p != own).collect();
            match pids.as_slice() {
                [one] => one.clone(),
                [] => return fatal("no rnats-server process running"),
                many => {
                    return fatal(format!(
                        "multiple rnats-server processes running:\n{}",
                        many.join("\n")
                    ));
                }
            }
        }
    };
    match std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(&pid)
        .status()
    {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        _ => fatal(format!("could not send signal to process {pid}")),
    }
}
