//! API keys with three roles. Keys are compared in constant time, so the
//! time a comparison takes says nothing about how much of a key matched.

use crate::error::ApiError;
use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Reader,
    Writer,
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Auth {
    keys: Vec<(Role, Vec<u8>)>,
}

pub const KEY_BYTES_MIN: usize = 16;

impl Auth {
    /// Parses `ROLE:KEY` entries.
    pub fn from_config(entries: &[String]) -> anyhow::Result<Self> {
        let mut keys = Vec::new();
        for entry in entries.iter().filter(|entry| !entry.trim().is_empty()) {
            let (role, key) = entry
                .trim()
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("API key entries look like ROLE:KEY (role admin, writer or reader)"))?;
            let role = match role {
                "admin" => Role::Admin,
                "writer" => Role::Writer,
                "reader" => Role::Reader,
                other => anyhow::bail!("unknown API key role {other:?}: use admin, writer or reader"),
            };
            anyhow::ensure!(
                key.len() >= KEY_BYTES_MIN,
                "API keys must be at least {KEY_BYTES_MIN} bytes long"
            );
            keys.push((role, key.as_bytes().to_vec()));
        }
        Ok(Auth { keys })
    }

    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The caller's role; with no keys configured everyone is admin.
    pub fn role(&self, headers: &HeaderMap) -> Result<Role, ApiError> {
        if !self.enabled() {
            return Ok(Role::Admin);
        }
        let presented = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized)?;
        // Check every key without stopping early.
        let mut found = None;
        for (role, key) in &self.keys {
            if bool::from(key.as_slice().ct_eq(presented.as_bytes())) {
                found = Some(*role);
            }
        }
        found.ok_or(ApiError::Unauthorized)
    }

    pub fn require(&self, headers: &HeaderMap, needed: Role, action: &'static str) -> Result<Role, ApiError> {
        let role = self.role(headers)?;
        if role < needed {
            return Err(ApiError::Forbidden {
                role: role.name(),
                action,
            });
        }
        Ok(role)
    }
}
