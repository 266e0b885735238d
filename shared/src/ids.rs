//! Identifiers, parsed once at the edge: a user, a chatflow, a chat
//! session, a reservation. Each is 1 to [`MAX_ID_CHARS`] characters with
//! no control character (the stores' own limits), checked in one place,
//! [`check_id`]; past the edge the core never checks one again.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// The longest identifier accepted, in characters.
pub const MAX_ID_CHARS: usize = 128;

/// What makes an identifier valid: 1 to 128 characters (surrounding
/// white space removed), none of them a control character.
pub fn check_id(raw: &str) -> Result<String, String> {
    let value = raw.trim();
    if value.is_empty() || value.chars().count() > MAX_ID_CHARS {
        return Err(format!("must be 1 to {MAX_ID_CHARS} characters"));
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(value.to_owned())
}

/// [`check_id`], and not of a team wallet's shape (`team:`...): a wallet
/// is an account no request naming a user may reach (README "Teams").
pub fn check_user_id(raw: &str) -> Result<String, String> {
    let value = check_id(raw)?;
    if value.starts_with("team:") {
        return Err("must not begin with \"team:\", which names a team's wallet".into());
    }
    Ok(value)
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident) => {
        identifier!($(#[$doc])* $name, check_id);
    };
    ($(#[$doc:meta])* $name:ident, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks `raw` as the field `field` (400 naming it).
            pub fn parse(field: &str, raw: &str) -> Result<Self, ApiError> {
                $check(raw)
                    .map($name)
                    .map_err(|problem| ApiError::invalid_field(field, problem))
            }

            /// The identifier.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// A fresh random identifier (a UUID).
            pub fn random() -> Self {
                $name(uuid::Uuid::new_v4().to_string())
            }

            /// An identifier read back from the gateway's own store, where
            /// only checked ones were written (kept exactly as stored).
            pub fn stored(raw: String) -> Self {
                $name(raw)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .min_length(Some(1))
                    .max_length(Some(MAX_ID_CHARS))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(raw: String) -> Result<Self, String> {
                $check(&raw).map($name)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

identifier!(
    /// A user's id (the JWT `sub`).
    UserId,
    check_user_id
);
identifier!(
    /// A Flowise chatflow's id.
    ChatflowId
);
identifier!(
    /// A chat session's id (also Flowise's `sessionId`).
    ChatSessionId
);
identifier!(
    /// A reservation's id: a client's streaming session id, or the
    /// `message_id` of the answer a prediction reserves for.
    ReservationId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_1_to_128_characters_without_control_characters() {
        assert_eq!(UserId::parse("userId", " u1 ").unwrap().as_str(), "u1");
        assert!(ChatflowId::parse("chatflow_id", &"é".repeat(128)).is_ok());
        for bad in ["", "   ", "nul\0", "line\nbreak"] {
            let err = UserId::parse("userId", bad).unwrap_err();
            assert!(err.to_string().starts_with("userId:"), "{err}");
        }
        let err = ChatflowId::parse("chatflow_id", &"x".repeat(129)).unwrap_err();
        assert!(err.to_string().contains("1 to 128"), "{err}");
    }

    #[test]
    fn no_user_id_names_a_team_wallet() {
        let err = UserId::parse("userId", "team:0190").unwrap_err();
        assert!(err.to_string().contains("team's wallet"), "{err}");
        assert!(serde_json::from_str::<UserId>("\"team:x\"").is_err());
        assert!(UserId::parse("userId", "teammate").is_ok());
        assert!(ChatflowId::parse("chatflow_id", "team:x").is_ok());
    }

    #[test]
    fn ids_parse_from_json_through_the_same_check() {
        let ok: ReservationId = serde_json::from_str("\"s-1\"").unwrap();
        assert_eq!(ok.to_string(), "s-1");
        assert!(serde_json::from_str::<ReservationId>("\"\"").is_err());
        assert_eq!(serde_json::to_string(&ok).unwrap(), "\"s-1\"");
        assert_ne!(ChatSessionId::random(), ChatSessionId::random());
    }
}
