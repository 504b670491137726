//! Connection strings with their passwords masked, for errors and logs: a store's
//! `database.url` and a `sql` node's `source` (often templated from a secret) are shown this
//! way, never as written.

/// `source` with its password masked as `***`: the one in a URL's user info
/// (`scheme://user:password@host`), and any `password=...` pair, in a URL's query or in
/// libpq's space-separated `key=value` form. Anything else is left as it is.
pub fn redact_credentials(source: &str) -> String {
    let Some((scheme, rest)) = source.split_once("://") else {
        return redact_pairs(source, ' ');
    };
    // Up to the path or the query: a `#` is not a boundary here, since a password written
    // unencoded may hold one, and it must not leave part of the password outside.
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => format!("{path}?{}", redact_pairs(query, '&')),
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// `pairs`, separated by `separator`, with the value of each `password` key masked.
fn redact_pairs(pairs: &str, separator: char) -> String {
    pairs
        .split(separator)
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(&separator.to_string())
}

#[cfg(test)]
mod tests {
    use super::redact_credentials;

    #[test]
    fn passwords_are_masked_wherever_a_source_holds_them() {
        assert_eq!(
            redact_credentials("postgres://app:s3cret@db:5432/app?sslmode=disable"),
            "postgres://app:***@db:5432/app?sslmode=disable"
        );
        assert_eq!(
            redact_credentials("postgres://u:s3cr%40t@db.local:5432/app?sslmode=disable"),
            "postgres://u:***@db.local:5432/app?sslmode=disable"
        );
        assert_eq!(
            redact_credentials("postgresql://db/app?user=u&password=pw&x=1"),
            "postgresql://db/app?user=u&password=***&x=1"
        );
        assert_eq!(
            redact_credentials("postgres://u:pa#ss@db/app"),
            "postgres://u:***@db/app"
        );
        assert_eq!(
            redact_credentials("host=db user=app password=s3cret dbname=app"),
            "host=db user=app password=*** dbname=app"
        );
        assert_eq!(redact_credentials("postgres://u@db"), "postgres://u@db");
        assert_eq!(redact_credentials("/var/lib/app.db"), "/var/lib/app.db");
        assert_eq!(redact_credentials("what"), "what");
    }
}
