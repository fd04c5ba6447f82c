//! Key templates: `cache:product:{id}`, filled from parameters (`remove`) or matched against a
//! key to read the parameters out of it (`on_write`).
//!
//! `{name}` is a placeholder (a name of letters, digits and `_`). Redis Cluster's hash tags use
//! braces too, so a literal brace is written twice: `cache:{{product:{id}}}` is the key
//! `cache:{product:42}` for `id = 42`.

use std::fmt;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(Vec<u8>),
    Param(String),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
    /// As written, for messages.
    text: String,
    /// The literal bytes after the last placeholder: a key that does not end with them cannot
    /// match, which most keys that share a template's prefix are told by at once.
    suffix: Vec<u8>,
    /// The shortest key that can match: every literal byte and one byte per placeholder.
    min_len: usize,
}

/// The parameters of one trigger: names and values, in the order they were given or found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, Vec<u8>)>);

impl Params {
    pub fn new() -> Self {
        Params(Vec::new())
    }

    /// Sets `name` (a later value replaces an earlier one).
    pub fn set(&mut self, name: &str, value: Vec<u8>) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = value,
            None => self.0.push((name.to_string(), value)),
        }
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }
}

impl Template {
    /// Parses `text`; the error says what is wrong and where.
    pub fn parse(text: &str) -> Result<Template, String> {
        let bytes = text.as_bytes();
        let mut parts = Vec::new();
        let mut literal = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'{' if bytes.get(i + 1) == Some(&b'{') => {
                    literal.push(b'{');
                    i += 2;
                }
                b'}' if bytes.get(i + 1) == Some(&b'}') => {
                    literal.push(b'}');
                    i += 2;
                }
                b'{' => {
                    let Some(len) = bytes[i + 1..].iter().position(|&b| b == b'}') else {
                        return Err(format!(
                            "`{text}`: the `{{` at byte {i} has no closing `}}` (a literal \
                             brace is written `{{{{`)"
                        ));
                    };
                    let name = &text[i + 1..i + 1 + len];
                    if name.is_empty()
                        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    {
                        return Err(format!(
                            "`{text}`: `{{{name}}}` is not a placeholder: a name is letters, \
                             digits and `_` (a literal brace is written `{{{{` or `}}}}`)"
                        ));
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Param(name.to_string()));
                    i += len + 2;
                }
                b'}' => {
                    return Err(format!(
                        "`{text}`: the `}}` at byte {i} closes nothing (a literal brace is \
                         written `}}}}`)"
                    ));
                }
                b => {
                    literal.push(b);
                    i += 1;
                }
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        if parts.is_empty() {
            return Err("an empty template names no key".into());
        }
        let suffix = match parts.last() {
            Some(Part::Literal(l)) if parts.len() > 1 => l.clone(),
            _ => Vec::new(),
        };
        let min_len = parts
            .iter()
            .map(|p| match p {
                Part::Literal(l) => l.len(),
                Part::Param(_) => 1,
            })
            .sum();
        Ok(Template {
            parts,
            text: text.to_string(),
            suffix,
            min_len,
        })
    }

    /// Checks that the template can be matched against keys: two placeholders side by side
    /// would have no character between them to say where one ends.
    pub fn check_matchable(&self) -> Result<(), String> {
        let adjacent = self
            .parts
            .windows(2)
            .any(|w| matches!(w, [Part::Param(_), Part::Param(_)]));
        if adjacent {
            return Err(format!(
                "`{}`: two placeholders side by side cannot be told apart in a key; put a \
                 literal character between them",
                self.text
            ));
        }
        Ok(())
    }

    /// The placeholder names, each once, in order.
    pub fn params(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for part in &self.parts {
            if let Part::Param(name) = part
                && !names.contains(&name.as_str())
            {
                names.push(name);
            }
        }
        names
    }

    /// The literal bytes before the first placeholder (the whole key when there is none): what
    /// the prefix table files an `on_write` template under.
    pub fn prefix(&self) -> &[u8] {
        match self.parts.first() {
            Some(Part::Literal(l)) => l,
            _ => &[],
        }
    }

    /// The key for `params`; `Err(name)` names the first parameter that is missing.
    pub fn fill(&self, params: &Params) -> Result<Vec<u8>, String> {
        let mut key = Vec::with_capacity(self.text.len() + 16);
        for part in &self.parts {
            match part {
                Part::Literal(l) => key.extend_from_slice(l),
                Part::Param(name) => match params.get(name) {
                    Some(value) => key.extend_from_slice(value),
                    None => return Err(name.clone()),
                },
            }
        }
        Ok(key)
    }

    /// Matches `key`, adding the placeholders' values to `params`. A placeholder matches a
    /// non-empty run of bytes up to the template's next literal character (or the key's end);
    /// a placeholder used twice must match the same bytes both times.
    pub fn matches(&self, key: &[u8], params: &mut Params) -> bool {
        if key.len() < self.min_len || !key.ends_with(&self.suffix) {
            return false;
        }
        let start = params.0.len();
        let mut pos = 0;
        for (i, part) in self.parts.iter().enumerate() {
            match part {
                Part::Literal(l) => {
                    if !key[pos..].starts_with(l) {
                        params.0.truncate(start);
                        return false;
                    }
                    pos += l.len();
                }
                Part::Param(name) => {
                    let end = match self.parts.get(i + 1) {
                        Some(Part::Literal(next)) => match memchr::memchr(next[0], &key[pos..]) {
                            Some(at) => pos + at,
                            None => {
                                params.0.truncate(start);
                                return false;
                            }
                        },
                        _ => key.len(),
                    };
                    let value = &key[pos..end];
                    let consistent = match params.0[start..].iter().find(|(n, _)| n == name) {
                        Some((_, earlier)) => earlier == value,
                        None => true,
                    };
                    if value.is_empty() || !consistent {
                        params.0.truncate(start);
                        return false;
                    }
                    if !params.0[start..].iter().any(|(n, _)| n == name) {
                        params.0.push((name.clone(), value.to_vec()));
                    }
                    pos = end;
                }
            }
        }
        if pos != key.len() {
            params.0.truncate(start);
            return false;
        }
        true
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        let mut p = Params::new();
        for (n, v) in pairs {
            p.set(n, v.as_bytes().to_vec());
        }
        p
    }

    #[test]
    fn fills_placeholders_and_doubled_braces() {
        let t = Template::parse("cache:{{product:{id}}}:x").unwrap();
        assert_eq!(
            t.fill(&params(&[("id", "42")])).unwrap(),
            b"cache:{product:42}:x"
        );
        assert_eq!(t.params(), vec!["id"]);
        assert_eq!(t.fill(&Params::new()), Err("id".to_string()));
        assert_eq!(t.prefix(), b"cache:{product:");
    }

    #[test]
    fn refuses_what_is_not_a_template() {
        for bad in ["", "a{", "a}b", "a{b-c}", "{}"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
        let adjacent = Template::parse("{a}{b}").unwrap();
        assert!(adjacent.check_matchable().is_err());
    }

    #[test]
    fn matches_up_to_the_next_literal_character() {
        let t = Template::parse("product:{id}:reviews").unwrap();
        let mut p = Params::new();
        assert!(t.matches(b"product:42:reviews", &mut p));
        assert_eq!(p.get("id"), Some(&b"42"[..]));
        for miss in [
            &b"product::reviews"[..],
            b"product:42",
            b"product:42:reviewsX",
            b"other:42:reviews",
            b"product:4:2:reviews",
        ] {
            let mut p = Params::new();
            assert!(
                !t.matches(miss, &mut p),
                "{}",
                String::from_utf8_lossy(miss)
            );
            assert_eq!(p, Params::new());
        }
        let last = Template::parse("product:{id}").unwrap();
        let mut p = Params::new();
        assert!(last.matches(b"product:42:x", &mut p));
        assert_eq!(p.get("id"), Some(&b"42:x"[..]));
        assert!(!last.matches(b"product:", &mut Params::new()));
    }

    #[test]
    fn a_placeholder_used_twice_must_match_the_same_bytes() {
        let t = Template::parse("{a}:{a}").unwrap();
        assert!(t.matches(b"x:x", &mut Params::new()));
        assert!(!t.matches(b"x:y", &mut Params::new()));
    }
}
