//! Access tokens (docs/protocol.md, Auth): HS256 JWTs naming a user (`sub`), the graphs it
//! may reach (`graphs`: a list, or `"*"`), a `role` (editor or viewer) and an
//! expiry (`exp`). A token never grants a graph it does not name; viewers
//! read and subscribe but do not send commands.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::graph::command::is_entity_id;

/// Shortest secret accepted: HS256 with a short secret is guessable.
pub const MIN_SECRET_LEN: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Editor,
    Viewer,
}

/// The graphs a token reaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Graphs {
    All,
    Only(Vec<String>),
}

impl Serialize for Graphs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Graphs::All => s.serialize_str("*"),
            Graphs::Only(list) => list.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Graphs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Star(String),
            List(Vec<String>),
        }
        match Raw::deserialize(d)? {
            Raw::Star(s) if s == "*" => Ok(Graphs::All),
            Raw::Star(s) => Err(serde::de::Error::custom(format!(
                "graphs must be a list or \"*\", not {s:?}"
            ))),
            Raw::List(list) if list.iter().any(|g| g == "*") => Ok(Graphs::All),
            Raw::List(list) => Ok(Graphs::Only(list)),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub graphs: Graphs,
    pub role: Role,
    pub exp: u64,
}

/// Who a verified token speaks for.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    pub user: String,
    pub graphs: Graphs,
    pub role: Role,
    /// The token's `exp` (Unix seconds; every token has one, `verify`
    /// requires it): an open WebSocket's rights end there.
    pub exp: u64,
}

impl Identity {
    pub fn can_read(&self, graph_id: &str) -> bool {
        match &self.graphs {
            Graphs::All => true,
            Graphs::Only(list) => list.iter().any(|g| g == graph_id),
        }
    }

    pub fn can_write(&self, graph_id: &str) -> bool {
        self.role == Role::Editor && self.can_read(graph_id)
    }

    /// When the token stops granting anything, in ms since the Unix epoch:
    /// RFC 7519 says a token is not accepted *on or after* `exp`.
    pub fn expires_at_ms(&self) -> u64 {
        self.exp.saturating_mul(1000)
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    #[error("no token: send Authorization: Bearer TOKEN or ?token=")]
    Missing,
    #[error("token expired")]
    Expired,
    /// A token `verify` refuses: malformed, badly signed, another algorithm,
    /// claims missing or out of range. Why is logged at debug level, not
    /// answered: the JWT library's wording ("unknown variant `none`,
    /// expected one of `HS256`, …") tells a client about our internals and
    /// nothing it can act on.
    #[error("the token is not valid")]
    NotValid,
    /// What `mint` cannot write (the message says why).
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("the auth secret must be at least {MIN_SECRET_LEN} characters (GRAPHQ_AUTH_SECRET)")]
    WeakSecret,
}

/// Mints and verifies tokens with one shared secret.
#[derive(Clone)]
pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth { .. }")
    }
}

impl Auth {
    pub fn new(secret: &str) -> Result<Auth, AuthError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(AuthError::WeakSecret);
        }
        Ok(Auth {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
        })
    }

    /// A token for `user` on `graphs` with `role`, valid for `ttl`.
    pub fn mint(
        &self,
        user: &str,
        graphs: Graphs,
        role: Role,
        ttl: Duration,
    ) -> Result<String, AuthError> {
        if !is_entity_id(user) {
            return Err(AuthError::Invalid(
                "user ids are 1-128 characters of A-Z a-z 0-9 _ . : -".into(),
            ));
        }
        let claims = Claims {
            sub: user.to_string(),
            graphs,
            role,
            exp: crate::db::now_ms() / 1000 + ttl.as_secs(),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }

    /// Checks signature, algorithm and expiry; returns who the token speaks for.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data =
            decode::<Claims>(token, &self.decoding, &validation).map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => {
                    tracing::debug!(reason = %e, "token refused");
                    AuthError::NotValid
                }
            })?;
        let c = data.claims;
        if !is_entity_id(&c.sub) {
            tracing::debug!(reason = "sub is not a valid user id", "token refused");
            return Err(AuthError::NotValid);
        }
        Ok(Identity {
            user: c.sub,
            graphs: c.graphs,
            role: c.role,
            exp: c.exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-test-secret-of-enough-length";

    #[test]
    fn a_minted_token_verifies_and_grants_only_its_graphs() {
        let auth = Auth::new(SECRET).unwrap();
        let t = auth
            .mint(
                "alice",
                Graphs::Only(vec!["g1".into()]),
                Role::Editor,
                Duration::from_secs(60),
            )
            .unwrap();
        let id = auth.verify(&t).unwrap();
        assert_eq!(id.user, "alice");
        assert!(id.can_write("g1"));
        assert!(!id.can_read("g2"));
        assert!(id.expires_at_ms() > crate::db::now_ms() + 59_000);
        let v = auth
            .mint("bob", Graphs::All, Role::Viewer, Duration::from_secs(60))
            .unwrap();
        let id = auth.verify(&v).unwrap();
        assert!(id.can_read("anything"));
        assert!(!id.can_write("anything"), "viewers cannot write");
    }

    #[test]
    fn forged_expired_and_unsigned_tokens_are_refused() {
        let auth = Auth::new(SECRET).unwrap();
        let other = Auth::new("another-secret-entirely-123").unwrap();
        let forged = other
            .mint("alice", Graphs::All, Role::Editor, Duration::from_secs(60))
            .unwrap();
        assert_eq!(auth.verify(&forged), Err(AuthError::NotValid));
        let expired = encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                sub: "alice".into(),
                graphs: Graphs::All,
                role: Role::Editor,
                exp: 1,
            },
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(auth.verify(&expired), Err(AuthError::Expired));
        // alg "none": header {"alg":"none","typ":"JWT"}, no signature.
        let unsigned = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSIsImdyYXBocyI6IioiLCJyb2xlIjoiZWRpdG9yIiwiZXhwIjo5OTk5OTk5OTk5fQ.";
        assert_eq!(auth.verify(unsigned), Err(AuthError::NotValid));
        assert_eq!(auth.verify("garbage"), Err(AuthError::NotValid));
        // The answer is one sentence, whatever the library said.
        assert_eq!(AuthError::NotValid.to_string(), "the token is not valid");
        assert_eq!(Auth::new("short").unwrap_err(), AuthError::WeakSecret);
    }

    #[test]
    fn graphs_claim_is_a_list_or_a_star() {
        let g: Graphs = serde_json::from_str(r#""*""#).unwrap();
        assert_eq!(g, Graphs::All);
        let g: Graphs = serde_json::from_str(r#"["a","b"]"#).unwrap();
        assert_eq!(g, Graphs::Only(vec!["a".into(), "b".into()]));
        assert!(serde_json::from_str::<Graphs>(r#""a""#).is_err());
    }
}
