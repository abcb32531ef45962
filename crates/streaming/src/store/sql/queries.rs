//! Every statement the store runs, on the reference server's tables and columns. Written in
//! MySQL's dialect and translated once per store for PostgreSQL; the few that differ
//! (upserts, table locks) are spelled per driver.

use std::collections::HashMap;

use parking_lot::Mutex;

use super::driver::{Sql, SqlDriver, Stmt, V, translate};

/// The statements, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Q {
    LockTable,
    LockSelect,
    LockInsert,
    LockUpdate,
    InfoUpsert,
    InfoSelect,
    ClientUpsert,
    ClientDelete,
    ClientsSelect,
    ChannelInsert,
    ChannelsSelect,
    ChannelLimits,
    ChannelMaxSeq,
    ChannelMarkDeleted,
    ChannelDelete,
    ChannelsMaxId,
    MsgInsert,
    MsgsDeleteBelow,
    MsgsStats,
    MsgsMeta,
    MsgLookup,
    MsgsRange,
    MsgSeqForTimestamp,
    MsgsLastExpired,
    MsgsFloorForCount,
    MsgsFloorForBytes,
    MsgsChunkEnd,
    MsgsDeleteUpTo,
    MsgsCheck,
    MsgsStatsFrom,
    SubUpsert,
    SubMarkDeleted,
    SubDelete,
    SubsPurgeMarked,
    SubLastSent,
    SubsMaxId,
    SubsSelect,
    SubsOfChannel,
    SubsDeleteChannel,
    PendingInsertSeq,
    PendingInsertRow,
    PendingDeleteSeq,
    PendingDeleteSub,
    PendingSelect,
    PendingMaxRow,
    SchemaColumns,
    CurrentDatabase,
}

const COUNT: usize = Q::CurrentDatabase as usize + 1;

/// The text of `q` for `driver`, before placeholder translation.
fn text(q: Q, driver: SqlDriver) -> &'static str {
    let pg = driver == SqlDriver::Postgres;
    match q {
        // Serializes lock attempts: with no row yet, two candidates could both insert one.
        // MySQL relies on SELECT ... FOR UPDATE (gap lock) and its deadlock detection.
        Q::LockTable => {
            if pg {
                "LOCK TABLE StoreLock IN SHARE ROW EXCLUSIVE MODE"
            } else {
                "SELECT 1"
            }
        }
        Q::LockSelect => "SELECT id, tick FROM StoreLock FOR UPDATE",
        Q::LockInsert => "INSERT INTO StoreLock (id, tick) VALUES (?, ?)",
        Q::LockUpdate => "UPDATE StoreLock SET id=?, tick=?",
        Q::InfoUpsert => {
            if pg {
                "INSERT INTO ServerInfo (uniquerow, id, proto, version) VALUES (1, ?, ?, ?) \
                 ON CONFLICT (uniquerow) DO UPDATE SET id=EXCLUDED.id, proto=EXCLUDED.proto, \
                 version=EXCLUDED.version"
            } else {
                "INSERT INTO ServerInfo (uniquerow, id, proto, version) VALUES (1, ?, ?, ?) \
                 ON DUPLICATE KEY UPDATE id=VALUES(id), proto=VALUES(proto), version=VALUES(version)"
            }
        }
        Q::InfoSelect => "SELECT id, proto, version FROM ServerInfo WHERE uniquerow=1",
        Q::ClientUpsert => {
            if pg {
                "INSERT INTO Clients (id, hbinbox, proto) VALUES (?, ?, ?) \
                 ON CONFLICT (id) DO UPDATE SET hbinbox=EXCLUDED.hbinbox, proto=EXCLUDED.proto"
            } else {
                "INSERT INTO Clients (id, hbinbox, proto) VALUES (?, ?, ?) \
                 ON DUPLICATE KEY UPDATE hbinbox=VALUES(hbinbox), proto=VALUES(proto)"
            }
        }
        Q::ClientDelete => "DELETE FROM Clients WHERE id=?",
        Q::ClientsSelect => "SELECT id, hbinbox, proto FROM Clients",
        Q::ChannelInsert => {
            "INSERT INTO Channels (id, name, maxmsgs, maxbytes, maxage) VALUES (?, ?, ?, ?, ?)"
        }
        Q::ChannelsSelect => {
            "SELECT id, name, maxseq, maxmsgs, maxbytes, maxage, deleted FROM Channels ORDER BY id"
        }
        Q::ChannelLimits => "UPDATE Channels SET maxmsgs=?, maxbytes=?, maxage=? WHERE id=?",
        Q::ChannelMaxSeq => "UPDATE Channels SET maxseq=? WHERE id=?",
        Q::ChannelMarkDeleted => "UPDATE Channels SET deleted=TRUE WHERE id=?",
        Q::ChannelDelete => "DELETE FROM Channels WHERE id=?",
        Q::ChannelsMaxId => "SELECT COALESCE(MAX(id), 0) FROM Channels",
        // Idempotent, so a flush whose commit outcome was unknown can simply be replayed; a row
        // found in place is then checked (verify.rs). MySQL reports 0 affected rows for such a
        // row only without CLIENT_FOUND_ROWS, which the driver never sets.
        Q::MsgInsert => {
            if pg {
                "INSERT INTO Messages (id, seq, timestamp, size, data) VALUES (?, ?, ?, ?, ?) \
                 ON CONFLICT DO NOTHING"
            } else {
                "INSERT INTO Messages (id, seq, timestamp, size, data) VALUES (?, ?, ?, ?, ?) \
                 ON DUPLICATE KEY UPDATE id=id"
            }
        }
        Q::MsgsDeleteBelow => "DELETE FROM Messages WHERE id=? AND seq<?",
        Q::MsgsStats => {
            "SELECT COUNT(seq), COALESCE(MIN(seq), 0), COALESCE(MAX(seq), 0), \
             COALESCE(SUM(size), 0), COALESCE(MAX(timestamp), 0) FROM Messages WHERE id=?"
        }
        Q::MsgsMeta => {
            "SELECT seq, size, timestamp FROM Messages WHERE id=? AND seq>=? AND seq<? \
             ORDER BY seq LIMIT ?"
        }
        Q::MsgLookup => "SELECT data FROM Messages WHERE id=? AND seq=?",
        Q::MsgsRange => {
            "SELECT seq, data FROM Messages WHERE id=? AND seq>=? AND seq<? ORDER BY seq LIMIT ?"
        }
        Q::MsgSeqForTimestamp => {
            "SELECT seq FROM Messages WHERE id=? AND seq>=? AND seq<? AND timestamp>=? \
             ORDER BY seq LIMIT 1"
        }
        Q::MsgsLastExpired => {
            "SELECT COALESCE(MAX(seq), 0) FROM Messages WHERE id=? AND timestamp<=?"
        }
        Q::MsgsFloorForCount => {
            "SELECT COALESCE(MIN(t.seq), 0) FROM \
             (SELECT seq FROM Messages WHERE id=? ORDER BY seq DESC LIMIT ?) t"
        }
        // Window functions: PostgreSQL, MySQL 8, MariaDB 10.2.
        Q::MsgsFloorForBytes => {
            "SELECT COALESCE(MIN(t.seq), 0) FROM (SELECT seq, SUM(size) OVER \
             (ORDER BY seq DESC) AS total FROM Messages WHERE id=?) t WHERE t.total<=?"
        }
        Q::MsgsChunkEnd => {
            "SELECT COALESCE(MAX(t.seq), 0) FROM \
             (SELECT seq FROM Messages WHERE id=? ORDER BY seq LIMIT ?) t"
        }
        Q::MsgsDeleteUpTo => "DELETE FROM Messages WHERE id=? AND seq<=?",
        // The rows an idempotent insert found in place: a locking read sees the latest
        // committed version (MySQL's plain reads may use an older snapshot).
        Q::MsgsCheck => {
            "SELECT seq, data FROM Messages WHERE id=? AND seq>=? AND seq<=? ORDER BY seq \
             FOR UPDATE"
        }
        Q::MsgsStatsFrom => {
            "SELECT COUNT(seq), COALESCE(MIN(seq), 0), COALESCE(MAX(seq), 0), \
             COALESCE(SUM(size), 0), COALESCE(MAX(timestamp), 0) FROM Messages \
             WHERE id=? AND seq>=?"
        }
        Q::SubUpsert => {
            if pg {
                "INSERT INTO Subscriptions (id, subid, lastsent, proto, deleted) \
                 VALUES (?, ?, ?, ?, FALSE) ON CONFLICT (id, subid) DO UPDATE SET \
                 lastsent=EXCLUDED.lastsent, proto=EXCLUDED.proto, deleted=FALSE"
            } else {
                "INSERT INTO Subscriptions (id, subid, lastsent, proto, deleted) \
                 VALUES (?, ?, ?, ?, FALSE) ON DUPLICATE KEY UPDATE \
                 lastsent=VALUES(lastsent), proto=VALUES(proto), deleted=FALSE"
            }
        }
        Q::SubMarkDeleted => "UPDATE Subscriptions SET deleted=TRUE WHERE id=? AND subid=?",
        Q::SubDelete => "DELETE FROM Subscriptions WHERE id=? AND subid=?",
        Q::SubsPurgeMarked => "DELETE FROM Subscriptions WHERE id=? AND deleted=TRUE AND subid<?",
        Q::SubLastSent => "UPDATE Subscriptions SET lastsent=? WHERE id=? AND subid=?",
        Q::SubsMaxId => "SELECT COALESCE(MAX(subid), 0) FROM Subscriptions",
        Q::SubsSelect => {
            "SELECT subid, lastsent, proto FROM Subscriptions WHERE id=? AND deleted=FALSE \
             ORDER BY subid"
        }
        Q::SubsOfChannel => "SELECT subid FROM Subscriptions WHERE id=?",
        Q::SubsDeleteChannel => "DELETE FROM Subscriptions WHERE id=?",
        Q::PendingInsertSeq => {
            if pg {
                "INSERT INTO SubsPending (subid, `row`, seq) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
            } else {
                "INSERT INTO SubsPending (subid, `row`, seq) VALUES (?, ?, ?) \
                 ON DUPLICATE KEY UPDATE subid=subid"
            }
        }
        Q::PendingInsertRow => {
            if pg {
                "INSERT INTO SubsPending (subid, `row`, lastsent, pending, acks) \
                 VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
            } else {
                "INSERT INTO SubsPending (subid, `row`, lastsent, pending, acks) \
                 VALUES (?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE subid=subid"
            }
        }
        Q::PendingDeleteSeq => "DELETE FROM SubsPending WHERE subid=? AND seq=?",
        Q::PendingDeleteSub => "DELETE FROM SubsPending WHERE subid=?",
        Q::PendingSelect => {
            "SELECT `row`, seq, lastsent, pending, acks FROM SubsPending WHERE subid=? \
             ORDER BY `row`"
        }
        Q::PendingMaxRow => "SELECT COALESCE(MAX(`row`), 0) FROM SubsPending WHERE subid=?",
        Q::SchemaColumns => {
            if pg {
                "SELECT table_name, column_name, CAST(character_maximum_length AS BIGINT) \
                 FROM information_schema.columns WHERE table_schema = current_schema()"
            } else {
                "SELECT table_name, column_name, character_maximum_length \
                 FROM information_schema.columns WHERE table_schema = DATABASE()"
            }
        }
        // The database's name, and the largest packet (statement) the server accepts.
        Q::CurrentDatabase => {
            if pg {
                "SELECT current_database(), CAST(0 AS BIGINT)"
            } else {
                "SELECT DATABASE(), @@max_allowed_packet"
            }
        }
    }
}

/// All statements translated for one driver, plus multi-row inserts built on demand.
#[derive(Debug)]
pub(crate) struct Queries {
    pub driver: SqlDriver,
    texts: Vec<Sql>,
    bulk: Mutex<HashMap<(usize, bool), Sql>>,
}

/// Most rows one multi-row insert may carry: 5 parameters each, 65,535 at most per statement
/// (the limit of both protocols).
pub(crate) const MAX_BULK_ROWS: usize = 65_535 / 5;

impl Queries {
    pub fn new(driver: SqlDriver) -> Queries {
        Queries {
            driver,
            // Indexed by `Q as usize`: `Q::ALL` lists the variants in declaration order.
            texts: Q::ALL
                .iter()
                .map(|q| Sql::from(translate(driver, text(*q, driver))))
                .collect(),
            bulk: Mutex::new(HashMap::new()),
        }
    }

    pub fn sql(&self, q: Q) -> Sql {
        self.texts[q as usize].clone()
    }

    /// Statement `q` with `params`.
    pub fn stmt(&self, q: Q, params: Vec<V>) -> Stmt {
        Stmt {
            sql: self.sql(q),
            params,
        }
    }

    /// `INSERT INTO Messages ... VALUES (...), (...)` for `rows` rows (1 to
    /// [`MAX_BULK_ROWS`]), idempotent like [`Q::MsgInsert`].
    pub fn bulk_insert(&self, rows: usize) -> Sql {
        self.bulk_sql(rows, false)
    }

    /// The same insert without its conflict clause: a row already in place fails the whole
    /// statement (duplicate key), which then wrote nothing — atomic on its own, without a
    /// transaction around it (verify.rs, `insert_strict`).
    pub fn bulk_insert_strict(&self, rows: usize) -> Sql {
        self.bulk_sql(rows, true)
    }

    fn bulk_sql(&self, rows: usize, strict: bool) -> Sql {
        let mut cache = self.bulk.lock();
        if let Some(s) = cache.get(&(rows, strict)) {
            return s.clone();
        }
        let mut s = String::from("INSERT INTO Messages (id, seq, timestamp, size, data) VALUES ");
        for i in 0..rows {
            if i > 0 {
                s.push(',');
            }
            s.push_str("(?,?,?,?,?)");
        }
        if !strict {
            s.push_str(match self.driver {
                SqlDriver::Postgres => " ON CONFLICT DO NOTHING",
                SqlDriver::Mysql => " ON DUPLICATE KEY UPDATE id=id",
            });
        }
        let sql = Sql::from(translate(self.driver, &s));
        if cache.len() >= 64 {
            cache.clear();
        }
        cache.insert((rows, strict), sql.clone());
        sql
    }
}

impl Q {
    const ALL: [Q; COUNT] = [
        Q::LockTable,
        Q::LockSelect,
        Q::LockInsert,
        Q::LockUpdate,
        Q::InfoUpsert,
        Q::InfoSelect,
        Q::ClientUpsert,
        Q::ClientDelete,
        Q::ClientsSelect,
        Q::ChannelInsert,
        Q::ChannelsSelect,
        Q::ChannelLimits,
        Q::ChannelMaxSeq,
        Q::ChannelMarkDeleted,
        Q::ChannelDelete,
        Q::ChannelsMaxId,
        Q::MsgInsert,
        Q::MsgsDeleteBelow,
        Q::MsgsStats,
        Q::MsgsMeta,
        Q::MsgLookup,
        Q::MsgsRange,
        Q::MsgSeqForTimestamp,
        Q::MsgsLastExpired,
        Q::MsgsFloorForCount,
        Q::MsgsFloorForBytes,
        Q::MsgsChunkEnd,
        Q::MsgsDeleteUpTo,
        Q::MsgsCheck,
        Q::MsgsStatsFrom,
        Q::SubUpsert,
        Q::SubMarkDeleted,
        Q::SubDelete,
        Q::SubsPurgeMarked,
        Q::SubLastSent,
        Q::SubsMaxId,
        Q::SubsSelect,
        Q::SubsOfChannel,
        Q::SubsDeleteChannel,
        Q::PendingInsertSeq,
        Q::PendingInsertRow,
        Q::PendingDeleteSeq,
        Q::PendingDeleteSub,
        Q::PendingSelect,
        Q::PendingMaxRow,
        Q::SchemaColumns,
        Q::CurrentDatabase,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_complete_and_ordered() {
        for (i, q) in Q::ALL.iter().enumerate() {
            assert_eq!(*q as usize, i, "{q:?}");
        }
        let pg = Queries::new(SqlDriver::Postgres);
        assert_eq!(
            &*pg.sql(Q::PendingSelect),
            "SELECT row, seq, lastsent, pending, acks FROM SubsPending WHERE subid=$1 ORDER BY row"
        );
        assert_eq!(
            &*pg.bulk_insert(2),
            "INSERT INTO Messages (id, seq, timestamp, size, data) VALUES \
             ($1,$2,$3,$4,$5),($6,$7,$8,$9,$10) ON CONFLICT DO NOTHING"
        );
        let my = Queries::new(SqlDriver::Mysql);
        assert!(my.sql(Q::PendingSelect).contains("`row`"));
        assert!(
            my.bulk_insert(3)
                .ends_with("(?,?,?,?,?) ON DUPLICATE KEY UPDATE id=id")
        );
        assert!(pg.bulk_insert_strict(2).ends_with("($6,$7,$8,$9,$10)"));
        assert!(my.bulk_insert_strict(3).ends_with("(?,?,?,?,?)"));
        assert_ne!(pg.bulk_insert(2), pg.bulk_insert_strict(2));
    }
}
