//! The error responses of the OpenAPI document: one component per status, whose body
//! schema lists the codes that status carries, and the sets of them each operation
//! answers with (named in the handlers' `responses(...)`).

use std::collections::BTreeMap;

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{AdditionalProperties, ArrayBuilder, ObjectBuilder, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required, Response, ResponseBuilder};

/// One error status as the document describes it.
pub struct Status {
    /// The HTTP status.
    pub status: u16,
    /// The name of its component under `#/components/responses`.
    pub name: &'static str,
    /// When it is sent.
    pub description: &'static str,
    /// The codes its bodies carry; empty for a status sent without a body.
    pub codes: &'static [&'static str],
}

/// Every error status and its codes. `api::error` maps errors to statuses; its tests
/// check that each (status, code) it produces is listed here.
pub const STATUSES: &[Status] = &[
    Status {
        status: 400,
        name: "BadRequest",
        description: "The body is not JSON, or not the shape the operation takes; or a path segment is not UTF-8",
        codes: &["malformed_json", "invalid_request"],
    },
    Status {
        status: 401,
        name: "Unauthorized",
        description: "No identity: plain HTTP, or HTTPS without a client certificate",
        codes: &["unauthenticated"],
    },
    Status {
        status: 403,
        name: "Forbidden",
        description: "The policy does not allow this caller this action",
        codes: &[
            "not_admin",
            "not_auditor",
            "caller_not_allowed",
            "raw_sign_disabled",
            "mint_disabled",
        ],
    },
    Status {
        status: 404,
        name: "NotFound",
        description: "No such issuer, key or audit log tile, or the issuer has no SPIFFE bundle",
        codes: &[
            "unknown_issuer",
            "unknown_key",
            "no_spiffe_bundle",
            "no_such_tile",
            "not_found",
        ],
    },
    Status {
        status: 408,
        name: "RequestTimeout",
        description: "The body did not arrive within 10 s",
        codes: &["request_timeout"],
    },
    Status {
        status: 409,
        name: "Conflict",
        description: "The key's state does not allow this lifecycle call",
        codes: &["invalid_state"],
    },
    Status {
        status: 413,
        name: "PayloadTooLarge",
        description: "The body is over 64 KiB (a declared `Content-Length` over it is refused before the body is read)",
        codes: &["body_too_large"],
    },
    Status {
        status: 415,
        name: "UnsupportedMediaType",
        description: "The request did not declare `Content-Type: application/json`",
        codes: &["unsupported_media_type"],
    },
    Status {
        status: 422,
        name: "UnprocessableEntity",
        description: "The request breaks the issuer's claim policy, or (`/v1/verify`) the token is not valid: the code says why",
        codes: &[
            "audience_not_allowed",
            "ttl_exceeds_max",
            "reserved_claim",
            "missing_claim",
            "forbidden_claim",
            "claims_too_large",
            "invalid_spiffe_id",
            "trust_domain_not_allowed",
            "malformed_token",
            "algorithm_not_allowed",
            "unknown_key",
            "bad_signature",
            "token_expired",
            "token_not_yet_valid",
            "lifetime_too_long",
            "wrong_issuer",
            "wrong_audience",
            "key_revoked",
            "token_revoked",
            "replayed",
            "wrong_token_type",
            "wrong_subject",
        ],
    },
    Status {
        status: 429,
        name: "TooManyRequests",
        description: "The caller's or the issuer's rate is used up (`rate_limited`, with `Retry-After`), or the caller holds as many connections as one caller may (`too_many_connections`, then the connection is closed)",
        codes: &["rate_limited", "too_many_connections"],
    },
    Status {
        status: 431,
        name: "RequestHeaderFieldsTooLarge",
        description: "The request head is over `limits.max_header_bytes`; sent by the HTTP layer without a body, and the connection is closed",
        codes: &[],
    },
    Status {
        status: 500,
        name: "InternalServerError",
        description: "A bug; details are in the log",
        codes: &["internal"],
    },
    Status {
        status: 503,
        name: "ServiceUnavailable",
        description: "The token, the state store or the audit log cannot serve the request now, or it took too long (`Retry-After` with `hsm_unavailable` and `overloaded`); `/readyz`: `not_ready` with `problems`",
        codes: &[
            "no_active_key",
            "hsm_unavailable",
            "hsm_timeout",
            "overloaded",
            "state_unavailable",
            "audit_unavailable",
            "no_checkpoint",
            "deadline_exceeded",
            "not_ready",
        ],
    },
];

/// The status's entry in [`STATUSES`].
pub fn status(status: u16) -> &'static Status {
    STATUSES
        .iter()
        .find(|s| s.status == status)
        .unwrap_or_else(|| panic!("no error status {status} in the OpenAPI table"))
}

/// The `#/components/responses` of every error status, and of `304`.
pub fn components() -> BTreeMap<String, RefOr<Response>> {
    let mut responses: BTreeMap<String, RefOr<Response>> = STATUSES
        .iter()
        .map(|s| (s.name.to_string(), error_response(s).into()))
        .collect();
    let not_modified = ResponseBuilder::new()
        .description("The client's `If-None-Match` names the current document")
        .header("ETag", string_header("The document's strong entity tag"))
        .header("Cache-Control", string_header("`public, max-age=N`"))
        .build();
    responses.insert("NotModified".into(), not_modified.into());
    responses
}

fn string_header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String))
        .description(Some(description))
        .build()
}

fn error_response(s: &Status) -> Response {
    let mut response = ResponseBuilder::new().description(s.description);
    if s.codes.is_empty() {
        return response.build();
    }
    let string = || ObjectBuilder::new().schema_type(Type::String);
    let mut detail = ObjectBuilder::new()
        .property(
            "code",
            string()
                .enum_values(Some(s.codes.iter().copied()))
                .description(Some("The stable code clients match on")),
        )
        .required("code")
        .property(
            "message",
            string().description(Some("What went wrong, for people; never backend details")),
        )
        .required("message");
    if s.codes.contains(&"not_ready") {
        detail = detail.property(
            "problems",
            ArrayBuilder::new()
                .items(string())
                .description(Some("`not_ready` only: one entry per problem")),
        );
    }
    let detail = detail.additional_properties(Some(AdditionalProperties::FreeForm(false)));
    let body = ObjectBuilder::new()
        .property("error", detail)
        .required("error")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    response = response.content(
        "application/json",
        ContentBuilder::new().schema(Some(body)).build(),
    );
    if matches!(s.status, 429 | 503) {
        let retry_after = HeaderBuilder::new()
            .schema(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)))
            .description(Some(
                "Seconds to wait before trying again: with `rate_limited`, `hsm_unavailable` and `overloaded`",
            ))
            .build();
        response = response.header("Retry-After", retry_after);
    }
    response.build()
}

/// Declares a set of error statuses an operation can answer with, for the handlers'
/// `responses(...)`. Every operation can get `429 too_many_connections` and a bare `431`,
/// which the transport sends whatever the route.
macro_rules! sets {
    ($($(#[$doc:meta])* $name:ident: $($status:literal),*;)*) => {$(
        $(#[$doc])*
        pub struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                [$($status,)* 429, 431]
                    .into_iter()
                    .map(|code: u16| {
                        let name = if code == 304 { "NotModified" } else { status(code).name };
                        (code.to_string(), Ref::from_response_name(name).into())
                    })
                    .collect()
            }
        }
    )*};
}

sets! {
    /// `POST /v1/tokens`.
    Mint: 400, 401, 403, 404, 408, 413, 415, 422, 500, 503;
    /// `POST /v1/sign`: no claims, so no 422.
    Sign: 400, 401, 403, 404, 408, 413, 415, 500, 503;
    /// `POST /v1/verify`.
    Verify: 400, 401, 403, 408, 413, 415, 422, 500, 503;
    /// Admin calls with a body naming an issuer: `POST /v1/keys`.
    AdminWithBody: 400, 401, 403, 404, 408, 409, 413, 415, 500, 503;
    /// `POST /v1/revocations` (admins).
    RevokeToken: 400, 401, 403, 408, 413, 415, 500, 503;
    /// Admin calls on a path: rotate, retire, revoke.
    Admin: 400, 401, 403, 404, 409, 413, 500, 503;
    /// Public documents.
    Public: ;
    /// Public calls by key id.
    ByKid: 400, 404, 500;
    /// Public calls by issuer name: the SPIFFE bundle.
    ByIssuer: 400, 404, 500;
    /// `GET /metrics` on the daemon's listeners.
    Metrics: 401, 403, 500;
    /// `GET /v1/audit/log/checkpoint`.
    AuditCheckpoint: 503;
    /// The audit log's tiles and entry bundles (auditors).
    AuditTile: 400, 401, 403, 404, 500, 503;
    /// `GET /readyz`.
    Ready: 503;
    /// `304` to a matching `If-None-Match`.
    NotModified: 304;
}

/// The `If-None-Match` request header of the cached documents.
pub struct IfNoneMatch;

impl utoipa::IntoParams for IfNoneMatch {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::new()
                .name("If-None-Match")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "An entity tag the client holds: `304` when it names the current document",
                ))
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .build(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::api::error::ApiError;
    use crate::error::Error;
    use crate::hsm::HsmError;
    use crate::signer::SignError;
    use crate::token::verify::VerifyError;

    /// Every error the API can answer with: each HTTP refusal, each domain error, each
    /// verification failure. The `match` below makes a new variant of `Error` a compile
    /// error here until it is listed.
    fn every_error() -> Vec<ApiError> {
        let s = || "x".to_string();
        let domain = vec![
            Error::InvalidRequest(s()),
            Error::Unauthenticated,
            Error::CallerNotAllowed(s()),
            Error::CallerUnknown,
            Error::RawSignDisabled(s()),
            Error::MintDisabled(s()),
            Error::UnknownIssuer(s()),
            Error::UnknownKey(s()),
            Error::AudienceNotAllowed(s()),
            Error::TtlExceedsMax {
                requested: 2,
                max: 1,
            },
            Error::ReservedClaim(s()),
            Error::MissingClaim(s()),
            Error::ForbiddenClaim(s()),
            Error::ClaimsTooLarge { size: 2, max: 1 },
            Error::NoActiveKey(s()),
            Error::InvalidSpiffeId(s()),
            Error::TrustDomainNotAllowed(s()),
            Error::NoSpiffeBundle(s()),
            Error::MetricsNotAllowed,
            Error::NotAdmin,
            Error::NotAuditor,
            Error::NoSuchTile(s()),
            Error::NoCheckpoint,
            Error::Conflict(s()),
            Error::AuditUnavailable,
            Error::Hsm(HsmError::Overloaded),
            Error::Hsm(HsmError::Timeout(Duration::from_secs(1))),
            Error::Hsm(HsmError::PinIncorrect),
            Error::Signer(SignError::Overloaded),
            Error::Signer(SignError::Timeout(Duration::from_secs(1))),
            Error::Signer(SignError::Unavailable(s())),
            Error::Store(crate::store::StoreError(s())),
            Error::Internal(s()),
            Error::NotReady(vec![s()]),
            Error::RateLimited {
                issuer: s(),
                whose: "this caller's",
                retry_after_seconds: 1,
            },
            Error::InvalidToken(VerifyError::Malformed(s())),
            Error::InvalidToken(VerifyError::AlgorithmNotAllowed(s())),
            Error::InvalidToken(VerifyError::UnknownKey(s())),
            Error::InvalidToken(VerifyError::BadSignature),
            Error::InvalidToken(VerifyError::MissingClaim("exp")),
            Error::InvalidToken(VerifyError::Expired),
            Error::InvalidToken(VerifyError::NotYetValid),
            Error::InvalidToken(VerifyError::LifetimeTooLong),
            Error::InvalidToken(VerifyError::WrongIssuer),
            Error::InvalidToken(VerifyError::WrongAudience),
            Error::InvalidToken(VerifyError::KeyRevoked),
            Error::InvalidToken(VerifyError::TokenRevoked),
            Error::InvalidToken(VerifyError::Replayed),
            Error::InvalidToken(VerifyError::WrongType {
                expected: s(),
                found: None,
            }),
            Error::InvalidToken(VerifyError::WrongSubject),
        ];
        for e in &domain {
            // Exhaustive on purpose: a new variant must be added to the list above.
            match e {
                Error::InvalidRequest(_)
                | Error::Unauthenticated
                | Error::CallerNotAllowed(_)
                | Error::CallerUnknown
                | Error::RawSignDisabled(_)
                | Error::MintDisabled(_)
                | Error::UnknownIssuer(_)
                | Error::UnknownKey(_)
                | Error::AudienceNotAllowed(_)
                | Error::TtlExceedsMax { .. }
                | Error::ReservedClaim(_)
                | Error::MissingClaim(_)
                | Error::ForbiddenClaim(_)
                | Error::ClaimsTooLarge { .. }
                | Error::NoActiveKey(_)
                | Error::InvalidSpiffeId(_)
                | Error::TrustDomainNotAllowed(_)
                | Error::NoSpiffeBundle(_)
                | Error::MetricsNotAllowed
                | Error::InvalidToken(_)
                | Error::NotAdmin
                | Error::NotAuditor
                | Error::NoSuchTile(_)
                | Error::NoCheckpoint
                | Error::Conflict(_)
                | Error::AuditUnavailable
                | Error::Hsm(_)
                | Error::Signer(_)
                | Error::Store(_)
                | Error::Internal(_)
                | Error::NotReady(_)
                | Error::RateLimited { .. } => {}
            }
        }
        let mut all: Vec<ApiError> = domain.into_iter().map(ApiError::from).collect();
        all.extend([
            ApiError::MalformedJson(s()),
            ApiError::InvalidBody(s()),
            ApiError::InvalidPath(s()),
            ApiError::UnsupportedMediaType,
            ApiError::RequestTimeout,
            ApiError::BodyTooLarge(1),
            ApiError::NotFound,
            ApiError::MethodNotAllowed,
            ApiError::TooManyConnections(1),
            ApiError::DeadlineExceeded(1),
        ]);
        all
    }

    /// The document promises each status's codes; the errors keep the promise.
    #[test]
    fn every_error_is_a_documented_code_of_its_status() {
        for error in every_error() {
            let (code, http) = (error.code(), error.status().as_u16());
            if http == 405 {
                // Not an operation's answer: a method the path has no operation for.
                assert_eq!(code, "method_not_allowed");
                continue;
            }
            assert!(
                status(http).codes.contains(&code),
                "{code} ({http}) is not among the codes the OpenAPI document lists for {http}: add it to STATUSES in src/api/openapi/errors.rs"
            );
        }
    }

    /// And lists no code that nothing sends.
    #[test]
    fn every_documented_code_is_sent() {
        let sent: Vec<(u16, &str)> = every_error()
            .iter()
            .map(|e| (e.status().as_u16(), e.code()))
            .collect();
        for s in STATUSES {
            for code in s.codes {
                assert!(
                    sent.contains(&(s.status, code)),
                    "{code} ({}) is documented but no error sends it",
                    s.status
                );
            }
        }
    }
}
