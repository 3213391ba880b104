-- signetd state schema, version 1: single-use jtis and token revocations.
-- Portable SQL: the same file is meant to run on SQLite and PostgreSQL (BIGINT and
-- TEXT only, no engine-specific types), so PostgreSQL is a second engine, not a fork.

-- Every jti consumed by single-use verification, kept until `expires_at`
-- (the token's exp plus the verification leeway).
CREATE TABLE used_jtis (
    jti TEXT PRIMARY KEY NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX used_jtis_expires_at ON used_jtis (expires_at);

-- Revoked tokens, listed until their exp.
CREATE TABLE token_revocations (
    jti TEXT PRIMARY KEY NOT NULL,
    exp BIGINT NOT NULL,
    revoked_at BIGINT NOT NULL
);
CREATE INDEX token_revocations_exp ON token_revocations (exp);
