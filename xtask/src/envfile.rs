//! Reading and writing the plain `KEY=VALUE` env files under `.trellis/`
//! (one variable per line, no quotes, no `export`, no comments).

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use crate::sys;

/// Parses `KEY=VALUE` lines; blank lines and `#` comments are skipped.
pub fn parse(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// The variables in `path`, or an empty list if it does not exist.
pub fn read(path: &Path) -> Result<Vec<(String, String)>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(parse(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("could not read {}", path.display())),
    }
}

/// Writes `vars` to `path` as `KEY=VALUE` lines, mode 600.
pub fn write(path: &Path, vars: &[(&str, String)]) -> Result<()> {
    let text: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    sys::write_private(path, &text)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_plain_lines_and_skips_comments() {
        let vars = parse("# c\nA=1\n\nB=postgres://u:p@h:1/d?x=y\n");
        assert_eq!(
            vars,
            vec![
                ("A".to_owned(), "1".to_owned()),
                ("B".to_owned(), "postgres://u:p@h:1/d?x=y".to_owned()),
            ]
        );
    }
}
