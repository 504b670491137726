//! Named parameters: `:name` in a query becomes a positional placeholder, so that a map of
//! arguments binds by name on databases that only bind by position.
//!
//! The scan skips what is not SQL code: quoted strings and identifiers, comments, and
//! PostgreSQL's dollar-quoted strings; `::` (a PostgreSQL cast) is not a parameter. Upstream
//! (jmoiron/sqlx's named queries) rewrote inside string literals too.

/// `query` with each `:name` replaced by `placeholder(n)`, `n` counted from 1 in order of first
/// appearance (a repeated name reuses its number), and the names in that order.
pub(crate) fn named(query: &str, placeholder: fn(usize, &mut String)) -> (String, Vec<String>) {
    let mut out = String::with_capacity(query.len() + 8);
    let mut names: Vec<String> = Vec::new();
    let bytes = query.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &query[i..];
        let skip = match bytes[i] {
            quote @ (b'\'' | b'"' | b'`') => closing(rest, 1, &[quote]),
            b'-' if rest.starts_with("--") => closing(rest, 2, b"\n"),
            b'/' if rest.starts_with("/*") => closing(rest, 2, b"*/"),
            b'$' => dollar_quoted(rest),
            b':' if rest.starts_with("::") => 2,
            b':' => {
                let name_len = rest[1..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len() - 1);
                let name = &rest[1..=name_len];
                if name.is_empty() || name.as_bytes()[0].is_ascii_digit() {
                    1
                } else {
                    let n = match names.iter().position(|known| known == name) {
                        Some(at) => at + 1,
                        None => {
                            names.push(name.to_owned());
                            names.len()
                        }
                    };
                    placeholder(n, &mut out);
                    i += 1 + name_len;
                    continue;
                }
            }
            _ => rest.chars().next().map_or(1, char::len_utf8),
        };
        out.push_str(&rest[..skip]);
        i += skip;
    }
    (out, names)
}

/// The length of what starts `rest` and ends with `end`, searched from `from` (all of `rest`
/// when it does not end).
fn closing(rest: &str, from: usize, end: &[u8]) -> usize {
    rest.as_bytes()[from..]
        .windows(end.len())
        .position(|w| w == end)
        .map_or(rest.len(), |at| from + at + end.len())
}

/// The length of a PostgreSQL dollar-quoted string (`$tag$ ... $tag$`) that starts `rest`, or
/// 1 for a lone `$` (a positional parameter `$1`, say).
fn dollar_quoted(rest: &str) -> usize {
    let tag_len = rest[1..]
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len() - 1);
    let tag = &rest[..tag_len + 1];
    if rest[tag_len + 1..].starts_with('$') && !tag[1..].starts_with(|c: char| c.is_ascii_digit()) {
        let tag = &rest[..tag_len + 2];
        return closing(rest, tag.len(), tag.as_bytes());
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn question(n: usize, out: &mut String) {
        out.push_str(&format!("?{n}"));
    }

    #[test]
    fn names_become_numbered_placeholders_outside_quotes_and_comments() {
        let cases = [
            (
                "SELECT * FROM t WHERE a = :a AND b = :b OR a = :a",
                "SELECT * FROM t WHERE a = ?1 AND b = ?2 OR a = ?1",
                vec!["a", "b"],
            ),
            (
                "SELECT ':no', \":no\", x::int, $$ :no $$, $t$ :no $t$ -- :no\n, :yes /* :no */",
                "SELECT ':no', \":no\", x::int, $$ :no $$, $t$ :no $t$ -- :no\n, ?1 /* :no */",
                vec!["yes"],
            ),
            (
                "SELECT $1, :1, 'it''s :x', :é",
                "SELECT $1, :1, 'it''s :x', :é",
                vec![],
            ),
            (
                "INSERT INTO t VALUES (:id_2)",
                "INSERT INTO t VALUES (?1)",
                vec!["id_2"],
            ),
        ];
        for (query, want, names) in cases {
            let (got, found) = named(query, question);
            assert_eq!(got, want, "{query}");
            assert_eq!(found, names, "{query}");
        }
    }
}
