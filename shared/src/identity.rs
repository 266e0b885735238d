//! Domain newtypes for account identity, parsed at the edge (README §5):
//! the core never re-checks them.

use std::fmt;

use crate::error::ApiError;

/// A username: 3 to 32 of `[A-Za-z0-9_.-]`, unique case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    /// Checks `raw` as the field `field`.
    pub fn parse(field: &str, raw: &str) -> Result<Self, ApiError> {
        let value = raw.trim();
        let len = value.chars().count();
        if !(3..=32).contains(&len) {
            return Err(ApiError::invalid_field(field, "must be 3 to 32 characters"));
        }
        if !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Err(ApiError::invalid_field(
                field,
                "may only contain letters, digits, '_', '.' and '-'",
            ));
        }
        Ok(Username(value.to_owned()))
    }

    /// As given (case kept for display).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The lower-cased key that makes usernames unique case-insensitively.
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An email address, normalised to lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Checks `raw` as the field `field`: one `@`, a non-empty local part,
    /// a dotted domain, no spaces or control characters, at most 254
    /// characters.
    pub fn parse(field: &str, raw: &str) -> Result<Self, ApiError> {
        let value = raw.trim().to_lowercase();
        let invalid = || ApiError::invalid_field(field, "is not a valid email address");
        if value.is_empty() || value.chars().count() > 254 {
            return Err(invalid());
        }
        if value.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"')
        }) {
            return Err(invalid());
        }
        let (local, domain) = value.split_once('@').ok_or_else(invalid)?;
        if local.is_empty()
            || local.len() > 64
            || domain.contains('@')
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || domain.contains("..")
        {
            return Err(invalid());
        }
        Ok(Email(value))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password as given: 8 to 128 characters. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Checks `raw` as the field `field`.
    pub fn parse(field: &str, raw: &str) -> Result<Self, ApiError> {
        let len = raw.chars().count();
        if !(8..=128).contains(&len) {
            return Err(ApiError::invalid_field(
                field,
                "must be 8 to 128 characters",
            ));
        }
        Ok(Password(raw.to_owned()))
    }

    /// The password, for hashing or verifying.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_rules() {
        assert_eq!(
            Username::parse("username", "Ann_1.x-y").unwrap().key(),
            "ann_1.x-y"
        );
        for bad in [
            "ab",
            &"a".repeat(33),
            "has space",
            "semi;colon",
            "emoji\u{1F600}",
        ] {
            let err = Username::parse("username", bad).unwrap_err();
            assert!(err.to_string().starts_with("username:"), "{bad}");
        }
    }

    #[test]
    fn emails_are_checked_and_lower_cased() {
        assert_eq!(
            Email::parse("email", " Ann@Example.COM ").unwrap().as_str(),
            "ann@example.com"
        );
        for bad in [
            "", "plain", "a@b", "@x.io", "a@@x.io", "a b@x.io", "a@x..io", "a@.x.io", "<a@x.io>",
        ] {
            assert!(Email::parse("email", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_are_8_to_128_characters_and_never_printed() {
        assert!(Password::parse("password", "1234567").is_err());
        assert!(Password::parse("password", &"x".repeat(129)).is_err());
        let p = Password::parse("password", "correct horse").unwrap();
        assert!(!format!("{p:?}").contains("horse"));
    }
}
