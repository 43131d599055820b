"""Version 1 of the state database's schema: the tables of the release before versioning, never edited."""

from __future__ import annotations

# Version 1 is the schema of the release before versioning, as its modules created it (CREATE IF NOT EXISTS, so a
# state file of that release, which has user_version 0 and every table, passes through unchanged).
V1 = """
-- the audit trail: every write of a person or of the system
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at_ns INTEGER NOT NULL,
    actor TEXT NOT NULL,          -- a user name, or 'system'
    action TEXT NOT NULL,         -- e.g. alarm.ack, hazard.transition, baseline.set
    target TEXT NOT NULL,         -- e.g. alarm:12, hazard:3, baseline:inc1/horizontal_displacement
    why TEXT,
    detail TEXT                   -- JSON
);
CREATE INDEX IF NOT EXISTS audit_target ON audit(target);

-- alarms (ISA-18.2 states), their log, raises for chatter, suppressions by design
CREATE TABLE IF NOT EXISTS alarm_alarms (
    id INTEGER PRIMARY KEY,
    rule TEXT NOT NULL,
    device TEXT NOT NULL,
    quantity TEXT NOT NULL,
    kind TEXT NOT NULL,
    category TEXT NOT NULL CHECK (category IN ('value', 'health')),
    state TEXT NOT NULL
        CHECK (state IN ('pending', 'active_unacked', 'active_acked', 'rtn_unacked', 'latched', 'normal')),
    level INTEGER NOT NULL,
    max_level INTEGER NOT NULL,
    value REAL NOT NULL,
    threshold REAL,
    source TEXT NOT NULL,
    title_zh TEXT NOT NULL,
    title_en TEXT NOT NULL,
    pending_ns INTEGER,
    raised_ns INTEGER,
    acked_ns INTEGER,
    acked_by TEXT,
    cleared_ns INTEGER,
    closed_ns INTEGER,
    shelved_until_ns INTEGER,
    shelved_by TEXT,
    shelve_reason TEXT,
    suppressed_by TEXT,
    chattering INTEGER NOT NULL DEFAULT 0,
    raise_count INTEGER NOT NULL DEFAULT 0,
    source_ns INTEGER
);
-- one open alarm per rule x device x quantity, enforced by the database and not only by this module
CREATE UNIQUE INDEX IF NOT EXISTS alarm_alarms_one_open ON alarm_alarms(rule, device, quantity)
    WHERE state != 'normal';
CREATE INDEX IF NOT EXISTS alarm_alarms_open_device ON alarm_alarms(device) WHERE state != 'normal';
CREATE INDEX IF NOT EXISTS alarm_alarms_start ON alarm_alarms(COALESCE(raised_ns, pending_ns));
CREATE TABLE IF NOT EXISTS alarm_log (
    id INTEGER PRIMARY KEY,
    alarm_id INTEGER NOT NULL REFERENCES alarm_alarms(id),
    at_ns INTEGER NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    text TEXT,
    level INTEGER NOT NULL,
    value REAL NOT NULL,
    state TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alarm_log_alarm ON alarm_log(alarm_id, id);
-- raise times per rule x device x quantity (not per row: an acked alarm that flaps opens a new row each time)
CREATE TABLE IF NOT EXISTS alarm_raises (
    rule TEXT NOT NULL,
    device TEXT NOT NULL,
    quantity TEXT NOT NULL,
    at_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS alarm_raises_key ON alarm_raises(rule, device, quantity, at_ns);
CREATE TABLE IF NOT EXISTS alarm_suppressions (
    device TEXT NOT NULL,
    reason TEXT NOT NULL,
    since_ns INTEGER NOT NULL,
    actor TEXT NOT NULL,
    PRIMARY KEY (device, reason)
);

-- escalation: steps by schedule, the outbox, deliveries per channel
CREATE TABLE IF NOT EXISTS esc_steps (
    id INTEGER PRIMARY KEY,
    alarm_id INTEGER NOT NULL,
    episode TEXT NOT NULL,          -- one escalation run: the raise (or re-raise, or return from shelving)
    policy TEXT NOT NULL,
    tier INTEGER NOT NULL,
    seq INTEGER NOT NULL,           -- 0 = first notice, 1.. = repeats while unacknowledged
    due_ns INTEGER NOT NULL,
    status TEXT NOT NULL,           -- pending | fired | cancelled
    fired_ns INTEGER,
    cancelled_ns INTEGER,
    cancel_reason TEXT,
    UNIQUE (alarm_id, episode, tier, seq)
);
CREATE INDEX IF NOT EXISTS esc_steps_due ON esc_steps(status, due_ns);
CREATE TABLE IF NOT EXISTS esc_outbox (
    id INTEGER PRIMARY KEY,
    step_id INTEGER,
    alarm_id INTEGER,
    hazard_id INTEGER,
    channel TEXT NOT NULL,
    recipients TEXT NOT NULL,       -- JSON list of person ids
    group_key TEXT NOT NULL,        -- channel|sorted recipient ids: grouping and rate limiting happen per key
    level INTEGER NOT NULL,
    subject TEXT NOT NULL,
    text TEXT NOT NULL,
    data TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    status TEXT NOT NULL,           -- queued | sent | cancelled | failed
    delivery_id INTEGER,
    error TEXT
);
CREATE INDEX IF NOT EXISTS esc_outbox_status ON esc_outbox(status, group_key);
CREATE TABLE IF NOT EXISTS esc_deliveries (
    id INTEGER PRIMARY KEY,
    channel TEXT NOT NULL,
    group_key TEXT NOT NULL,
    recipients TEXT NOT NULL,
    key TEXT NOT NULL UNIQUE,       -- idempotency key sent with the message (webhook header, MQTT field)
    level INTEGER NOT NULL,
    subject TEXT NOT NULL,
    text TEXT NOT NULL,
    data TEXT NOT NULL,
    items INTEGER NOT NULL,
    status TEXT NOT NULL,           -- sending | sent | retry | failed
    attempts INTEGER NOT NULL,
    created_ns INTEGER NOT NULL,
    next_try_ns INTEGER,
    sent_ns INTEGER,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS esc_deliveries_group ON esc_deliveries(group_key, created_ns);

-- hazard records (发现 → 整改 → 复查 → 销号), their history and clocks
CREATE TABLE IF NOT EXISTS hazard_record (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    status TEXT NOT NULL,
    origin TEXT NOT NULL,                 -- alarm | manual
    source TEXT NOT NULL,                 -- self_check | inspection (an alarm of the site's own monitoring: self_check)
    unit_name TEXT NOT NULL,              -- 隐患单位名称
    prefecture TEXT, county TEXT, sector TEXT NOT NULL,
    description TEXT NOT NULL,            -- 隐患内容
    device TEXT, point TEXT, alarm_id INTEGER, alarm_level INTEGER,
    value REAL, threshold REAL, value_unit TEXT, provenance TEXT,
    proposed_class TEXT, proposed_version TEXT, proposed_article TEXT, proposed_text TEXT,
    klass TEXT, basis_version TEXT, basis_article TEXT, basis_text TEXT,
    confirmed_at_ns INTEGER, confirmed_by TEXT,
    responsible TEXT, measures TEXT, funds REAL, deadline TEXT, emergency_plan TEXT,   -- deadline: ISO local date
    listing TEXT NOT NULL DEFAULT 'none', listed_at_ns INTEGER, listed_by TEXT, listing_due_ns INTEGER,
    report_due_ns INTEGER, reported_at_ns INTEGER, reported_by TEXT, report_to TEXT, report_ref TEXT,
    submitted_at_ns INTEGER, submitted_by TEXT, evidence TEXT,
    accepted_at_ns INTEGER, accepted_by TEXT, completed_on TEXT,                       -- accepted = closed (销号)
    accept_note TEXT,                     -- accepted while its source alarm was still active: the acceptor's reason
    dismiss_reason TEXT,
    reject_count INTEGER NOT NULL DEFAULT 0, reopen_count INTEGER NOT NULL DEFAULT 0,
    found_at_ns INTEGER NOT NULL, found_by TEXT NOT NULL, updated_at_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS hazard_record_found ON hazard_record(found_at_ns);
CREATE TABLE IF NOT EXISTS hazard_history (
    id INTEGER PRIMARY KEY,
    hazard_id INTEGER NOT NULL REFERENCES hazard_record(id),
    at_ns INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    from_status TEXT,
    to_status TEXT NOT NULL,
    why TEXT,
    detail TEXT                           -- JSON
);
CREATE INDEX IF NOT EXISTS hazard_history_hazard ON hazard_history(hazard_id);
CREATE TABLE IF NOT EXISTS hazard_clock (
    hazard_id INTEGER NOT NULL REFERENCES hazard_record(id),
    kind TEXT NOT NULL,
    due_ns INTEGER NOT NULL,
    fired_ns INTEGER,                     -- set once by fire_overdue: a clock notifies once, across restarts
    stopped_ns INTEGER,                   -- set when the obligation is met (report made, rectification submitted, 销号)
    PRIMARY KEY (hazard_id, kind)
);

-- baselines of excavation points and their history
CREATE TABLE IF NOT EXISTS baseline_current (
    device TEXT NOT NULL,
    quantity TEXT NOT NULL,
    value REAL NOT NULL,
    set_ns INTEGER NOT NULL,
    set_by TEXT NOT NULL,
    why TEXT,
    reading_ts_ns INTEGER,        -- the reading the value was taken from, when it came from one
    PRIMARY KEY (device, quantity)
);
CREATE TABLE IF NOT EXISTS baseline_history (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    quantity TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('set', 'reset')),
    at_ns INTEGER NOT NULL,
    actor TEXT NOT NULL,
    why TEXT,
    old REAL,                     -- NULL: there was no baseline
    new REAL,                     -- NULL: reset
    reading_ts_ns INTEGER
);
CREATE INDEX IF NOT EXISTS baseline_history_point ON baseline_history(device, quantity);

-- login sessions of the HTTP API and console
CREATE TABLE IF NOT EXISTS auth_sessions (
    token_hash TEXT PRIMARY KEY,    -- sha256 of the token: a copied database file does not hand out sessions
    user TEXT NOT NULL,
    role TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    expires_ns INTEGER NOT NULL,    -- absolute expiry (auth.session_ttl_s after the login)
    last_seen_ns INTEGER            -- idle expiry: auth.session_idle_s after this (updated at most once a minute)
);

-- survey imports and their results
CREATE TABLE IF NOT EXISTS survey_imports (
    id INTEGER PRIMARY KEY,
    at_ns INTEGER NOT NULL,
    actor TEXT NOT NULL,
    filename TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    rows INTEGER NOT NULL,
    first_ns INTEGER NOT NULL,
    last_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS survey_results (
    device TEXT NOT NULL,
    quantity TEXT NOT NULL,
    ts_ns INTEGER NOT NULL,
    value REAL NOT NULL,
    reported_rate REAL,
    import_id INTEGER NOT NULL REFERENCES survey_imports(id),
    PRIMARY KEY (device, quantity, ts_ns)
);

-- each excavation point's last value per site day
CREATE TABLE IF NOT EXISTS daily_values (
    device TEXT NOT NULL,
    quantity TEXT NOT NULL,
    day TEXT NOT NULL,              -- the site's local day, ISO
    ts_ns INTEGER NOT NULL,         -- the reading's own time (a survey's time)
    value REAL NOT NULL,
    PRIMARY KEY (device, quantity, day)
);

-- the alarm engine's probe while the database refuses writes (a one-row table)
CREATE TABLE IF NOT EXISTS store_probe (id INTEGER PRIMARY KEY, at_ns INTEGER);
"""
