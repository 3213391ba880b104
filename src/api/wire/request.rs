//! Request bodies, and what each becomes for the service.
//!
//! Every body refuses unknown fields, so a misspelt optional field is an error rather
//! than silently ignored.

use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::SignatureFormat;
use crate::service;
use crate::token;

/// The body of `POST /v1/tokens`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"issuer": "auth", "aud": "api", "sub": "alice", "ttl_seconds": 30, "claims": {"scope": "read"}}))]
pub struct MintRequest {
    /// Name of the issuer (a key of `[issuers]` in the config).
    #[schema(example = "auth")]
    pub issuer: String,
    /// The `sub` claim.
    #[serde(default)]
    #[schema(example = "alice")]
    pub sub: Option<String>,
    /// The `aud` claim; every value must be one the issuer allows.
    pub aud: Audience,
    /// Requested lifetime; default and maximum are the issuer's `max_ttl_seconds`.
    #[serde(default)]
    #[schema(example = 30)]
    pub ttl_seconds: Option<u64>,
    /// Custom claims, under the issuer's size cap and claim rules.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub claims: Map<String, Value>,
}

/// `aud`: one audience as a string, or several as an array.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, ToSchema)]
#[schema(example = "api")]
#[serde(untagged)]
pub enum Audience {
    /// A single audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

impl From<Audience> for token::Audience {
    fn from(aud: Audience) -> Self {
        match aud {
            Audience::One(one) => token::Audience::One(one),
            Audience::Many(many) => token::Audience::Many(many),
        }
    }
}

impl From<MintRequest> for token::MintRequest {
    fn from(body: MintRequest) -> Self {
        token::MintRequest {
            issuer: body.issuer,
            sub: body.sub,
            aud: body.aud.into(),
            ttl_seconds: body.ttl_seconds,
            claims: body.claims,
        }
    }
}

/// The body of `POST /v1/sign`: exactly one of `digest` and `message`, base64url.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"issuer": "raw", "message": "aGVsbG8", "format": "jws"}))]
pub struct SignRequest {
    /// The issuer whose active key signs.
    #[schema(example = "raw")]
    pub issuer: String,
    /// A SHA-256 digest (ES256 only).
    #[serde(default)]
    pub digest: Option<String>,
    /// A message: hashed on the host for ES256, signed whole for EdDSA.
    #[serde(default)]
    #[schema(example = "aGVsbG8")]
    pub message: Option<String>,
    /// The signature encoding; `jws` when absent.
    #[serde(default)]
    pub format: SignatureFormat,
}

impl From<SignRequest> for service::SignRequest {
    fn from(body: SignRequest) -> Self {
        service::SignRequest {
            issuer: body.issuer,
            digest: body.digest,
            message: body.message,
            format: body.format.into(),
        }
    }
}

/// The body of `POST /v1/verify`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The compact JWS.
    pub token: String,
    /// The audience the caller expects; `aud` must contain it.
    #[schema(example = "api")]
    pub audience: String,
    /// Reject a second verification of the same `jti` (needs permission).
    #[serde(default)]
    pub single_use: bool,
}

impl From<VerifyRequest> for service::verify::VerifyRequest {
    fn from(body: VerifyRequest) -> Self {
        service::verify::VerifyRequest {
            token: body.token,
            audience: body.audience,
            single_use: body.single_use,
        }
    }
}

/// The body of `POST /v1/keys`. The service takes just the issuer's name.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    /// The issuer that gets its first key.
    pub issuer: String,
}

/// The body of `POST /v1/revocations`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeTokenRequest {
    /// The `jti` to revoke.
    pub jti: String,
    /// The token's `exp`, so the revocation is listed exactly as long as needed; default
    /// now plus the hard TTL cap, which outlives any token signetd mints.
    #[serde(default)]
    pub exp: Option<u64>,
}

impl From<RevokeTokenRequest> for service::admin::RevokeTokenRequest {
    fn from(body: RevokeTokenRequest) -> Self {
        service::admin::RevokeTokenRequest {
            jti: body.jti,
            exp: body.exp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// serde names the type in some messages clients already see, so the wire types
    /// keep the names the bodies always had.
    #[test]
    fn request_errors_name_the_same_types() {
        let e = serde_json::from_str::<MintRequest>(r#""x""#).unwrap_err();
        assert!(e.to_string().contains("struct MintRequest"), "{e}");
        let e = serde_json::from_str::<MintRequest>(r#"{"issuer":"i","aud":5}"#).unwrap_err();
        assert!(e.to_string().contains("untagged enum Audience"), "{e}");
    }

    #[test]
    fn an_absent_format_is_jws() {
        let body: SignRequest = serde_json::from_str(r#"{"issuer":"i","message":"bQ"}"#).unwrap();
        assert_eq!(body.format, SignatureFormat::Jws);
    }
}
