//! A secret in configuration: an admin token, a provider's key. Never printed, never logged.
//! It lives here, below every crate that has configuration, because provider settings in
//! `stages/deliver` and the store and API settings in `pipeline/` all hold secrets.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A secret string: `Debug` shows `Secret(***)`; only [`Secret::expose`] gives it out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(secret.expose(), "hunter2");
    }
}
