//! Invalidation hooks: named rules that remove cache keys, run by an HTTP call
//! (`POST /v1/hooks/{name}`), by the RESP command `RUNHOOK name [param value ...]`, or by a write
//! through keyward whose key matches one of the hook's `on_write` templates.
//!
//! ```toml
//! [[hooks]]
//! name = "product-updated"
//! remove = ["cache:product:{id}", "cache:product:{id}:reviews", "cache:home"]
//! on_write = ["product:{id}"]
//! delay_ms = 500
//! ```
//!
//! This module holds the settings and the compiled [`HookSet`], which is pure: filling
//! templates, and finding the hooks a written key triggers through a prefix table
//! ([`PrefixTable`]) built once per (re)load. Running a hook (the guard, the removal, the delayed second removal) is
//! [`crate::keyops`]' business.

mod template;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::prefix_table::PrefixTable;

pub use template::{Params, Template};

/// `[[hooks]]` as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookConfig {
    pub name: String,
    /// Templates of the keys to remove.
    pub remove: Vec<String>,
    /// Templates of keys whose writes run the hook.
    pub on_write: Vec<String>,
    /// When set, the keys are removed once more this long after the first removal.
    pub delay: Duration,
}

/// One compiled hook.
#[derive(Debug)]
pub struct Hook {
    pub name: Arc<str>,
    remove: Vec<Template>,
    pub delay: Duration,
}

/// A hook refused before anything was removed because of its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingParam {
    pub hook: Arc<str>,
    pub param: String,
}

impl std::fmt::Display for MissingParam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "hook '{}' needs the parameter '{}'; nothing was removed",
            self.hook, self.param
        )
    }
}

impl Hook {
    /// The keys to remove for `params`, each once, in template order.
    pub fn keys(&self, params: &Params) -> Result<Vec<Vec<u8>>, MissingParam> {
        let mut keys: Vec<Vec<u8>> = Vec::with_capacity(self.remove.len());
        for template in &self.remove {
            let key = template.fill(params).map_err(|param| MissingParam {
                hook: self.name.clone(),
                param,
            })?;
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        Ok(keys)
    }
}

/// A hook a written key triggered, with the parameters read from the key.
#[derive(Debug, Clone)]
pub struct Trigger {
    pub hook: Arc<Hook>,
    pub params: Params,
}

/// An `on_write` template and the hook it belongs to.
#[derive(Debug)]
struct WriteRule {
    hook: usize,
    template: Template,
}

/// Every hook, by name, and the prefix table of their `on_write` templates.
#[derive(Debug)]
pub struct HookSet {
    hooks: Vec<Arc<Hook>>,
    by_name: HashMap<String, usize>,
    rules: Vec<WriteRule>,
    /// Rules by the literal prefix of their template (the bytes before the first placeholder).
    by_prefix: PrefixTable<usize>,
}

impl HookSet {
    /// No hooks.
    pub fn empty() -> HookSet {
        HookSet {
            hooks: Vec::new(),
            by_name: HashMap::new(),
            rules: Vec::new(),
            by_prefix: PrefixTable::default(),
        }
    }

    /// Compiles `configs`; the error names the hook and what is wrong with it.
    pub fn new(configs: &[HookConfig]) -> Result<HookSet, String> {
        let mut set = HookSet::empty();
        for config in configs {
            let name = &config.name;
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
            {
                return Err(format!(
                    "hook name `{name}`: use letters, digits and `-_.:` (the name is part of \
                     the URL /v1/hooks/{{name}})"
                ));
            }
            if set.by_name.contains_key(name) {
                return Err(format!("hook `{name}` is defined twice"));
            }
            if config.remove.is_empty() {
                return Err(format!("hook `{name}`: `remove` lists no key"));
            }
            let remove = config
                .remove
                .iter()
                .map(|t| Template::parse(t))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("hook `{name}`, remove: {e}"))?;
            let index = set.hooks.len();
            for text in &config.on_write {
                let template =
                    Template::parse(text).map_err(|e| format!("hook `{name}`, on_write: {e}"))?;
                template
                    .check_matchable()
                    .map_err(|e| format!("hook `{name}`, on_write: {e}"))?;
                let given = template.params();
                for needed in remove.iter().flat_map(|t| t.params()) {
                    if !given.contains(&needed) {
                        return Err(format!(
                            "hook `{name}`: on_write template `{template}` gives no value for \
                             `{{{needed}}}`, which remove needs"
                        ));
                    }
                }
                let rule = set.rules.len();
                set.by_prefix.insert(template.prefix(), rule);
                set.rules.push(WriteRule {
                    hook: index,
                    template,
                });
            }
            set.by_name.insert(name.clone(), index);
            set.hooks.push(Arc::new(Hook {
                name: Arc::from(name.as_str()),
                remove,
                delay: config.delay,
            }));
        }
        Ok(set)
    }

    pub fn get(&self, name: &[u8]) -> Option<&Arc<Hook>> {
        let name = std::str::from_utf8(name).ok()?;
        self.by_name.get(name).map(|&i| &self.hooks[i])
    }

    /// Whether any hook runs on writes: when none does, sessions do not look at written keys.
    pub fn watches_writes(&self) -> bool {
        !self.rules.is_empty()
    }

    /// Adds the hooks that a write of `key` triggers to `out`. A hook triggered twice with the
    /// same parameters (two templates, or two keys of one command) is added once.
    pub fn on_write(&self, key: &[u8], out: &mut Vec<Trigger>) {
        self.by_prefix
            .for_each_match(key, |&rule| self.try_rule(rule, key, out));
    }

    fn try_rule(&self, rule: usize, key: &[u8], out: &mut Vec<Trigger>) {
        let rule = &self.rules[rule];
        let hook = &self.hooks[rule.hook];
        let mut params = Params::new();
        if rule.template.matches(key, &mut params)
            && !out
                .iter()
                .any(|t| Arc::ptr_eq(&t.hook, hook) && t.params == params)
        {
            out.push(Trigger {
                hook: hook.clone(),
                params,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(name: &str, remove: &[&str], on_write: &[&str]) -> HookConfig {
        HookConfig {
            name: name.into(),
            remove: remove.iter().map(|s| s.to_string()).collect(),
            on_write: on_write.iter().map(|s| s.to_string()).collect(),
            delay: Duration::ZERO,
        }
    }

    fn triggered(set: &HookSet, key: &str) -> Vec<(String, Vec<Vec<u8>>)> {
        let mut out = Vec::new();
        set.on_write(key.as_bytes(), &mut out);
        out.iter()
            .map(|t| (t.hook.name.to_string(), t.hook.keys(&t.params).unwrap()))
            .collect()
    }

    #[test]
    fn writes_trigger_the_hooks_whose_templates_match() {
        let set = HookSet::new(&[
            hook(
                "product",
                &["cache:product:{id}", "cache:home"],
                &["product:{id}", "products:{id}"],
            ),
            hook("user", &["cache:user:{uid}"], &["user:{uid}:profile"]),
            hook("any", &["cache:{k}"], &["{k}:x"]),
        ])
        .unwrap();
        assert_eq!(
            triggered(&set, "product:42"),
            vec![(
                "product".into(),
                vec![b"cache:product:42".to_vec(), b"cache:home".to_vec()]
            )]
        );
        assert_eq!(
            triggered(&set, "user:7:profile"),
            vec![("user".into(), vec![b"cache:user:7".to_vec()])]
        );
        assert_eq!(
            triggered(&set, "zz:x"),
            vec![("any".into(), vec![b"cache:zz".to_vec()])]
        );
        assert!(triggered(&set, "user:7").is_empty());
        let mut out = Vec::new();
        for key in ["product:1", "products:1", "product:2"] {
            set.on_write(key.as_bytes(), &mut out);
        }
        let ids: Vec<&[u8]> = out.iter().map(|t| t.params.get("id").unwrap()).collect();
        assert_eq!(ids, vec![&b"1"[..], b"2"], "one run per set of parameters");
        assert!(triggered(&set, "other").is_empty());
        assert!(triggered(&set, "").is_empty());
    }

    #[test]
    fn bad_hooks_are_refused_with_their_name() {
        let cases = [
            vec![hook("a", &["x"], &[]), hook("a", &["y"], &[])],
            vec![hook("a b", &["x"], &[])],
            vec![hook("a", &[], &[])],
            vec![hook("a", &["cache:{id}"], &["product:{pid}"])],
            vec![hook("a", &["cache:{id"], &[])],
        ];
        for hooks in cases {
            let error = HookSet::new(&hooks).unwrap_err();
            assert!(error.contains("`a"), "{error}");
        }
    }

    #[test]
    fn missing_parameters_are_named() {
        let set = HookSet::new(&[hook("h", &["c:{id}:{lang}"], &[])]).unwrap();
        let h = set.get(b"h").unwrap();
        let mut p = Params::new();
        p.set("id", b"1".to_vec());
        assert_eq!(h.keys(&p).unwrap_err().param, "lang");
        p.set("lang", b"en".to_vec());
        assert_eq!(h.keys(&p).unwrap(), vec![b"c:1:en".to_vec()]);
    }
}
