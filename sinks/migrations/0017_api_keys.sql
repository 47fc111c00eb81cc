-- Who may call the command API: tenants and their API keys. A key names its tenant, a
-- principal (the service or person using it) and scopes; only a SHA-256 of its secret is
-- kept, so the table cannot be replayed as credentials. Revoked keys stay, for the audit.
CREATE TABLE tenants (
    tenant_id   text PRIMARY KEY CHECK (tenant_id ~ '^[A-Za-z0-9_.@-]{1,64}$'),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    key_id       text PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{16}$'),
    tenant_id    text NOT NULL REFERENCES tenants (tenant_id),
    principal    text NOT NULL,
    scopes       text[] NOT NULL,
    secret_hash  bytea NOT NULL CHECK (length(secret_hash) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id);
