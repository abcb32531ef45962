//! A command line parsed as Go's `flag` package does, for both binaries (the core server and
//! the streaming server, which mixes its own flags with the core server's):
//!
//! * `-name` and `--name` are the same flag; a value comes as `-p 4222` or `-p=4222`;
//! * a boolean flag takes no separate value (`-D`, `-D=false`), in Go's spellings;
//! * parsing stops at `--` (what follows is ignored) or at the first argument that is not a
//!   flag, which is handed back to the caller (nats-server takes `version` and `help` there).
//!
//! Flags are looked up in the tables given, in order: the first table that knows a name takes
//! it, and what each table took comes back separately, in command line order.

/// The flags of one program: canonical name and the names each answers to.
pub struct FlagTable {
    pub values: &'static [(&'static str, &'static [&'static str])],
    pub bools: &'static [(&'static str, &'static [&'static str])],
}

impl FlagTable {
    /// The canonical name `name` stands for, and whether that flag takes a value.
    pub fn lookup(&self, name: &str) -> Option<(&'static str, bool)> {
        let find = |list: &[(&'static str, &'static [&'static str])]| {
            list.iter()
                .find(|(_, names)| names.contains(&name))
                .map(|(canon, _)| *canon)
        };
        find(self.bools)
            .map(|canon| (canon, false))
            .or_else(|| find(self.values).map(|canon| (canon, true)))
    }
}

/// The flags one table took: canonical name → value (booleans as `true`/`false`), in order.
#[derive(Debug, Default)]
pub struct FlagValues {
    set: Vec<(&'static str, String)>,
}

impl FlagValues {
    /// The last value given for `canon`.
    pub fn get(&self, canon: &str) -> Option<&str> {
        self.set
            .iter()
            .rev()
            .find(|(n, _)| *n == canon)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_true(&self, canon: &str) -> bool {
        self.get(canon) == Some("true")
    }

    /// Every flag given, in command line order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.set.iter().map(|(n, v)| (*n, v.as_str()))
    }

    pub fn push(&mut self, canon: &'static str, value: impl Into<String>) {
        self.set.push((canon, value.into()));
    }
}

/// What is wrong with a command line, in Go's words.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    #[error("flag provided but not defined: -{0}")]
    Undefined(String),
    #[error("flag needs an argument: -{0}")]
    NeedsArgument(String),
    /// A boolean flag's inline value is none of Go's spellings.
    #[error("invalid boolean value \"{value}\" for -{flag}: parse error")]
    InvalidBool { flag: String, value: String },
    /// A value the program could not take.
    #[error("invalid value \"{value}\" for flag -{flag}: parse error")]
    InvalidValue { flag: String, value: String },
    #[error("unrecognized command: \"{0}\"")]
    UnrecognizedCommand(String),
    #[error("invalid cluster URL \"{0}\"")]
    InvalidClusterUrl(String),
    #[error("solicited routes require cluster capabilities, e.g. --cluster")]
    RoutesWithoutCluster,
    /// A flag for a feature this build does not have: refused rather than ignored, so that
    /// nobody believes it is on. Worded as the configuration file's refusal.
    #[error("-{flag}: \"{feature}\" is not supported by this rnats-server build yet")]
    Unsupported { flag: String, feature: &'static str },
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A parsed command line: what each table took, and the first argument that is not a flag.
#[derive(Debug)]
pub struct Parsed<const N: usize> {
    pub values: [FlagValues; N],
    pub first_arg: Option<String>,
}

/// Parses `args` (without the program name) against `tables`.
pub fn parse<const N: usize, I>(tables: [&FlagTable; N], args: I) -> Result<Parsed<N>, FlagError>
where
    I: IntoIterator<Item = String>,
{
    let mut values: [FlagValues; N] = std::array::from_fn(|_| FlagValues::default());
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        let Some(stripped) = arg.strip_prefix('-').filter(|s| !s.is_empty()) else {
            return Ok(Parsed {
                values,
                first_arg: Some(arg),
            });
        };
        let stripped = stripped.strip_prefix('-').unwrap_or(stripped);
        let (name, inline) = match stripped.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (stripped, None),
        };
        let Some((table, (canon, takes_value))) = tables
            .iter()
            .enumerate()
            .find_map(|(i, t)| t.lookup(name).map(|found| (i, found)))
        else {
            return Err(FlagError::Undefined(name.into()));
        };
        let value = match (takes_value, inline) {
            (false, None) => "true".to_string(),
            (false, Some(v)) => parse_go_bool(v)
                .ok_or_else(|| FlagError::InvalidBool {
                    flag: name.into(),
                    value: v.into(),
                })?
                .to_string(),
            (true, Some(v)) => v.to_string(),
            (true, None) => args
                .next()
                .ok_or_else(|| FlagError::NeedsArgument(name.into()))?,
        };
        values[table].push(canon, value);
    }
    Ok(Parsed {
        values,
        first_arg: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: FlagTable = FlagTable {
        values: &[("port", &["p", "port"]), ("http_port", &["m", "http_port"])],
        bools: &[("debug", &["D", "debug"])],
    };
    const B: FlagTable = FlagTable {
        values: &[("http_port", &["m"]), ("addr", &["a"])],
        bools: &[("trace", &["V"])],
    };

    fn parse2(args: &[&str]) -> Result<Parsed<2>, FlagError> {
        parse([&A, &B], args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn the_first_table_that_knows_a_flag_takes_it() {
        let p = parse2(&["-m", "1", "--a=h", "-V", "--debug=f", "-p", "-1"]).unwrap();
        assert_eq!(p.values[0].get("http_port"), Some("1"));
        assert_eq!(p.values[1].get("http_port"), None);
        assert_eq!(p.values[1].get("addr"), Some("h"));
        assert!(p.values[1].is_true("trace"));
        assert_eq!(p.values[0].get("debug"), Some("false"));
        assert_eq!(p.values[0].get("port"), Some("-1"));
        assert_eq!(p.first_arg, None);
    }

    #[test]
    fn stops_at_double_dash_or_the_first_argument() {
        let p = parse2(&["-D", "--", "-x"]).unwrap();
        assert!(p.values[0].is_true("debug"));
        let p = parse2(&["-D", "version", "-x"]).unwrap();
        assert_eq!(p.first_arg.as_deref(), Some("version"));
        assert_eq!(parse2(&["-"]).unwrap().first_arg.as_deref(), Some("-"));
    }

    #[test]
    fn errors_in_gos_words() {
        let err = |args: &[&str]| parse2(args).unwrap_err().to_string();
        assert_eq!(err(&["-x"]), "flag provided but not defined: -x");
        assert_eq!(err(&["--p"]), "flag needs an argument: -p");
        assert_eq!(
            err(&["-D=maybe"]),
            "invalid boolean value \"maybe\" for -D: parse error"
        );
    }
}
