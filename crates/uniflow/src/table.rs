//! The table `apply`, `get` and `delete` print, as upstream's CLI does.
//!
//! The columns are the keys present in at least half of the rows, ordered by how many rows
//! have them (most first), then by their values' total rendered length (shortest first), then
//! by name. Headers are upper-case; each cell has one space of padding on each side and no
//! border; numbers are right-aligned; a missing value is `<nil>`; nested values are written
//! as Go's `fmt.Sprint` writes them (`map[a:1]`, `[1 2]`). No trailing newline.

use std::collections::BTreeMap;

use uniflow_nodes_io::format::sprint;
use uniflow_value::Value;

/// The table of `rows` (maps; anything else is a row with no keys).
pub fn render(rows: &[Value]) -> String {
    // Per key: how many rows have it, and the total length of its rendered values.
    let mut keys: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let cells: Vec<BTreeMap<String, Value>> = rows
        .iter()
        .map(|row| match row {
            Value::Map(map) => map.iter().map(|(k, v)| (sprint(k), v.clone())).collect(),
            _ => BTreeMap::new(),
        })
        .collect();
    for row in &cells {
        for (key, value) in row {
            let entry = keys.entry(key.clone()).or_default();
            entry.0 += 1;
            entry.1 += sprint(value).chars().count();
        }
    }
    let mut columns: Vec<(String, usize, usize)> = keys
        .into_iter()
        .filter(|(_, (count, _))| count * 2 >= rows.len())
        .map(|(key, (count, length))| (key, count, length))
        .collect();
    columns.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)).then(a.0.cmp(&b.0)));
    let table: Vec<Vec<(String, bool)>> = cells
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|(key, _, _)| match row.get(key) {
                    Some(v) => (sprint(v), is_number(v)),
                    None => ("<nil>".to_owned(), false),
                })
                .collect()
        })
        .collect();
    let headers: Vec<String> = columns.iter().map(|(k, _, _)| k.to_uppercase()).collect();
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            table
                .iter()
                .map(|row| row[i].0.chars().count())
                .chain([h.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut lines = Vec::with_capacity(rows.len() + 1);
    lines.push(line(headers.iter().map(|h| (h.as_str(), false)), &widths));
    for row in &table {
        lines.push(line(row.iter().map(|(s, n)| (s.as_str(), *n)), &widths));
    }
    lines.join("\n")
}

fn line<'a>(cells: impl Iterator<Item = (&'a str, bool)>, widths: &[usize]) -> String {
    let mut out = String::new();
    for ((text, right), &width) in cells.zip(widths) {
        let pad = width - text.chars().count();
        out.push(' ');
        if right {
            out.extend(std::iter::repeat_n(' ', pad));
            out.push_str(text);
        } else {
            out.push_str(text);
            out.extend(std::iter::repeat_n(' ', pad));
        }
        out.push(' ');
    }
    out
}

fn is_number(value: &Value) -> bool {
    matches!(value, Value::Int(_) | Value::Uint(_) | Value::Float(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(yaml: &str) -> Vec<Value> {
        yaml_serde::from_str(yaml).unwrap()
    }

    #[test]
    fn upstreams_golden_table() {
        assert_eq!(
            render(&rows("- {key1: value1, key2: 123}")),
            " KEY2  KEY1   \n  123  value1 "
        );
    }

    #[test]
    fn columns_are_the_keys_of_at_least_half_the_rows_most_common_first() {
        let table = render(&rows(
            "- {name: a, kind: snippet, only: x}\n- {name: bb, kind: listener}\n- {name: c, port: 8000}\n",
        ));
        // `name` is in every row, `kind` in two of three; `only` and `port` in one of three.
        assert_eq!(
            table,
            " NAME  KIND     \n a     snippet  \n bb    listener \n c     <nil>    "
        );
    }

    #[test]
    fn nested_values_are_written_as_go_writes_them() {
        assert_eq!(
            sprint(&rows("- {b: [1, x], a: {c: null}}")[0]),
            "map[a:map[c:<nil>] b:[1 x]]"
        );
    }
}
