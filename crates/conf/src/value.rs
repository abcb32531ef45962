//! The parsed value tree: [`Value`], positioned as [`Spanned`], collected in [`Map`]s.

use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use crate::ConfError;

/// A configuration value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Quoted, unquoted or `( … )` block text; also bcrypt hashes and durations like `10s`.
    String(String),
    /// An integer, unit suffixes already applied (`8MB` is 8388608).
    Integer(i64),
    /// A float such as `1.5`.
    Float(f64),
    /// `true`/`false`/`yes`/`no`/`on`/`off`.
    Bool(bool),
    /// A Zulu datetime as written, e.g. `2016-05-04T18:53:41Z` (already checked for validity).
    DateTime(String),
    /// `[ … ]`.
    Array(Vec<Spanned>),
    /// `{ … }`.
    Map(Map),
}

impl Value {
    /// The text of a [`Value::String`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number of a [`Value::Integer`].
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// A [`Value::Float`], or a [`Value::Integer`] widened to a float (`timeout: 2` is a number
    /// of seconds just like `timeout: 2.5`).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Integer(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// The flag of a [`Value::Bool`].
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The items of a [`Value::Array`].
    pub fn as_array(&self) -> Option<&[Spanned]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The entries of a [`Value::Map`].
    pub fn as_map(&self) -> Option<&Map> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// A short name of the kind of value, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "string",
            Value::Integer(_) => "integer",
            Value::Float(_) => "float",
            Value::Bool(_) => "boolean",
            Value::DateTime(_) => "datetime",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
        }
    }
}

/// A value with the place it was written.
///
/// For a value that came from a `$variable`, the position is that of the reference.
/// Derefs to [`Value`], so `spanned.as_str()` works directly.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned {
    pub value: Value,
    /// 1-based line.
    pub line: u32,
    /// 1-based column in characters.
    pub col: u32,
    /// The file the value was written in (an included file for included entries);
    /// `None` for text given to [`crate::parse_str`].
    pub file: Option<Arc<Path>>,
}

impl Spanned {
    /// A value at `line`:`col` with no file.
    pub fn new(value: Value, line: u32, col: u32) -> Self {
        Spanned {
            value,
            line,
            col,
            file: None,
        }
    }

    /// An error located at this value.
    pub fn error(&self, message: impl Into<String>) -> ConfError {
        ConfError::new(self.file.as_deref(), self.line, self.col, message)
    }

    /// Moves this value and everything inside it to one place (used for values that came
    /// from the environment, whose own positions mean nothing in the file).
    pub(crate) fn relocate(&mut self, line: u32, col: u32, file: &Option<Arc<Path>>) {
        self.line = line;
        self.col = col;
        self.file.clone_from(file);
        match &mut self.value {
            Value::Array(items) => items.iter_mut().for_each(|v| v.relocate(line, col, file)),
            Value::Map(m) => m.entries.iter_mut().for_each(|e| {
                e.line = line;
                e.col = col;
                e.value.relocate(line, col, file);
            }),
            _ => {}
        }
    }

    /// Number of values in this tree, to bound what variable expansion may copy.
    pub(crate) fn node_count(&self) -> usize {
        1 + match &self.value {
            Value::Array(items) => items.iter().map(Spanned::node_count).sum(),
            Value::Map(m) => m.entries.iter().map(|e| e.value.node_count()).sum(),
            _ => 0,
        }
    }
}

impl Deref for Spanned {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.value
    }
}

/// One `key: value` of a [`Map`].
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The key as written (quotes removed, case kept).
    pub key: String,
    /// Position of the key (1-based line and character column).
    pub line: u32,
    pub col: u32,
    pub value: Spanned,
    /// Set when a later `$key` reference read this entry. nats-server does not report
    /// "unknown field" for such keys: they were defined to be used as variables.
    pub used_as_variable: bool,
}

impl Entry {
    /// An error located at this entry's key (what nats-server reports for unknown or
    /// invalid fields).
    pub fn error(&self, message: impl Into<String>) -> ConfError {
        ConfError::new(self.value.file.as_deref(), self.line, self.col, message)
    }
}

/// The entries of a map, in the order they were (last) set.
///
/// Keys are kept as written. Setting a key again replaces the earlier entry (nats-server:
/// the later one wins) and moves it to the end. Lookups are linear: configuration maps are
/// small.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Map {
    entries: Vec<Entry>,
}

impl Map {
    pub fn new() -> Self {
        Map::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sets `key` to `value`, its key position taken from the value.
    pub fn insert(&mut self, key: impl Into<String>, value: Spanned) {
        let (line, col) = (value.line, value.col);
        self.insert_entry(Entry {
            key: key.into(),
            line,
            col,
            value,
            used_as_variable: false,
        });
    }

    /// Adds an entry, replacing one with exactly the same key.
    pub fn insert_entry(&mut self, entry: Entry) {
        self.entries.retain(|e| e.key != entry.key);
        self.entries.push(entry);
    }

    /// The value of exactly `key`.
    pub fn get(&self, key: &str) -> Option<&Spanned> {
        self.entry(key).map(|e| &e.value)
    }

    /// The value of `key` ignoring case (nats-server matches option names that way). When
    /// several spellings are present, the one set last wins.
    pub fn get_ci(&self, key: &str) -> Option<&Spanned> {
        self.entry_ci(key).map(|e| &e.value)
    }

    /// The entry of exactly `key`.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// The entry of `key` ignoring case; the one set last when several match.
    pub fn entry_ci(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| eq_ci(&e.key, key))
    }

    pub(crate) fn entry_mut(&mut self, key: &str) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.key == key)
    }

    /// The entries in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Entry> {
        self.entries.iter()
    }

    /// The keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.key.as_str())
    }
}

impl<'a> IntoIterator for &'a Map {
    type Item = &'a Entry;
    type IntoIter = std::slice::Iter<'a, Entry>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter()
    }
}

impl IntoIterator for Map {
    type Item = Entry;
    type IntoIter = std::vec::IntoIter<Entry>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

/// Unicode case-insensitive equality without allocating.
fn eq_ci(a: &str, b: &str) -> bool {
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(i: i64) -> Spanned {
        Spanned::new(Value::Integer(i), 1, 1)
    }

    #[test]
    fn later_key_wins_and_moves_last() {
        let mut m = Map::new();
        m.insert("a", int(1));
        m.insert("b", int(2));
        m.insert("a", int(3));
        assert_eq!(m.len(), 2);
        assert_eq!(m.keys().collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(m.get("a").and_then(|v| v.as_i64()), Some(3));
    }

    #[test]
    fn case_insensitive_lookup_keeps_spelling() {
        let mut m = Map::new();
        m.insert("Max_Payload", int(1));
        assert!(m.get("max_payload").is_none());
        assert_eq!(m.get_ci("MAX_PAYLOAD").and_then(|v| v.as_i64()), Some(1));
        assert_eq!(
            m.entry_ci("max_payload").map(|e| e.key.as_str()),
            Some("Max_Payload")
        );
        m.insert("max_payload", int(2));
        assert_eq!(m.get_ci("Max_Payload").and_then(|v| v.as_i64()), Some(2));
        assert!(eq_ci("ÄB", "äb"));
    }

    #[test]
    fn accessors() {
        assert_eq!(Value::String("x".into()).as_str(), Some("x"));
        assert_eq!(Value::Integer(1).as_str(), None);
        assert_eq!(Value::Integer(2).as_f64(), Some(2.0));
        assert_eq!(Value::Float(2.5).as_f64(), Some(2.5));
        assert_eq!(Value::Float(2.5).as_i64(), None);
        assert_eq!(Value::Bool(true).as_bool(), Some(true));
        let arr = Value::Array(vec![int(1)]);
        assert_eq!(arr.as_array().map(<[Spanned]>::len), Some(1));
        assert!(Value::Map(Map::new()).as_map().is_some());
        assert_eq!(arr.type_name(), "array");
        let s = int(5);
        assert_eq!(s.as_i64(), Some(5), "Spanned derefs to Value");
        assert_eq!(s.error("bad").to_string(), "1:1: bad");
    }
}
