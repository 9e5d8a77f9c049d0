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
    # 3: the local web page: accounts, cases and long-term categories (art. 7), tags,
    #    settings, the disc register, and the indexes that keep search fast
    """
    CREATE TABLE users (
        id                   INTEGER PRIMARY KEY,
        name                 TEXT NOT NULL UNIQUE COLLATE NOCASE,
        display_name         TEXT NOT NULL DEFAULT '',
        role                 TEXT NOT NULL,
        officer_id           INTEGER REFERENCES officers(id),
        password_hash        TEXT NOT NULL,
        session_epoch        INTEGER NOT NULL DEFAULT 0,
        disabled             INTEGER NOT NULL DEFAULT 0,
        created_at           TEXT NOT NULL,
        password_changed_at  TEXT NOT NULL,
        last_login_at        TEXT
    );
    CREATE TABLE categories (
        key        TEXT PRIMARY KEY,
        name_zh    TEXT NOT NULL,
        name_en    TEXT NOT NULL,
        long_term  INTEGER NOT NULL DEFAULT 1,
        ordinal    INTEGER NOT NULL
    );
    INSERT INTO categories (key, name_zh, name_en, long_term, ordinal) VALUES
        ('public_report', '群众举报', 'public report', 1, 1),
        ('large_value', '案值较大', 'large case value', 1, 2),
        ('transfer', '涉嫌移送', 'suspected transfer to judiciary', 1, 3),
        ('seizure', '查封扣押', 'seizure or sealing', 1, 4),
        ('objection', '当事人异议', 'party objects', 1, 5),
        ('major', '其他重大复杂', 'other major or complex case', 1, 6);
    CREATE TABLE cases (
        id          INTEGER PRIMARY KEY,
        number      TEXT NOT NULL UNIQUE,
        title       TEXT NOT NULL,
        category    TEXT REFERENCES categories(key),
        status      TEXT NOT NULL DEFAULT 'open',
        notes       TEXT NOT NULL DEFAULT '',
        created_at  TEXT NOT NULL,
        created_by  TEXT NOT NULL
    );
    -- Link tables carry the recording's camera time (`at`, never changes) so that a
    -- case, category or tag lists its recordings newest first from one index.
    CREATE TABLE recording_cases (
        case_id       INTEGER NOT NULL REFERENCES cases(id),
        recording_id  INTEGER NOT NULL REFERENCES recordings(id),
        at            TEXT NOT NULL,
        tagged_at     TEXT NOT NULL,
        tagged_by     TEXT NOT NULL,
        PRIMARY KEY (case_id, recording_id)
    );
    CREATE INDEX recording_cases_by_time ON recording_cases(case_id, at, recording_id);
    CREATE INDEX recording_cases_by_recording ON recording_cases(recording_id);
    CREATE TABLE recording_categories (
        category      TEXT NOT NULL REFERENCES categories(key),
        recording_id  INTEGER NOT NULL REFERENCES recordings(id),
        at            TEXT NOT NULL,
        tagged_at     TEXT NOT NULL,
        tagged_by     TEXT NOT NULL,
        PRIMARY KEY (category, recording_id)
    );
    CREATE INDEX recording_categories_by_time ON recording_categories(category, at, recording_id);
    CREATE INDEX recording_categories_by_recording ON recording_categories(recording_id);
    CREATE TABLE tags (
        id    INTEGER PRIMARY KEY,
        name  TEXT NOT NULL UNIQUE
    );
    CREATE TABLE recording_tags (
        tag_id        INTEGER NOT NULL REFERENCES tags(id),
        recording_id  INTEGER NOT NULL REFERENCES recordings(id),
        at            TEXT NOT NULL,
        tagged_at     TEXT NOT NULL,
        tagged_by     TEXT NOT NULL,
        PRIMARY KEY (tag_id, recording_id)
    );
    CREATE INDEX recording_tags_by_time ON recording_tags(tag_id, at, recording_id);
    CREATE INDEX recording_tags_by_recording ON recording_tags(recording_id);
    CREATE INDEX recordings_by_time ON recordings(camera_mtime, id);
    CREATE INDEX recordings_by_officer ON recordings(officer_id, camera_mtime, id);
    CREATE INDEX recordings_by_device ON recordings(device_serial, camera_mtime, id);
    CREATE TABLE settings (
        key         TEXT PRIMARY KEY,
        value       TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        updated_by  TEXT NOT NULL
    );
    -- The disc register: burn jobs, the discs they made, and which recordings are on each.
    CREATE TABLE burn_jobs (
        id          INTEGER PRIMARY KEY,
        set_id      TEXT NOT NULL UNIQUE,
        case_id     INTEGER REFERENCES cases(id),
        medium      TEXT NOT NULL,
        drive       TEXT NOT NULL,
        state       TEXT NOT NULL,
        error       TEXT,
        created_at  TEXT NOT NULL,
        created_by  TEXT NOT NULL,
        finished_at TEXT
    );
    CREATE TABLE discs (
        id            INTEGER PRIMARY KEY,
        job_id        INTEGER NOT NULL REFERENCES burn_jobs(id),
        label         TEXT NOT NULL UNIQUE,
        disc_index    INTEGER NOT NULL,
        disc_count    INTEGER NOT NULL,
        medium        TEXT NOT NULL,
        drive         TEXT NOT NULL,
        state         TEXT NOT NULL,
        image_sha256  TEXT,
        image_bytes   INTEGER,
        volume_id     TEXT,
        burned_at     TEXT,
        verified_at   TEXT,
        error         TEXT
    );
    CREATE INDEX discs_by_job ON discs(job_id, disc_index);
    CREATE TABLE disc_recordings (
        disc_id       INTEGER NOT NULL REFERENCES discs(id),
        recording_id  INTEGER NOT NULL REFERENCES recordings(id),
        disc_path     TEXT NOT NULL,
        PRIMARY KEY (disc_id, recording_id)
    );
    CREATE INDEX disc_recordings_by_recording ON disc_recordings(recording_id);
    """,
]
