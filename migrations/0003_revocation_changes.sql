-- signetd state schema, version 3: token revocations numbered by change, so a daemon
-- reads only what changed since its last reading (revocations made by the CLI or by
-- another replica) instead of the whole list at every lifecycle tick.
-- (Version 2 is the key metadata.)

-- Counters handed out inside a writing transaction. Taking the next number locks the
-- counter's row until the transaction ends, so numbers become visible in order: a
-- reader that has seen number N has seen every number below it.
CREATE TABLE state_counters (
    name TEXT PRIMARY KEY NOT NULL,
    value BIGINT NOT NULL
);
INSERT INTO state_counters (name, value) VALUES ('token_revocations', 0);

-- The counter's value when the row last changed; 0 for rows older than this version.
ALTER TABLE token_revocations ADD COLUMN change BIGINT NOT NULL DEFAULT 0;
CREATE INDEX token_revocations_change ON token_revocations (change);
