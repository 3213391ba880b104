-- signetd state schema, version 4: leases, so that of several replicas sharing one
-- store one at a time applies lifecycle transitions.

-- A named lease, held by `holder` until `expires_at` (seconds since the epoch, by the
-- holder's clock). The holder renews it; anyone may take it once it has expired.
CREATE TABLE leases (
    name TEXT PRIMARY KEY NOT NULL,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
