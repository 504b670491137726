//! The router's radix tree against a plain matcher: fuzzed routes (method and pattern) go
//! into both, and every fuzzed lookup must find the same route with the same parameters, or
//! fail in both.
//!
//! An input is text: one route per line (`GET /users/:id`), an empty line, then one lookup
//! per line (`GET /users/42`); a line without a space has the method `""`. The plain matcher tries each route on its own and ranks the ones that match
//! by their pieces, position by position: a static byte before a parameter before a wildcard.

#![no_main]

use libfuzzer_sys::fuzz_target;
use uniflow_nodes_net::router::tree::Tree;

/// A route's pattern as the plain matcher reads it. The order of the variants is the order
/// of preference; a pattern that has ended sorts before one that goes on, and can only meet
/// a wildcard, which takes an empty rest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Piece {
    Byte(u8),
    Param,
    Wildcard,
}

/// A route of the plain matcher: its first spelling, its names and the methods it serves.
struct Route {
    pattern: String,
    pieces: Vec<Piece>,
    names: Vec<String>,
    methods: Vec<String>,
}

/// The pieces and parameter names of a pattern, or `None` when a `:` has no name.
fn pieces(pattern: &str) -> Option<(Vec<Piece>, Vec<String>)> {
    let text = pattern.strip_prefix('/').unwrap_or(pattern);
    let bytes = text.as_bytes();
    let (mut pieces, mut names) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"\\:") {
            pieces.push(Piece::Byte(b':'));
            i += 2;
        } else if bytes[i] == b':' {
            let end = text[i..].find('/').map_or(text.len(), |n| i + n);
            if end == i + 1 {
                return None;
            }
            pieces.push(Piece::Param);
            names.push(text[i + 1..end].to_owned());
            i = end;
        } else if bytes[i] == b'*' {
            pieces.push(Piece::Wildcard);
            names.push("*".to_owned());
            break;
        } else {
            pieces.push(Piece::Byte(bytes[i]));
            i += 1;
        }
    }
    Some((pieces, names))
}

/// The byte ranges a route captures from `path` (without its leading `/`), if it matches. A
/// parameter takes one non-empty run up to the next `/`, a wildcard the rest.
fn captures(pieces: &[Piece], path: &[u8]) -> Option<Vec<(usize, usize)>> {
    let mut at = 0;
    let mut found = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Byte(b) if path.get(at) == Some(b) => at += 1,
            Piece::Byte(_) => return None,
            Piece::Param => {
                let end = path[at..]
                    .iter()
                    .position(|&c| c == b'/')
                    .map_or(path.len(), |n| at + n);
                if end == at {
                    return None;
                }
                found.push((at, end));
                at = end;
            }
            Piece::Wildcard => {
                found.push((at, path.len()));
                at = path.len();
            }
        }
    }
    (at == path.len()).then_some(found)
}

/// What a lookup answers: the route's first spelling, its parameters, and whether it serves
/// the method.
type Answer = Option<(String, Vec<(String, String)>, bool)>;

fn plain_lookup(routes: &[Route], path: &str, method: &str) -> Answer {
    let text = path.strip_prefix('/').unwrap_or(path);
    let mut matches: Vec<_> = routes
        .iter()
        .filter_map(|r| Some((r, captures(&r.pieces, text.as_bytes())?)))
        .collect();
    matches.sort_by(|a, b| a.0.pieces.cmp(&b.0.pieces));
    let accepted = matches
        .iter()
        .position(|(r, _)| r.methods.iter().any(|m| m == method));
    let (route, found) = matches.get(accepted.unwrap_or(0))?;
    let params = route
        .names
        .iter()
        .zip(found)
        .map(|(name, &(start, end))| (name.clone(), text[start..end].to_owned()))
        .collect();
    Some((route.pattern.clone(), params, accepted.is_some()))
}

/// The tree's value per pattern: the first spelling and the methods.
#[derive(Default)]
struct Leaf {
    pattern: String,
    methods: Vec<String>,
}

/// One line of the input: `<method> <text>`, or just `<text>` for the method `""`.
fn line(text: &str) -> (&str, &str) {
    text.split_once(' ').unwrap_or(("", text))
}

fn add(tree: &mut Tree<Leaf>, routes: &mut Vec<Route>, method: &str, pattern: &str) {
    let entry = tree.entry(pattern);
    let plain = pieces(pattern).and_then(|(pieces, names)| {
        match routes.iter().position(|r| r.pieces == pieces) {
            Some(i) if routes[i].names != names => None,
            Some(i) => Some(&mut routes[i]),
            None => {
                routes.push(Route {
                    pattern: pattern.to_owned(),
                    pieces,
                    names,
                    methods: Vec::new(),
                });
                routes.last_mut()
            }
        }
    });
    match (entry, plain) {
        (Ok(leaf), Some(route)) => {
            if leaf.methods.is_empty() {
                leaf.pattern = pattern.to_owned();
            }
            assert_eq!(
                leaf.pattern, route.pattern,
                "{pattern:?} joins another route"
            );
            leaf.methods.push(method.to_owned());
            route.methods.push(method.to_owned());
        }
        (Err(_), None) => {}
        (entry, plain) => panic!(
            "{pattern:?}: the tree says {:?}, the plain matcher {}",
            entry.map(|_| ()),
            if plain.is_some() { "ok" } else { "invalid" }
        ),
    }
}

fn check(tree: &Tree<Leaf>, routes: &[Route], method: &str, path: &str) {
    let found: Answer = tree
        .lookup(path, |leaf| leaf.methods.iter().any(|m| m == method))
        .map(|m| {
            let params = m
                .params
                .iter()
                .map(|&(name, value)| (name.to_owned(), value.to_owned()))
                .collect();
            (m.value.pattern.clone(), params, m.accepted)
        });
    let patterns: Vec<_> = routes.iter().map(|r| &r.pattern).collect();
    assert_eq!(
        found,
        plain_lookup(routes, path, method),
        "path {path:?} with method {method:?}, routes {patterns:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (table, paths) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut tree = Tree::<Leaf>::new();
    let mut routes = Vec::new();
    for (method, pattern) in table.lines().map(line) {
        add(&mut tree, &mut routes, method, pattern);
    }
    for (method, path) in paths.lines().map(line) {
        check(&tree, &routes, method, path);
    }
});
