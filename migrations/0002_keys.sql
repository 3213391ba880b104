-- signetd state schema, version 2: key metadata and certificates (issue 12).
-- The token keeps the private keys (and their public halves) and nothing else; what
-- signetd knows about each key lives here. Portable SQL, as 0001: BIGINT and TEXT only,
-- and partial unique indexes, which SQLite (3.8+) and PostgreSQL both have.

-- One row per issuer key (the audit key included). A key pair in the token without a
-- row is an incomplete key; a row whose key pair is gone is a missing key: both are
-- reported, neither is repaired without the operator.
CREATE TABLE keys (
    kid TEXT PRIMARY KEY NOT NULL,
    issuer TEXT NOT NULL,
    -- "ES256" or "EdDSA".
    algorithm TEXT NOT NULL,
    -- "jwt" or "raw".
    purpose TEXT NOT NULL,
    -- CKA_ID of the key pair in the token, lowercase hex.
    token_id TEXT NOT NULL,
    -- "pending", "active", "retired", "archived" or "revoked".
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- When the key entered its current state.
    updated_at BIGINT NOT NULL,
    -- The key's attestation certificate, DER in standard base64.
    certificate TEXT NOT NULL
);
CREATE INDEX keys_issuer ON keys (issuer);
-- At most one signing key and one successor per issuer: two concurrent rotations (or
-- generations) of one issuer cannot both commit, whichever process runs them.
CREATE UNIQUE INDEX keys_one_active ON keys (issuer) WHERE state = 'active';
CREATE UNIQUE INDEX keys_one_pending ON keys (issuer) WHERE state = 'pending';

-- Every state a key entered, and who moved it. A key never enters a state twice (states
-- only move forward), so (kid, to_state) is the key; from_state is NULL at creation.
CREATE TABLE key_state_history (
    kid TEXT NOT NULL REFERENCES keys (kid),
    from_state TEXT,
    to_state TEXT NOT NULL,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    PRIMARY KEY (kid, to_state)
);

-- The attestation CA's certificate (position 0) and the operator's chain above it
-- (1, 2, ...), DER in standard base64. Its key pair is in the token.
CREATE TABLE attestation_ca_chain (
    position BIGINT PRIMARY KEY NOT NULL,
    certificate TEXT NOT NULL,
    stored_at BIGINT NOT NULL
);
