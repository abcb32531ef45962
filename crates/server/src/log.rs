//! nats-server's log format: `[pid] YYYY/MM/DD HH:MM:SS.micro [LVL] message`, with -D
//! enabling debug and -V trace independently (trace does not imply debug).

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

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

/// Formats `t` as `YYYY/MM/DD HH:MM:SS.micro` in UTC (the clock this server logs in).
pub fn format_time(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let (y, mo, day) = civil_from_days((secs / 86_400) as i64);
    format!(
        "{y:04}/{mo:02}/{day:02} {h:02}:{m:02}:{s:02}.{:06}",
        d.subsec_micros()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's method).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
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
            write!(writer, "{} ", format_time(SystemTime::now()))?;
        }
        write!(writer, "[{}] ", level_label(event.metadata().level()))?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

static DEBUG: AtomicBool = AtomicBool::new(false);
static TRACE: AtomicBool = AtomicBool::new(false);
static LOG_FILE: OnceLock<(PathBuf, Arc<Mutex<std::fs::File>>)> = OnceLock::new();

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
        Level::TRACE => TRACE.load(Ordering::Relaxed),
        Level::DEBUG => DEBUG.load(Ordering::Relaxed),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_418), (2025, 11, 26));
        let t = UNIX_EPOCH + Duration::from_micros(1_764_115_430_123_456);
        assert_eq!(format_time(t), "2025/11/26 00:03:50.123456");
    }
}
