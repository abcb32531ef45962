//! nats-server's log format: `[pid] YYYY/MM/DD HH:MM:SS.micro [LVL] message`, with -D
//! enabling debug and -V trace independently (trace does not imply debug).

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use parking_lot::Mutex;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

struct NatsFormat {
    pid: u32,
    logtime: bool,
}

fn level_label(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERR",
        Level::WARN => "WRN",
        Level::INFO => "INF",
        Level::DEBUG => "DBG",
        Level::TRACE => "TRC",
    }
}

impl<S, N> FormatEvent<S, N> for NatsFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "[{}] ", self.pid)?;
        if self.logtime {
            write!(writer, "{} ", rnats_time::log_timestamp(SystemTime::now()))?;
        }
        write!(writer, "[{}] ", level_label(event.metadata().level()))?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

static DEBUG: AtomicBool = AtomicBool::new(false);
static TRACE: AtomicBool = AtomicBool::new(false);
static LOG_FILE: OnceLock<(PathBuf, Arc<Mutex<std::fs::File>>)> = OnceLock::new();
static QUIET: OnceLock<Vec<String>> = OnceLock::new();

/// Targets (module path prefixes, e.g. a library's crate name) logged at warning and error
/// level only, whatever debug and trace say. Set once, before [`init`].
pub fn quiet_targets(targets: Vec<String>) {
    let _ = QUIET.set(targets);
}

fn quiet(target: &str) -> bool {
    QUIET
        .get()
        .is_some_and(|q| q.iter().any(|p| target.starts_with(p.as_str())))
}

/// Switches debug and trace logging (configuration reload).
pub fn set_levels(debug: bool, trace: bool) {
    DEBUG.store(debug, Ordering::Relaxed);
    TRACE.store(trace, Ordering::Relaxed);
    tracing::callsite::rebuild_interest_cache();
}

/// Reopens the log file (SIGUSR1, after logrotate moved it away).
pub fn reopen() -> std::io::Result<()> {
    if let Some((path, file)) = LOG_FILE.get() {
        *file.lock() = OpenOptions::new().create(true).append(true).open(path)?;
    }
    Ok(())
}

#[derive(Clone)]
struct FileWriter(Arc<Mutex<std::fs::File>>);

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().flush()
    }
}

/// Installs the global logger. Errors only when the log file cannot be opened.
pub fn init(debug: bool, trace: bool, logtime: bool, file: Option<&Path>) -> std::io::Result<()> {
    DEBUG.store(debug, Ordering::Relaxed);
    TRACE.store(trace, Ordering::Relaxed);
    let filter = tracing_subscriber::filter::filter_fn(|meta| match *meta.level() {
        Level::TRACE => TRACE.load(Ordering::Relaxed) && !quiet(meta.target()),
        Level::DEBUG => DEBUG.load(Ordering::Relaxed) && !quiet(meta.target()),
        Level::INFO => !quiet(meta.target()),
        _ => true,
    });
    let format = NatsFormat {
        pid: std::process::id(),
        logtime,
    };
    let layer = tracing_subscriber::fmt::layer().event_format(format);
    match file {
        Some(path) => {
            let f = OpenOptions::new().create(true).append(true).open(path)?;
            let file = Arc::new(Mutex::new(f));
            let _ = LOG_FILE.set((path.to_path_buf(), file.clone()));
            let writer = FileWriter(file);
            let layer = layer.with_writer(move || writer.clone()).with_ansi(false);
            let _ = tracing_subscriber::registry()
                .with(layer.with_filter(filter))
                .try_init();
        }
        None => {
            let layer = layer.with_writer(std::io::stderr).with_ansi(false);
            let _ = tracing_subscriber::registry()
                .with(layer.with_filter(filter))
                .try_init();
        }
    }
    Ok(())
}
