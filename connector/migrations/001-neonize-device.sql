-- Which whatsmeow device is which instance's, beside whatsmeow's own tables in a shared Postgres
-- (connector/engines/neonize_store.py). IF NOT EXISTS: an earlier wabus created it on the fly.
CREATE TABLE IF NOT EXISTS wabus_neonize_device (
    instance TEXT PRIMARY KEY,
    jid TEXT NOT NULL,
    paired_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
