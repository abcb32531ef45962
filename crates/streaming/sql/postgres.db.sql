-- rnats SQL store schema for PostgreSQL.
--
-- Same tables and columns as the reference NATS Streaming server's SQL store, so a database
-- created by either server's script works with both. Run it once on an empty database:
--   psql -d <dbname> -f crates/streaming/sql/postgres.db.sql
-- Every statement is idempotent (IF NOT EXISTS).

-- One row: the server's ServerInfo protobuf; version is the schema version (1).
CREATE TABLE IF NOT EXISTS ServerInfo (
    uniquerow INTEGER DEFAULT 1,
    id        VARCHAR(1024),
    proto     BYTEA,
    version   INTEGER,
    PRIMARY KEY (uniquerow)
);

-- Connected clients; proto is the ClientInfo protobuf.
CREATE TABLE IF NOT EXISTS Clients (
    id      VARCHAR(1024),
    hbinbox TEXT,
    proto   BYTEA,
    PRIMARY KEY (id)
);

-- Channels: maxseq keeps the last sequence once every message is gone; the limits are those
-- in force when the channel was last opened; deleted marks a channel being purged.
CREATE TABLE IF NOT EXISTS Channels (
    id       INTEGER,
    name     VARCHAR(1024) NOT NULL,
    maxseq   BIGINT DEFAULT 0,
    maxmsgs  INTEGER DEFAULT 0,
    maxbytes BIGINT DEFAULT 0,
    maxage   BIGINT DEFAULT 0,
    deleted  BOOL DEFAULT FALSE,
    PRIMARY KEY (id)
);
CREATE INDEX IF NOT EXISTS Idx_ChannelsName ON Channels (name);

-- Messages: id is the channel's id; data is the MsgProto protobuf, size its length.
CREATE TABLE IF NOT EXISTS Messages (
    id        INTEGER,
    seq       BIGINT,
    timestamp BIGINT,
    size      INTEGER,
    data      BYTEA,
    CONSTRAINT PK_MsgKey PRIMARY KEY (id, seq)
);
CREATE INDEX IF NOT EXISTS Idx_MsgsTimestamp ON Messages (timestamp);

-- Subscriptions: id is the channel's id; proto is the SubState protobuf.
CREATE TABLE IF NOT EXISTS Subscriptions (
    id       INTEGER,
    subid    BIGINT,
    lastsent BIGINT DEFAULT 0,
    proto    BYTEA,
    deleted  BOOL DEFAULT FALSE,
    CONSTRAINT PK_SubKey PRIMARY KEY (id, subid)
);

-- Messages sent and not yet acknowledged: either one row per message (seq > 0), or rows
-- holding JSON arrays of sequences in pending and acks (seq = 0), read in row order.
CREATE TABLE IF NOT EXISTS SubsPending (
    subid    BIGINT,
    row      BIGINT,
    seq      BIGINT DEFAULT 0,
    lastsent BIGINT DEFAULT 0,
    pending  BYTEA,
    acks     BYTEA,
    CONSTRAINT PK_MsgPendingKey PRIMARY KEY (subid, row)
);
CREATE INDEX IF NOT EXISTS Idx_SubsPendingSeq ON SubsPending (seq);

-- Fault tolerance: the active server's id and a tick it moves every second.
CREATE TABLE IF NOT EXISTS StoreLock (
    id   VARCHAR(30),
    tick BIGINT DEFAULT 0
);
