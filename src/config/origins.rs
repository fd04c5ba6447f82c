//! Where every value came from while the layers are laid over each other, so that validation,
//! which runs once on the finished [`Config`](super::Config), can still blame the file or flag
//! that supplied a bad value.

use std::collections::HashMap;

use super::error::{ConfigError, Origin};

/// The origin of every value that did not come from the defaults.
#[derive(Default)]
pub(super) struct Origins(HashMap<&'static str, Origin>);

impl Origins {
    /// Sets values from one source, recording it as their origin.
    pub(super) fn layer(&mut self, from: Origin) -> Layer<'_> {
        Layer {
            origins: self,
            from,
        }
    }

    pub(super) fn of(&self, key: &str) -> Origin {
        self.0.get(key).cloned().unwrap_or_default()
    }

    pub(super) fn error(&self, key: &'static str, message: String) -> ConfigError {
        ConfigError::new(self.of(key), Some(key.to_string()), message, None)
    }
}

/// One source of values being laid over the configuration; see [`Origins::layer`].
pub(super) struct Layer<'a> {
    origins: &'a mut Origins,
    from: Origin,
}

impl Layer<'_> {
    /// Records that `key` was written in this source (for keys whose values are taken apart).
    pub(super) fn mark(&mut self, key: &'static str) {
        self.origins.0.insert(key, self.from.clone());
    }

    /// Overwrites `slot` with `value`, if there is one, and records where it came from.
    pub(super) fn value<T>(&mut self, key: &'static str, slot: &mut T, value: Option<T>) {
        if let Some(value) = value {
            *slot = value;
            self.origins.0.insert(key, self.from.clone());
        }
    }
}
