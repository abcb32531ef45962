-- rnats SQL store schema for MySQL (8.0 or later) and MariaDB (10.2 or later).
--
-- Same tables and columns as the reference NATS Streaming server's SQL store, so a database
-- created by either server's script works with both. Run it once on an empty database:
--   mysql <dbname> < crates/streaming/sql/mysql.db.sql
-- Differences from the reference script, all compatible: tables use utf8mb4 (channel names
-- and client IDs may be any UTF-8), and Messages.data is a MEDIUMBLOB (messages up to 16 MiB;
-- a BLOB holds at most 64 KiB).

-- One row: the server's ServerInfo protobuf; version is the schema version (1).
CREATE TABLE IF NOT EXISTS ServerInfo (
    uniquerow INT DEFAULT 1,
    id        VARCHAR(1024),
    proto     BLOB,
    version   INTEGER,
    PRIMARY KEY (uniquerow)
) DEFAULT CHARACTER SET utf8mb4;

-- Connected clients; proto is the ClientInfo protobuf.
CREATE TABLE IF NOT EXISTS Clients (
    id      VARCHAR(1024),
    hbinbox TEXT,
    proto   BLOB,
    PRIMARY KEY (id(256))
) DEFAULT CHARACTER SET utf8mb4;

-- Channels: maxseq keeps the last sequence once every message is gone; the limits are those
-- in force when the channel was last opened; deleted marks a channel being purged.
CREATE TABLE IF NOT EXISTS Channels (
    id       INTEGER,
    name     VARCHAR(1024) NOT NULL,
    maxseq   BIGINT UNSIGNED DEFAULT 0,
    maxmsgs  INTEGER DEFAULT 0,
    maxbytes BIGINT DEFAULT 0,
    maxage   BIGINT DEFAULT 0,
    deleted  BOOL DEFAULT FALSE,
    PRIMARY KEY (id),
    INDEX Idx_ChannelsName (name(256))
) DEFAULT CHARACTER SET utf8mb4;

-- Messages: id is the channel's id; data is the MsgProto protobuf, size its length.
CREATE TABLE IF NOT EXISTS Messages (
    id        INTEGER,
    seq       BIGINT UNSIGNED,
    timestamp BIGINT,
    size      INTEGER,
    data      MEDIUMBLOB,
    CONSTRAINT PK_MsgKey PRIMARY KEY (id, seq),
    INDEX Idx_MsgsTimestamp (timestamp)
) DEFAULT CHARACTER SET utf8mb4;

-- Subscriptions: id is the channel's id; proto is the SubState protobuf.
CREATE TABLE IF NOT EXISTS Subscriptions (
    id       INTEGER,
    subid    BIGINT UNSIGNED,
    lastsent BIGINT UNSIGNED DEFAULT 0,
    proto    BLOB,
    deleted  BOOL DEFAULT FALSE,
    CONSTRAINT PK_SubKey PRIMARY KEY (id, subid)
) DEFAULT CHARACTER SET utf8mb4;

-- Messages sent and not yet acknowledged: either one row per message (seq > 0), or rows
-- holding JSON arrays of sequences in pending and acks (seq = 0), read in row order.
CREATE TABLE IF NOT EXISTS SubsPending (
    subid    BIGINT UNSIGNED,
    `row`    BIGINT UNSIGNED,
    seq      BIGINT UNSIGNED DEFAULT 0,
    lastsent BIGINT UNSIGNED DEFAULT 0,
    pending  BLOB,
    acks     BLOB,
    CONSTRAINT PK_MsgPendingKey PRIMARY KEY (subid, `row`),
    INDEX Idx_SubsPendingSeq (seq)
) DEFAULT CHARACTER SET utf8mb4;

-- Fault tolerance: the active server's id and a tick it moves every second.
CREATE TABLE IF NOT EXISTS StoreLock (
    id   VARCHAR(30),
    tick BIGINT UNSIGNED DEFAULT 0
) DEFAULT CHARACTER SET utf8mb4;
