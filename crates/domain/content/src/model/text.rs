//! Shared text validation for names, titles and long bodies, so every entity trims and
//! bounds its strings the same way (and the database never sees control characters
//! where a single line is expected).

use trellis_kernel::InvalidValue;

/// A single line: trimmed, 1 to `max` characters, no control characters.
pub(crate) fn line(field: &'static str, s: &str, max: usize) -> Result<String, InvalidValue> {
    let t = s.trim();
    if t.is_empty() || t.chars().count() > max || t.chars().any(char::is_control) {
        return Err(InvalidValue::new(
            field,
            format!("must be 1 to {max} characters on one line"),
        ));
    }
    Ok(t.to_owned())
}

/// A body of text: trimmed, 1 to `max` characters; newlines and tabs are allowed,
/// other control characters are not.
pub(crate) fn body(field: &'static str, s: &str, max: usize) -> Result<String, InvalidValue> {
    let t = s.trim();
    if t.is_empty()
        || t.chars().count() > max
        || t.chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(InvalidValue::new(
            field,
            format!("must be 1 to {max} characters"),
        ));
    }
    Ok(t.to_owned())
}

/// An optional line: `None` and blank both mean "not set".
pub(crate) fn opt_line(
    field: &'static str,
    s: Option<&str>,
    max: usize,
) -> Result<Option<String>, InvalidValue> {
    match s.map(str::trim) {
        None | Some("") => Ok(None),
        Some(t) => line(field, t, max).map(Some),
    }
}

/// An optional body: `None` and blank both mean "not set".
pub(crate) fn opt_body(
    field: &'static str,
    s: Option<&str>,
    max: usize,
) -> Result<Option<String>, InvalidValue> {
    match s.map(str::trim) {
        None | Some("") => Ok(None),
        Some(t) => body(field, t, max).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_trimmed_and_may_not_break() {
        assert_eq!(line("name", "  Ada ", 10).unwrap(), "Ada");
        assert!(line("name", "a\nb", 10).is_err());
        assert!(line("name", "   ", 10).is_err());
        assert!(line("name", "elevenchars", 10).is_err());
    }

    #[test]
    fn a_body_keeps_newlines_but_not_other_control_characters() {
        assert_eq!(body("text", "a\nb\tc", 10).unwrap(), "a\nb\tc");
        assert!(body("text", "a\u{7}b", 10).is_err());
    }

    #[test]
    fn blank_optional_text_means_not_set() {
        assert_eq!(opt_line("icon", Some("  "), 10).unwrap(), None);
        assert_eq!(opt_body("d", None, 10).unwrap(), None);
    }
}
