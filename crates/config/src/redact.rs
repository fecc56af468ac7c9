//! Secrets never reach a log line or `config check` output: API keys are masked whole, and
//! passwords inside URLs (`postgres://user:PASSWORD@host`) are masked in place.

use serde_json::Value;

use crate::Config;

const MASK: &str = "***";

pub(crate) fn redacted(cfg: &Config) -> Value {
    let mut value = serde_json::to_value(cfg).unwrap_or(Value::Null);
    mask(&mut value, None);
    value
}

fn mask(value: &mut Value, key: Option<&str>) {
    match value {
        Value::Object(map) => map.iter_mut().for_each(|(k, v)| mask(v, Some(k))),
        Value::Array(items) => items.iter_mut().for_each(|v| mask(v, key)),
        Value::String(s) if key.is_some_and(is_secret_key) => *s = MASK.to_string(),
        Value::String(s) => {
            if let Some(masked) = mask_url_password(s) {
                *s = masked;
            }
        }
        _ => {}
    }
}

fn is_secret_key(key: &str) -> bool {
    key == "api_key" || key.ends_with("password") || key.ends_with("secret")
}

/// `scheme://user:pass@host/..` -> `scheme://user:***@host/..`; `None` when there is no password.
fn mask_url_password(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (userinfo, host) = rest[..authority_end].rsplit_once('@')?;
    let (user, _password) = userinfo.split_once(':')?;
    Some(format!(
        "{scheme}://{user}:{MASK}@{host}{}",
        &rest[authority_end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::mask_url_password;

    #[test]
    fn masks_only_the_password() {
        assert_eq!(
            mask_url_password("postgres://citadel:hunter2@db:5432/citadel").as_deref(),
            Some("postgres://citadel:***@db:5432/citadel")
        );
        assert_eq!(
            mask_url_password("postgres://citadel@db:5432/citadel"),
            None
        );
        assert_eq!(
            mask_url_password("redis://:pw@localhost:6379").as_deref(),
            Some("redis://:***@localhost:6379")
        );
    }
}
