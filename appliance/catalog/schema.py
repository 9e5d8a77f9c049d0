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
    # 4: the regulation's workflows (issue 6): the device registry in full (art. 4, 9, 11,
    #    12, 20, 21), dockings for the deadlines (art. 13, 15.1), the exception register
    #    (art. 8), confidentiality marks and clearances (art. 3), release approval (art. 16),
    #    judicial access and its register (art. 17), retention purges (art. 7 and the
    #    national six-month minimum), continuity flags (art. 5, 6)
    """
    ALTER TABLE devices ADD COLUMN asset_number TEXT NOT NULL DEFAULT '';
    ALTER TABLE devices ADD COLUMN purchase_date TEXT;
    ALTER TABLE devices ADD COLUMN custodian TEXT NOT NULL DEFAULT '';
    ALTER TABLE devices ADD COLUMN notes TEXT NOT NULL DEFAULT '';
    ALTER TABLE devices ADD COLUMN status_changed_at TEXT;
    CREATE UNIQUE INDEX devices_by_asset_number ON devices(asset_number) WHERE asset_number != '';
    -- Who held which camera when (art. 11): a recording belongs to the officer who held
    -- the camera at the recording's time. until IS NULL: the current assignment;
    -- officer_id IS NULL: the camera was held by nobody (in the cabinet).
    CREATE TABLE device_assignments (
        id          INTEGER PRIMARY KEY,
        device_id   INTEGER NOT NULL REFERENCES devices(id),
        officer_id  INTEGER REFERENCES officers(id),
        since       TEXT NOT NULL,
        until       TEXT,
        assigned_by TEXT NOT NULL,
        reason      TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX device_assignments_by_device ON device_assignments(device_id, since);
    INSERT INTO device_assignments (device_id, officer_id, since, assigned_by, reason)
        SELECT id, officer_id, created_at, 'system', 'assigned before the assignment history began'
        FROM devices WHERE officer_id IS NOT NULL;
    -- Status changes, maintenance, repairs, upgrades, checks (art. 12, 20, 21).
    CREATE TABLE device_log (
        id            INTEGER PRIMARY KEY,
        device_id     INTEGER NOT NULL REFERENCES devices(id),
        at            TEXT NOT NULL,
        day           TEXT,
        kind          TEXT NOT NULL,
        status_from   TEXT,
        status_to     TEXT,
        text          TEXT NOT NULL DEFAULT '',
        performed_by  TEXT NOT NULL DEFAULT '',
        actor         TEXT NOT NULL
    );
    CREATE INDEX device_log_by_device ON device_log(device_id, at);
    CREATE INDEX device_log_status ON device_log(device_id, kind, at);
    -- Every docking of a registered camera (art. 13, 15.1); a docking of a camera that is
    -- not in service is flagged (art. 4).
    CREATE TABLE dockings (
        id          INTEGER PRIMARY KEY,
        device_id   INTEGER NOT NULL REFERENCES devices(id),
        session_id  TEXT REFERENCES sessions(id),
        at          TEXT NOT NULL,
        status      TEXT NOT NULL
    );
    CREATE INDEX dockings_by_device ON dockings(device_id, at);
    INSERT INTO dockings (device_id, session_id, at, status)
        SELECT device_id, id, started_at, 'in_service' FROM sessions WHERE device_id IS NOT NULL;
    ALTER TABLE sessions ADD COLUMN device_flag TEXT;
    -- Exception register (art. 8): an action that was not recorded, and who approved that.
    CREATE TABLE exceptions (
        id               INTEGER PRIMARY KEY,
        occurred_at      TEXT NOT NULL,
        place            TEXT NOT NULL,
        officers         TEXT NOT NULL,
        case_id          INTEGER REFERENCES cases(id),
        reason_kind      TEXT NOT NULL,
        reason           TEXT NOT NULL,
        onsite_approver  TEXT NOT NULL DEFAULT '',
        requested_by     TEXT NOT NULL,
        requested_at     TEXT NOT NULL,
        state            TEXT NOT NULL DEFAULT 'pending',
        decided_by       TEXT,
        decided_at       TEXT,
        decision_reason  TEXT,
        decided_as       TEXT
    );
    CREATE INDEX exceptions_by_time ON exceptions(occurred_at);
    -- Confidentiality (art. 3): marks on recordings and cases; clearances of accounts
    -- beyond what their role has.
    CREATE TABLE recording_marks (
        recording_id  INTEGER NOT NULL REFERENCES recordings(id),
        mark          TEXT NOT NULL,
        marked_at     TEXT NOT NULL,
        marked_by     TEXT NOT NULL,
        reason        TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (recording_id, mark)
    );
    CREATE TABLE case_marks (
        case_id    INTEGER NOT NULL REFERENCES cases(id),
        mark       TEXT NOT NULL,
        marked_at  TEXT NOT NULL,
        marked_by  TEXT NOT NULL,
        reason     TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (case_id, mark)
    );
    CREATE TABLE user_clearances (
        user_id     INTEGER NOT NULL REFERENCES users(id),
        mark        TEXT NOT NULL,
        granted_at  TEXT NOT NULL,
        granted_by  TEXT NOT NULL,
        PRIMARY KEY (user_id, mark)
    );
    -- Release approval (art. 16): request, decision, then the export.
    CREATE TABLE releases (
        id               INTEGER PRIMARY KEY,
        number           TEXT NOT NULL UNIQUE,
        purpose          TEXT NOT NULL,
        recipient        TEXT NOT NULL,
        reason           TEXT NOT NULL,
        case_id          INTEGER REFERENCES cases(id),
        want_disc        INTEGER NOT NULL DEFAULT 0,
        requested_by     TEXT NOT NULL,
        requested_at     TEXT NOT NULL,
        state            TEXT NOT NULL DEFAULT 'pending',
        decided_by       TEXT,
        decided_at       TEXT,
        decision_reason  TEXT,
        exported_by      TEXT,
        exported_at      TEXT,
        export_file      TEXT,
        export_sha256    TEXT,
        export_bytes     INTEGER,
        burn_job_id      INTEGER REFERENCES burn_jobs(id)
    );
    CREATE TABLE release_recordings (
        release_id    INTEGER NOT NULL REFERENCES releases(id),
        recording_id  INTEGER NOT NULL REFERENCES recordings(id),
        PRIMARY KEY (release_id, recording_id)
    );
    CREATE INDEX release_recordings_by_recording ON release_recordings(recording_id);
    -- Judicial access (art. 17): the request, the bureau head's decision, the viewings.
    CREATE TABLE judicial_requests (
        id               INTEGER PRIMARY KEY,
        number           TEXT NOT NULL UNIQUE,
        authority_kind   TEXT NOT NULL,
        authority        TEXT NOT NULL,
        letter_ref       TEXT NOT NULL DEFAULT '',
        purpose          TEXT NOT NULL,
        case_id          INTEGER REFERENCES cases(id),
        requested_by     TEXT NOT NULL,
        requested_at     TEXT NOT NULL,
        state            TEXT NOT NULL DEFAULT 'pending',
        decided_by       TEXT,
        decided_at       TEXT,
        decision_reason  TEXT
    );
    CREATE TABLE judicial_recordings (
        request_id    INTEGER NOT NULL REFERENCES judicial_requests(id),
        recording_id  INTEGER NOT NULL REFERENCES recordings(id),
        PRIMARY KEY (request_id, recording_id)
    );
    CREATE INDEX judicial_recordings_by_recording ON judicial_recordings(recording_id);
    CREATE TABLE judicial_accesses (
        id             INTEGER PRIMARY KEY,
        request_id     INTEGER NOT NULL REFERENCES judicial_requests(id),
        viewer         TEXT NOT NULL,
        viewer_unit    TEXT NOT NULL,
        viewer_id      TEXT NOT NULL DEFAULT '',
        reason         TEXT NOT NULL,
        started_at     TEXT NOT NULL,
        ended_at       TEXT,
        registered_by  TEXT NOT NULL,
        registered_at  TEXT NOT NULL,
        notes          TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX judicial_accesses_by_time ON judicial_accesses(started_at);
    -- Retention (art. 7, six-month minimum): proposed purge lists, approved by a leader,
    -- carried out file by file. A purged recording keeps its catalog row (what it was,
    -- its hash, who purged it under which list); only the file goes.
    CREATE TABLE purge_lists (
        id               INTEGER PRIMARY KEY,
        number           TEXT NOT NULL UNIQUE,
        months           INTEGER NOT NULL,
        cutoff           TEXT NOT NULL,
        requested_by     TEXT NOT NULL,
        requested_at     TEXT NOT NULL,
        state            TEXT NOT NULL DEFAULT 'pending',
        decided_by       TEXT,
        decided_at       TEXT,
        decision_reason  TEXT,
        executed_by      TEXT,
        executed_at      TEXT,
        finished_at      TEXT
    );
    CREATE TABLE purge_items (
        list_id       INTEGER NOT NULL REFERENCES purge_lists(id),
        recording_id  INTEGER NOT NULL REFERENCES recordings(id),
        state         TEXT NOT NULL DEFAULT 'listed',
        note          TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (list_id, recording_id)
    );
    CREATE INDEX purge_items_by_recording ON purge_items(recording_id);
    ALTER TABLE purge_items ADD COLUMN removed_at TEXT;
    ALTER TABLE recordings ADD COLUMN purged_at TEXT;
    ALTER TABLE recordings ADD COLUMN purged_by TEXT;
    ALTER TABLE recordings ADD COLUMN purge_list_id INTEGER REFERENCES purge_lists(id);
    ALTER TABLE sessions ADD COLUMN snapshot_released_at TEXT;
    CREATE INDEX recordings_by_ingest ON recordings(ingested_at);
    -- The invariants of retention, in the database itself (the code checks them first):
    -- a recording row is never deleted; a purge needs an approved list and can never touch
    -- a recording in a long-term category (art. 7) or on a case that is not closed; a
    -- purged recording stays purged.
    CREATE TRIGGER recordings_no_delete BEFORE DELETE ON recordings
        BEGIN SELECT RAISE(ABORT, 'recordings are never deleted from the catalog'); END;
    CREATE TRIGGER recordings_purge_guard BEFORE UPDATE OF purged_at ON recordings
        WHEN NEW.purged_at IS NOT NULL AND (
            OLD.purged_at IS NOT NULL
            OR NOT EXISTS (SELECT 1 FROM purge_lists p WHERE p.id = NEW.purge_list_id
                           AND p.state IN ('approved', 'executing'))
            OR EXISTS (SELECT 1 FROM recording_categories x JOIN categories k ON k.key = x.category
                       WHERE x.recording_id = NEW.id AND k.long_term = 1)
            OR EXISTS (SELECT 1 FROM recording_cases x JOIN cases c ON c.id = x.case_id
                       WHERE x.recording_id = NEW.id AND (c.status != 'closed' OR c.category IN
                           (SELECT key FROM categories WHERE long_term = 1))))
        BEGIN SELECT RAISE(ABORT, 'this recording may not be purged (long-term category, open case, or no approved purge list)'); END;
    CREATE TRIGGER recordings_stay_purged BEFORE UPDATE OF purged_at ON recordings
        WHEN OLD.purged_at IS NOT NULL AND NEW.purged_at IS NULL
        BEGIN SELECT RAISE(ABORT, 'a purged recording stays purged'); END;
    -- Continuity (art. 5, 6): consecutive clips of a device with a gap, an overlap or a
    -- clock jump between them; the flag and its review are never removed.
    CREATE TABLE continuity_flags (
        id            INTEGER PRIMARY KEY,
        device_serial TEXT NOT NULL,
        prev_id       INTEGER NOT NULL REFERENCES recordings(id),
        next_id       INTEGER NOT NULL REFERENCES recordings(id),
        kind          TEXT NOT NULL,
        seconds       REAL NOT NULL,
        prev_end      TEXT NOT NULL,
        next_start    TEXT NOT NULL,
        detected_at   TEXT NOT NULL,
        state         TEXT NOT NULL DEFAULT 'open',
        explanation   TEXT,
        reviewed_by   TEXT,
        reviewed_at   TEXT,
        UNIQUE (prev_id, next_id, kind)
    );
    CREATE INDEX continuity_by_device ON continuity_flags(device_serial, next_start);
    CREATE INDEX continuity_by_state ON continuity_flags(state, next_start);
    -- A requester never decides their own request (approvals.decide checks it first).
    CREATE TRIGGER exceptions_no_self_approval BEFORE UPDATE OF decided_by ON exceptions
        WHEN NEW.decided_by = NEW.requested_by COLLATE NOCASE
        BEGIN SELECT RAISE(ABORT, 'a requester can never decide their own request'); END;
    CREATE TRIGGER releases_no_self_approval BEFORE UPDATE OF decided_by ON releases
        WHEN NEW.decided_by = NEW.requested_by COLLATE NOCASE
        BEGIN SELECT RAISE(ABORT, 'a requester can never decide their own request'); END;
    CREATE TRIGGER judicial_requests_no_self_approval BEFORE UPDATE OF decided_by ON judicial_requests
        WHEN NEW.decided_by = NEW.requested_by COLLATE NOCASE
        BEGIN SELECT RAISE(ABORT, 'a requester can never decide their own request'); END;
    CREATE TRIGGER purge_lists_no_self_approval BEFORE UPDATE OF decided_by ON purge_lists
        WHEN NEW.decided_by = NEW.requested_by COLLATE NOCASE
        BEGIN SELECT RAISE(ABORT, 'a requester can never decide their own request'); END;
    -- The daily list of overdue and not-returned devices, kept as it was at the end of
    -- each working day.
    CREATE TABLE deadline_lists (
        day           TEXT PRIMARY KEY,
        generated_at  TEXT NOT NULL,
        overdue       TEXT NOT NULL,
        not_returned  TEXT NOT NULL
    );
    """,
]
