//! Recursive-descent parser building the [`Map`] tree, resolving `$variables` and
//! `include`s as it goes (both depend on what has been parsed so far, as in nats-server).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::ConfError;
use crate::lex::{Lexer, Scalar, show};
use crate::value::{Entry, Map, Spanned, Value};

/// Looks up an environment variable.
pub type EnvLookup<'e> = dyn Fn(&str) -> Option<String> + 'e;

/// Nesting of maps, arrays, includes and environment variables together. Keeps recursion
/// (and so the stack) bounded on hostile input.
const MAX_DEPTH: usize = 128;

/// Values that variable expansion may copy in one parse, so `b: [$a,$a]`, `c: [$b,$b]`, …
/// cannot blow up memory.
const MAX_EXPANSION: usize = 1 << 20;

/// State shared by a parse and the parses it starts for includes and environment values.
#[derive(Default)]
struct Shared {
    depth: usize,
    /// Environment variables being resolved, to detect `A=$B`, `B=$A`.
    env_stack: Vec<String>,
    /// Files being parsed, to detect include cycles.
    include_stack: Vec<PathBuf>,
    expanded: usize,
}

struct Parser<'a, 's> {
    lx: Lexer<'a>,
    /// Where relative include paths start.
    base_dir: PathBuf,
    env: &'a EnvLookup<'a>,
    /// Maps under construction, outermost first: where `$NAME` is looked up.
    scopes: Vec<Map>,
    shared: &'s mut Shared,
}

/// Parses a whole document. `file` names it in positions and errors; includes resolve
/// against `base_dir`.
pub(crate) fn parse_document(
    text: &str,
    file: Option<&Path>,
    base_dir: PathBuf,
    env: &EnvLookup<'_>,
) -> Result<Map, ConfError> {
    let mut shared = Shared::default();
    if let Some(f) = file {
        shared.include_stack.push(canonical(f));
    }
    Parser::new(text, file.map(Arc::from), base_dir, env, &mut shared).document()
}

fn canonical(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

impl<'a, 's> Parser<'a, 's> {
    fn new(
        text: &'a str,
        file: Option<Arc<Path>>,
        base_dir: PathBuf,
        env: &'a EnvLookup<'a>,
        shared: &'s mut Shared,
    ) -> Self {
        Parser {
            lx: Lexer::new(text, file),
            base_dir,
            env,
            scopes: Vec::new(),
            shared,
        }
    }

    fn document(&mut self) -> Result<Map, ConfError> {
        self.scopes.push(Map::new());
        self.entries(true)?;
        Ok(self.scopes.pop().unwrap_or_default())
    }

    /// Counts one more level of nesting at the current position.
    fn enter(&mut self) -> Result<(), ConfError> {
        self.shared.depth += 1;
        if self.shared.depth > MAX_DEPTH {
            return Err(self
                .lx
                .error_here(format!("Nesting deeper than {MAX_DEPTH} levels.")));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.shared.depth = self.shared.depth.saturating_sub(1);
    }

    fn scope(&mut self) -> &mut Map {
        if self.scopes.is_empty() {
            self.scopes.push(Map::new());
        }
        let last = self.scopes.len() - 1;
        &mut self.scopes[last]
    }

    /// Entries up to the end of the file (`top`) or up to and including the `}` of a map.
    /// At the top level, `{` and `}` around entries are allowed and ignored.
    fn entries(&mut self, top: bool) -> Result<(), ConfError> {
        let mut braces = 0usize;
        loop {
            self.lx.skip_trivia();
            match self.lx.peek() {
                None if top && braces == 0 => return Ok(()),
                None if top => return Err(self.lx.error_here("Unexpected EOF, expected '}'.")),
                None => return Err(self.lx.error_here("Unexpected EOF processing map.")),
                Some('}') if top && braces == 0 => {
                    return Err(self.lx.error_here("Unexpected '}' at the top level."));
                }
                Some('}') => {
                    self.lx.bump();
                    if !top {
                        return Ok(());
                    }
                    braces -= 1;
                    continue;
                }
                Some('{') if top => {
                    self.lx.bump();
                    braces += 1;
                    continue;
                }
                Some(c @ (':' | '=')) => {
                    return Err(self
                        .lx
                        .error_here(format!("Unexpected key separator '{c}'.")));
                }
                Some(']') if !top => {
                    return Err(self
                        .lx
                        .error_here("Unexpected array end ']' processing map."));
                }
                Some(_) => {}
            }
            self.entry()?;
            self.entry_end(top)?;
        }
    }

    /// After an entry: blanks, maybe a comment, then a newline, `;`, `,`, or (left for the
    /// caller) `}` or end of input.
    fn entry_end(&mut self, top: bool) -> Result<(), ConfError> {
        self.lx.skip_blanks();
        if self.lx.at_comment() {
            self.lx.skip_comment();
        }
        match self.lx.peek() {
            None | Some('}') => Ok(()),
            Some('\n' | '\r' | ';' | ',') => {
                self.lx.bump();
                Ok(())
            }
            Some(c) if top => Err(self.lx.error_here(format!(
                "Expected a top-level value to end with a new line, comment or EOF, but got \
                 '{}' instead.",
                show(c)
            ))),
            Some(c) => Err(self.lx.error_here(format!(
                "Expected a map value terminator ',' or a map terminator '}}', but got '{}' \
                 instead.",
                show(c)
            ))),
        }
    }

    /// `key [=:] value`, `key value`, `key { … }` or `include path`.
    fn entry(&mut self) -> Result<(), ConfError> {
        let key = self.lx.key()?;
        if !key.quoted
            && key.text.eq_ignore_ascii_case("include")
            && self.lx.peek().is_some_and(char::is_whitespace)
        {
            self.lx.skip_blanks();
            // `include: x` / `include = x` is an ordinary key named include.
            if !matches!(self.lx.peek(), Some(':' | '=')) {
                let path = self.lx.include_path()?;
                return self.include(&path, key.line, key.col);
            }
        }
        // nats-server lets the value (or the `{` of a block) start on a later line when
        // there is no separator.
        self.lx.skip_whitespace();
        if matches!(self.lx.peek(), Some(':' | '=')) {
            self.lx.bump();
            self.lx.skip_blanks();
        }
        let value = self.value()?;
        self.scope().insert_entry(Entry {
            key: key.text,
            line: key.line,
            col: key.col,
            value,
            used_as_variable: false,
        });
        Ok(())
    }

    fn value(&mut self) -> Result<Spanned, ConfError> {
        let (line, col) = self.lx.position();
        let value = match self.lx.peek() {
            None => return Err(self.lx.error_here("Unexpected EOF, expected a value.")),
            Some('\n' | '\r') => {
                return Err(self.lx.error_here("Expected value but found new line"));
            }
            Some('[') => self.array()?,
            Some('{') => self.map()?,
            Some('"') => Value::String(self.lx.double_quoted()?),
            Some('\'') => Value::String(self.lx.single_quoted()?),
            Some('(') => Value::String(self.lx.block()?),
            Some(_) => match self.lx.unquoted()? {
                Scalar::Variable(name) => return self.variable(&name, line, col),
                Scalar::Str(s) => Value::String(s),
                Scalar::Int(i) => Value::Integer(i),
                Scalar::Float(f) => Value::Float(f),
                Scalar::Bool(b) => Value::Bool(b),
                Scalar::DateTime(d) => Value::DateTime(d),
            },
        };
        Ok(Spanned {
            value,
            line,
            col,
            file: self.lx.file.clone(),
        })
    }

    /// `{ entries }`, at the `{`. The map is a scope for variables while it is parsed.
    fn map(&mut self) -> Result<Value, ConfError> {
        self.lx.bump();
        self.enter()?;
        self.scopes.push(Map::new());
        let result = self.entries(false);
        let map = self.scopes.pop().unwrap_or_default();
        result?;
        self.leave();
        Ok(Value::Map(map))
    }

    /// `[ items ]`, at the `[`: items separated by commas and/or newlines, trailing comma
    /// allowed, comments allowed between items.
    fn array(&mut self) -> Result<Value, ConfError> {
        self.lx.bump();
        self.enter()?;
        let mut items = Vec::new();
        loop {
            self.lx.skip_trivia();
            match self.lx.peek() {
                None => return Err(self.lx.error_here("Unexpected EOF processing array.")),
                Some(']') => {
                    self.lx.bump();
                    break;
                }
                Some(',') => {
                    return Err(self.lx.error_here("Unexpected array value terminator ','."));
                }
                Some(_) => {}
            }
            items.push(self.value()?);
            self.lx.skip_blanks();
            if self.lx.at_comment() {
                self.lx.skip_comment();
            }
            match self.lx.peek() {
                Some(',' | '\n' | '\r') => {
                    self.lx.bump();
                }
                Some(']') => {
                    self.lx.bump();
                    break;
                }
                None => return Err(self.lx.error_here("Unexpected EOF processing array.")),
                Some(c) => {
                    return Err(self.lx.error_here(format!(
                        "Expected an array value terminator ',' or an array terminator ']', \
                         but got '{}' instead.",
                        show(c)
                    )));
                }
            }
        }
        self.leave();
        Ok(Value::Array(items))
    }

    /// Resolves `$name` found at `line`:`col`: keys already set in the enclosing maps,
    /// innermost first, then the environment.
    fn variable(&mut self, name: &str, line: u32, col: u32) -> Result<Spanned, ConfError> {
        let mut found = None;
        for scope in self.scopes.iter_mut().rev() {
            if let Some(entry) = scope.entry_mut(name) {
                entry.used_as_variable = true;
                found = Some(&entry.value);
                break;
            }
        }
        if let Some(value) = found {
            self.shared.expanded += value.node_count();
            if self.shared.expanded > MAX_EXPANSION {
                return Err(self
                    .lx
                    .error_at(line, col, "Variable expansion is too large."));
            }
            let mut value = value.clone();
            value.line = line;
            value.col = col;
            value.file.clone_from(&self.lx.file);
            return Ok(value);
        }
        self.env_variable(name, line, col)
    }

    /// An environment variable, its value parsed as a configuration value (so `4222` is an
    /// integer and `$OTHER` inside it is resolved in turn).
    fn env_variable(&mut self, name: &str, line: u32, col: u32) -> Result<Spanned, ConfError> {
        // Names std::env cannot hold are never set.
        let valid = !name.is_empty() && !name.contains(['=', '\0']);
        let text = if valid { (self.env)(name) } else { None };
        let Some(text) = text else {
            return Err(self.lx.error_at(
                line,
                col,
                format!("variable reference for '{name}' on line {line} can not be found"),
            ));
        };
        if self.shared.env_stack.iter().any(|n| n == name) {
            return Err(self.lx.error_at(
                line,
                col,
                format!("variable reference cycle for '{name}'"),
            ));
        }
        // Every environment read costs, so chains like X="[$Y,$Y]" stay bounded.
        self.shared.expanded += text.len() + 1;
        if self.shared.expanded > MAX_EXPANSION {
            return Err(self
                .lx
                .error_at(line, col, "Variable expansion is too large."));
        }
        self.enter()?;
        self.shared.env_stack.push(name.to_string());
        let result =
            Parser::new(&text, None, self.base_dir.clone(), self.env, self.shared).env_value();
        self.shared.env_stack.pop();
        self.leave();
        match result {
            Ok(mut value) => {
                value.relocate(line, col, &self.lx.file);
                Ok(value)
            }
            Err(e) => Err(self.lx.error_at(
                line,
                col,
                format!(
                    "variable reference for '{name}' on line {line} could not be parsed: {}",
                    e.message
                ),
            )),
        }
    }

    /// The whole text as one value; blank text is the empty string.
    fn env_value(&mut self) -> Result<Spanned, ConfError> {
        // Like nats-server, which parses `pk=<value>` in a fresh document: no outer keys.
        self.scopes.push(Map::new());
        self.lx.skip_blanks();
        if self.lx.peek().is_none() {
            return Ok(Spanned::new(Value::String(String::new()), 1, 1));
        }
        let value = self.value()?;
        self.lx.skip_trivia();
        match self.lx.peek() {
            None => Ok(value),
            Some(c) => Err(self
                .lx
                .error_here(format!("Unexpected '{}' after the value.", show(c)))),
        }
    }

    /// Parses `path` (relative to this file's directory) as a document of its own and
    /// merges its entries into the current map.
    fn include(&mut self, path: &str, line: u32, col: u32) -> Result<(), ConfError> {
        let full = self.base_dir.join(path);
        let canon = canonical(&full);
        if self.shared.include_stack.contains(&canon) {
            return Err(self
                .lx
                .error_at(line, col, format!("Include cycle through '{path}'.")));
        }
        let open_error = |e: String| format!("error opening include file '{path}': {e}");
        // Only regular files: a device or pipe could block or never end.
        let text = match fs::metadata(&full) {
            Ok(m) if m.is_file() => fs::read_to_string(&full),
            Ok(_) => {
                return Err(self
                    .lx
                    .error_at(line, col, open_error("not a regular file".into())));
            }
            Err(e) => Err(e),
        }
        .map_err(|e| self.lx.error_at(line, col, open_error(e.to_string())))?;

        self.enter()?;
        self.shared.include_stack.push(canon);
        let base_dir = full.parent().map(Path::to_path_buf).unwrap_or_default();
        let file: Arc<Path> = Arc::from(full.as_path());
        let result = Parser::new(&text, Some(file), base_dir, self.env, self.shared).document();
        self.shared.include_stack.pop();
        self.leave();
        let scope = self.scope();
        for entry in result? {
            scope.insert_entry(entry);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
