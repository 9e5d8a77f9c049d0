"""The catalog's SQLite schema, as an ordered list of migrations.

``PRAGMA user_version`` holds how many have been applied. A migration is never edited
once released: a box in the field may be ten versions behind and must still upgrade.
"""

MIGRATIONS: list[str] = [
    # 1: the ingest core
    """
    CREATE TABLE officers (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        badge       TEXT,
        created_at  TEXT NOT NULL
    );
    CREATE TABLE devices (
        id              INTEGER PRIMARY KEY,
        serial          TEXT NOT NULL UNIQUE,
        brand           TEXT NOT NULL DEFAULT '',
        model           TEXT NOT NULL DEFAULT '',
        officer_id      INTEGER REFERENCES officers(id),
        status          TEXT NOT NULL DEFAULT 'in_service',
        created_at      TEXT NOT NULL,
        last_docked_at  TEXT
    );
    CREATE TABLE sessions (
        id                  TEXT PRIMARY KEY,
        device_serial       TEXT NOT NULL,
        device_id           INTEGER REFERENCES devices(id),
        officer_id          INTEGER REFERENCES officers(id),
        slot                TEXT NOT NULL,
        port_path           TEXT NOT NULL DEFAULT '',
        profile             TEXT NOT NULL,
        state               TEXT NOT NULL,
        reason              TEXT,
        quarantined         INTEGER NOT NULL DEFAULT 0,
        vault_dir           TEXT NOT NULL,
        started_at          TEXT NOT NULL,
        updated_at          TEXT NOT NULL,
        finished_at         TEXT,
        files_total         INTEGER NOT NULL DEFAULT 0,
        bytes_total         INTEGER NOT NULL DEFAULT 0,
        camera_newest_mtime TEXT,
        clock_drift_s       REAL,
        clock_synced_at     TEXT,
        snapshot            TEXT,
        manifest_sha256     TEXT,
        wiped_files         INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX sessions_by_device ON sessions(device_serial, state);
    CREATE INDEX sessions_by_state ON sessions(state);
    -- Files of a session that are verified in the vault but not yet committed.
    CREATE TABLE session_files (
        session_id    TEXT NOT NULL REFERENCES sessions(id),
        rel_path_raw  BLOB NOT NULL,
        rel_path      TEXT NOT NULL,
        vault_path    TEXT NOT NULL,
        size          INTEGER NOT NULL,
        mtime_ns      INTEGER NOT NULL,
        sha256        TEXT NOT NULL,
        sm3           TEXT,
        verified_at   TEXT NOT NULL,
        PRIMARY KEY (session_id, rel_path_raw)
    );
    CREATE TABLE recordings (
        id            INTEGER PRIMARY KEY,
        session_id    TEXT NOT NULL REFERENCES sessions(id),
        device_serial TEXT NOT NULL,
        officer_id    INTEGER REFERENCES officers(id),
        rel_path_raw  BLOB NOT NULL,
        rel_path      TEXT NOT NULL,
        vault_path    TEXT NOT NULL UNIQUE,
        size          INTEGER NOT NULL,
        mtime_ns      INTEGER NOT NULL,
        camera_mtime  TEXT NOT NULL,
        sha256        TEXT NOT NULL,
        sm3           TEXT,
        ingested_at   TEXT NOT NULL,
        duration_s    REAL,
        start_time    TEXT,
        format        TEXT,
        codec         TEXT,
        width         INTEGER,
        height        INTEGER,
        probed_at     TEXT,
        probe_error   TEXT
    );
    CREATE INDEX recordings_identity ON recordings(device_serial, rel_path_raw, size, mtime_ns);
    CREATE INDEX recordings_by_session ON recordings(session_id);
    CREATE INDEX recordings_unprobed ON recordings(probed_at) WHERE probed_at IS NULL;
    -- Append-only; every row carries the hash of the row before it.
    CREATE TABLE audit_log (
        seq        INTEGER PRIMARY KEY,
        at         TEXT NOT NULL,
        actor      TEXT NOT NULL,
        action     TEXT NOT NULL,
        subject    TEXT NOT NULL DEFAULT '',
        details    TEXT NOT NULL DEFAULT '{}',
        prev_hash  TEXT NOT NULL,
        hash       TEXT NOT NULL
    );
    CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
    CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
    """,
    # 2: integrity checks (`appliance verify`)
    """
    CREATE TABLE verify_runs (
        id             INTEGER PRIMARY KEY,
        started_at     TEXT NOT NULL,
        finished_at    TEXT NOT NULL,
        since          TEXT,
        files_checked  INTEGER NOT NULL,
        bytes_checked  INTEGER NOT NULL,
        problems       INTEGER NOT NULL,
        pool_health    TEXT NOT NULL,
        details        TEXT NOT NULL DEFAULT '[]'
    );
    """,
]
