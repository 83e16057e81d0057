//! Storage: one code path for SQLite and PostgreSQL.
//!
//! [`DbConn`] is a diesel `MultiConnection` over both backends, so queries are
//! written once. Connections come from an r2d2 pool and are only ever used on a
//! blocking thread ([`Database::run`]), never on an async worker. SQLite
//! connections are opened in WAL mode with foreign keys on, a busy timeout and the
//! configured `synchronous` level, so a commit that returned has reached the WAL
//! file and survives a process crash. Migrations for each backend are embedded in
//! the binary.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::r2d2::{self, ManageConnection};
use diesel::sqlite::SqliteConnection;
use diesel::Connection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use secrecy::ExposeSecret;

use crate::config::{DatabaseConfig, DatabaseUrl, SqliteSync};
use crate::metrics::Metrics;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/postgres");

/// How often the [`Checkpointer`] copies committed WAL pages into the database file.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// WAL pages past which the [`Checkpointer`] makes the next writer start the WAL over
/// (`RESTART`), holding writers off for the moment that takes (64 MiB of 4 KiB pages).
pub const WAL_RESTART_PAGES: i64 = 16_384;
/// What a restarted WAL file is cut back to, in bytes.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// The PostgreSQL advisory lock key held while migrating ("agentid" in ASCII).
const MIGRATION_LOCK: i64 = 0x0061_6765_6e74_6964;

/// A connection to whichever backend is configured.
#[derive(diesel::MultiConnection)]
pub enum DbConn {
    Postgres(PgConnection),
    Sqlite(SqliteConnection),
}

impl std::fmt::Debug for DbConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DbConn::Postgres(_) => "DbConn::Postgres",
            DbConn::Sqlite(_) => "DbConn::Sqlite",
        })
    }
}

/// Why a database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be had in time (pool exhausted or server unreachable).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A query failed.
    #[error("query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// Migrations could not be applied.
    #[error("migration failed: {0}")]
    Migration(String),
    /// The blocking task could not run or panicked.
    #[error("database task failed: {0}")]
    Task(String),
}

/// The backend in use, for readiness answers and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Opens connections of the configured backend with the settings agentid relies on.
#[derive(Debug)]
pub struct Manager {
    url: DatabaseUrl,
    busy_timeout: Duration,
    synchronous: SqliteSync,
    /// SQLite: a [`Checkpointer`] thread checkpoints the WAL, so commits never do.
    background_checkpoints: bool,
}

impl Manager {
    fn new(config: &DatabaseConfig, background_checkpoints: bool) -> Manager {
        Manager {
            url: config.url.clone(),
            busy_timeout: config.sqlite_busy_timeout,
            synchronous: config.sqlite_synchronous,
            background_checkpoints,
        }
    }
}

impl ManageConnection for Manager {
    type Connection = DbConn;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<DbConn, r2d2::Error> {
        match &self.url {
            DatabaseUrl::Postgres(url) => PgConnection::establish(url.expose_secret())
                .map(DbConn::Postgres)
                .map_err(r2d2::Error::ConnectionError),
            DatabaseUrl::Sqlite(path) => {
                let path = path.to_string_lossy();
                let mut conn =
                    SqliteConnection::establish(&path).map_err(r2d2::Error::ConnectionError)?;
                let synchronous = match self.synchronous {
                    SqliteSync::Full => "FULL",
                    SqliteSync::Normal => "NORMAL",
                };
                // With background checkpoints, no commit checkpoints (SQLite's default
                // is the committing connection, past 1,000 WAL pages); the WAL file
                // is cut back to 64 MiB whenever it restarts.
                let autocheckpoint = if self.background_checkpoints { 0 } else { 1000 };
                conn.batch_execute(&format!(
                    "PRAGMA busy_timeout = {};
                     PRAGMA journal_mode = WAL;
                     PRAGMA synchronous = {synchronous};
                     PRAGMA foreign_keys = ON;
                     PRAGMA wal_autocheckpoint = {autocheckpoint};
                     PRAGMA journal_size_limit = {WAL_SIZE_LIMIT};",
                    self.busy_timeout.as_millis()
                ))
                .map_err(r2d2::Error::QueryError)?;
                Ok(DbConn::Sqlite(conn))
            }
        }
    }

    fn is_valid(&self, conn: &mut DbConn) -> Result<(), r2d2::Error> {
        conn.batch_execute("SELECT 1")
            .map_err(r2d2::Error::QueryError)
    }

    fn has_broken(&self, _conn: &mut DbConn) -> bool {
        false
    }
}

/// The connection pool, with what handlers need to use it off the async threads.
#[derive(Clone, Debug)]
pub struct Database {
    pool: r2d2::Pool<Manager>,
    backend: Backend,
    /// Held by the decision writer for each batch and by the [`Checkpointer`] to start
    /// the WAL over, so the two take turns instead of racing for SQLite's write lock.
    write_gate: Arc<parking_lot::Mutex<()>>,
}

impl Database {
    /// Creates the pool. For SQLite the data directory is created if needed. Does
    /// not wait for the database to answer: readiness reports that. Commits
    /// checkpoint the SQLite WAL as they go (SQLite's default), right for commands
    /// that run and exit; the server uses [`Database::connect_serving`].
    pub fn connect(config: &DatabaseConfig) -> Result<Database, DbError> {
        Database::open(config, false)
    }

    /// Like [`Database::connect`], for a server: on SQLite, WAL checkpoints run on a
    /// [`Checkpointer`] thread of their own instead of inside whichever commit crossed
    /// the threshold, which was the decision writer's almost every time (docs/hot-path.md,
    /// "Checkpoints"). Keep the checkpointer as long as the database is used.
    pub fn connect_serving(
        config: &DatabaseConfig,
        metrics: Arc<Metrics>,
    ) -> Result<(Database, Option<Checkpointer>), DbError> {
        Database::connect_serving_with(config, metrics, CHECKPOINT_EVERY, WAL_RESTART_PAGES)
    }

    fn connect_serving_with(
        config: &DatabaseConfig,
        metrics: Arc<Metrics>,
        every: Duration,
        restart_pages: i64,
    ) -> Result<(Database, Option<Checkpointer>), DbError> {
        let db = Database::open(config, true)?;
        let checkpointer = match &config.url {
            DatabaseUrl::Sqlite(path) => Some(
                Checkpointer::start(
                    &Manager::new(config, true),
                    path,
                    Rounds {
                        gate: db.write_gate.clone(),
                        metrics,
                        restart_pages,
                    },
                    every,
                )
                .map_err(|e| DbError::Task(format!("cannot start the checkpointer: {e}")))?,
            ),
            DatabaseUrl::Postgres(_) => None,
        };
        Ok((db, checkpointer))
    }

    fn open(config: &DatabaseConfig, background_checkpoints: bool) -> Result<Database, DbError> {
        let backend = match &config.url {
            DatabaseUrl::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        DbError::Unavailable(format!("cannot create {}: {e}", dir.display()))
                    })?;
                }
                Backend::Sqlite
            }
            DatabaseUrl::Postgres(_) => Backend::Postgres,
        };
        let manager = Manager::new(config, background_checkpoints);
        let pool = r2d2::Pool::builder()
            .max_size(config.pool_size)
            .min_idle(Some(0))
            .connection_timeout(config.pool_timeout)
            .test_on_check_out(false)
            .build_unchecked(manager);
        Ok(Database {
            pool,
            backend,
            write_gate: Arc::default(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Taken by the busiest writer (the decision writer) around each transaction: the
    /// [`Checkpointer`] takes it to start the SQLite WAL over. SQLite's own write lock
    /// is polled by waiters, so a writer that commits and begins again at once would
    /// starve the checkpoint; this turn is handed over fairly when it is released (a
    /// waiting checkpointer gets it before the writer's next batch). Uncontended it
    /// costs nanoseconds, and on PostgreSQL nothing else takes it.
    pub fn write_gate(&self) -> WriteTurn<'_> {
        WriteTurn(Some(self.write_gate.lock()))
    }

    /// Connections open and idle, for the pool gauges.
    pub fn pool_state(&self) -> (u32, u32, u32) {
        let state = self.pool.state();
        (
            state.connections,
            state.idle_connections,
            self.pool.max_size(),
        )
    }

    /// A pooled connection, waiting at most the configured checkout timeout.
    /// Call only on a blocking thread.
    pub fn get(&self) -> Result<r2d2::PooledConnection<Manager>, DbError> {
        self.pool
            .get()
            .map_err(|e| DbError::Unavailable(e.to_string()))
    }

    /// Like [`Database::get`] with an explicit timeout.
    pub fn get_timeout(
        &self,
        timeout: Duration,
    ) -> Result<r2d2::PooledConnection<Manager>, DbError> {
        self.pool
            .get_timeout(timeout)
            .map_err(|e| DbError::Unavailable(e.to_string()))
    }

    /// Runs `f` with a pooled connection on a blocking thread, inside the caller's
    /// tracing span, and returns its result to the async caller.
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConn) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        self.blocking(caller_name::<F>(), move |db| {
            let mut conn = db.get()?;
            f(&mut conn)
        })
        .await
    }

    /// Runs `f` in a write transaction on the calling (blocking) thread, taking locks
    /// in the one order every write path follows (docs/hot-path.md, "Lock order"):
    ///
    /// 1. on SQLite, the process's write turn ([`Database::write_gate`]), shared with
    ///    the [`Checkpointer`];
    /// 2. a pooled connection;
    /// 3. the transaction (`BEGIN IMMEDIATE` on SQLite: the database's write lock);
    /// 4. the audit chain heads of `org_ids`, in sorted order
    ///    ([`crate::audit::lock_chains`]; on PostgreSQL row locks, on SQLite covered by
    ///    step 3);
    ///
    /// and only then whatever rows `f` reads for update or writes. The server's
    /// writes all run here, on the writer thread (`crate::decisions::Writer`), which
    /// batches them; commands that run and exit call it directly.
    pub fn write_now<T, E, F>(&self, org_ids: &[&str], f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConn) -> Result<T, E>,
        E: From<DbError> + From<diesel::result::Error>,
    {
        let _turn = (self.backend == Backend::Sqlite).then(|| self.write_gate());
        let mut conn = self.get()?;
        write_transaction(&mut conn, |conn| {
            crate::audit::lock_chains(conn, org_ids)?;
            f(conn)
        })
    }

    /// Runs `f` on a blocking thread inside the caller's tracing span; `caller` names
    /// the work in traces.
    async fn blocking<T, E, F>(&self, caller: &'static str, f: F) -> Result<T, E>
    where
        F: FnOnce(&Database) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let db = self.clone();
        // A debug span, enabled only when traces are exported (telemetry.rs).
        let request_span = tracing::Span::current();
        let span = tracing::debug_span!(
            parent: &request_span,
            "db.run",
            db.backend = self.backend().as_str(),
            db.caller = caller,
        );
        let joined = actix_web::rt::task::spawn_blocking(move || {
            // The request's span too: a disabled `db.run` does not enter its parent,
            // and log lines inside must still carry the request id.
            let _request = request_span.enter();
            let _entered = span.enter();
            f(&db)
        })
        .await;
        match joined {
            Ok(result) => result,
            Err(join) => Err(E::from(DbError::Task(join.to_string()))),
        }
    }

    /// Applies every pending migration of the backend; returns how many ran.
    ///
    /// On PostgreSQL a session advisory lock serializes replicas that start together:
    /// the first applies what is pending, the others wait, then find nothing to do
    /// (without it, two replicas would race to create the same tables and one would
    /// fail its start).
    pub fn migrate(&self) -> Result<usize, DbError> {
        let mut conn = self.get()?;
        let applied = match &mut *conn {
            DbConn::Postgres(c) => {
                c.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
                    .map_err(DbError::Query)?;
                let applied = c
                    .run_pending_migrations(POSTGRES_MIGRATIONS)
                    .map(|v| v.len());
                // Released with the session anyway; unlock now so the pooled
                // connection does not keep it.
                c.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
                    .map_err(DbError::Query)?;
                applied
            }
            DbConn::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS).map(|v| v.len()),
        };
        applied.map_err(|e| DbError::Migration(e.to_string()))
    }

    /// Checks, off the async threads, that a connection can be had within
    /// `timeout` and answers a query.
    pub async fn ping(&self, timeout: Duration) -> Result<(), DbError> {
        let db = self.clone();
        let joined = actix_web::rt::task::spawn_blocking(move || {
            let mut conn = db.get_timeout(timeout)?;
            conn.batch_execute("SELECT 1").map_err(DbError::Query)
        })
        .await;
        joined.unwrap_or_else(|join| Err(DbError::Task(join.to_string())))
    }
}

/// Runs `f` in a write transaction. On SQLite the transaction takes the write lock
/// at its start (`BEGIN IMMEDIATE`), so two writers never deadlock upgrading a read
/// lock; the busy timeout then orders them.
pub fn write_transaction<T, E, F>(conn: &mut DbConn, f: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConn) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    match conn {
        DbConn::Sqlite(_) => {
            // The closure runs against the enum so queries keep one code path.
            conn.batch_execute("BEGIN IMMEDIATE")?;
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut *conn)));
            match outcome {
                Ok(Ok(value)) => match conn.batch_execute("COMMIT") {
                    Ok(()) => Ok(value),
                    Err(e) => {
                        let _ = conn.batch_execute("ROLLBACK");
                        Err(e.into())
                    }
                },
                Ok(Err(e)) => {
                    // The transaction is abandoned either way; a failed rollback
                    // leaves nothing committed.
                    let _ = conn.batch_execute("ROLLBACK");
                    Err(e)
                }
                Err(panic) => {
                    // Never return a connection to the pool inside an open transaction.
                    let _ = conn.batch_execute("ROLLBACK");
                    std::panic::resume_unwind(panic)
                }
            }
        }
        DbConn::Postgres(_) => {
            // A panic inside becomes an error first, so diesel rolls back and the
            // connection goes back to the pool clean; then the panic continues.
            let mut panicked = None;
            let result = conn.transaction(|conn| {
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn))) {
                    Ok(outcome) => outcome,
                    Err(panic) => {
                        panicked = Some(panic);
                        Err(E::from(diesel::result::Error::RollbackTransaction))
                    }
                }
            });
            if let Some(panic) = panicked {
                std::panic::resume_unwind(panic);
            }
            result
        }
    }
}

/// The writer's turn ([`Database::write_gate`]); released fairly on drop.
#[derive(Debug)]
pub struct WriteTurn<'a>(Option<parking_lot::MutexGuard<'a, ()>>);

impl Drop for WriteTurn<'_> {
    fn drop(&mut self) {
        if let Some(guard) = self.0.take() {
            parking_lot::MutexGuard::unlock_fair(guard);
        }
    }
}

/// Checkpoints a SQLite database's WAL on a thread of its own.
///
/// In WAL mode a commit appends pages to the WAL and (with `synchronous = FULL`)
/// fsyncs it; a checkpoint later copies those pages into the database file and
/// fsyncs that. SQLite's default runs the checkpoint inside the commit that crosses
/// 1,000 WAL pages, and on a busy server that commit is nearly always the decision
/// writer's: the single thread every signed action waits for then also writes and
/// fsyncs the database file (a quarter of its time under load, measured in
/// BENCHMARKS.md). Here no commit checkpoints; this thread runs a `PASSIVE`
/// checkpoint every [`CHECKPOINT_EVERY`], which copies what is committed without
/// taking any lock a writer or reader waits for.
///
/// A passive checkpoint that the writer overtook leaves the pages it copied
/// unflushed; this thread then fsyncs the database file itself, so they never pile up
/// for a flush the writer would wait for.
///
/// Passive checkpoints alone never let the WAL start over under steady load (it
/// restarts only when a writer begins while every page is already copied, and a busy
/// writer keeps adding pages), so once the WAL holds more than [`WAL_RESTART_PAGES`]
/// the thread runs one more passive round (copying what the writer added during the
/// first), then takes the [`Database::write_gate`] (handed over fairly after the
/// decision writer's current batch) and runs a `RESTART` checkpoint: it copies the
/// few pages left while the writer waits, and the next batch starts the WAL from its
/// beginning (docs/hot-path.md, "Checkpoints").
///
/// Durability does not depend on checkpoints: a commit has returned only once its
/// pages are in the WAL (and, with FULL, on disk), and SQLite replays the WAL at the
/// next open after a crash.
///
/// Dropping the handle stops the thread (after the checkpoint it may be running).
#[derive(Debug)]
pub struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// `PRAGMA wal_checkpoint`'s answer.
#[derive(Debug, diesel::QueryableByName)]
struct CheckpointRow {
    /// 1 when the checkpoint could not finish (`RESTART`: a reader or writer stayed).
    #[diesel(sql_type = diesel::sql_types::Integer)]
    busy: i32,
    /// Pages in the WAL.
    #[diesel(sql_type = diesel::sql_types::Integer)]
    log: i32,
    /// Pages of the WAL copied into the database file.
    #[diesel(sql_type = diesel::sql_types::Integer)]
    checkpointed: i32,
}

impl Checkpointer {
    /// Starts the thread for the SQLite database at `path`, opened through `manager`.
    fn start(
        manager: &Manager,
        path: &std::path::Path,
        rounds: Rounds,
        every: Duration,
    ) -> std::io::Result<Checkpointer> {
        let conn = manager
            .connect()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        // Any descriptor of the file flushes it; a read-only one is enough.
        let db_file = std::fs::File::open(path)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("wal-checkpointer".into())
            .spawn(move || checkpoint_loop(conn, db_file, &rounds, every, &stopped))?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What a checkpoint round needs besides its connection.
#[derive(Debug)]
struct Rounds {
    gate: Arc<parking_lot::Mutex<()>>,
    metrics: Arc<Metrics>,
    /// WAL pages past which a round ends with a `RESTART`.
    restart_pages: i64,
}

fn checkpoint_loop(
    mut conn: DbConn,
    db_file: std::fs::File,
    rounds: &Rounds,
    every: Duration,
    stopped: &mpsc::Receiver<()>,
) {
    let mut failing = false;
    // A message or a dropped handle stops the thread; a timeout is the next round.
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
        match rounds.run(&mut conn, &db_file) {
            Ok(()) => failing = false,
            Err(error) => {
                // Once per failing stretch: a full disk would otherwise log every tick.
                if !failing {
                    tracing::warn!(error = %error, "WAL checkpoint failed; retrying");
                }
                failing = true;
            }
        }
    }
}

type RoundError = Box<dyn std::error::Error>;

impl Rounds {
    /// One round: a passive checkpoint and a flush of the database file; when the WAL
    /// has grown past `restart_pages`, a second of each and then, holding the
    /// writer's turn, a `RESTART` that finds almost nothing left to copy or flush.
    fn run(&self, conn: &mut DbConn, db_file: &std::fs::File) -> Result<(), RoundError> {
        let row = self.passive(conn, db_file)?;
        if i64::from(row.log) <= self.restart_pages {
            return Ok(());
        }
        self.passive(conn, db_file)?;
        let _turn = self.gate.lock();
        let started = std::time::Instant::now();
        let row = checkpoint(conn, "RESTART")?;
        self.metrics.observe_checkpoint(
            "restart",
            started.elapsed().as_secs_f64(),
            i64::from(row.log),
            i64::from(row.checkpointed),
        );
        if row.busy != 0 {
            tracing::warn!(
                wal.pages = row.log,
                "the WAL could not be started over (a long transaction holds it); retrying"
            );
        }
        Ok(())
    }

    fn passive(
        &self,
        conn: &mut DbConn,
        db_file: &std::fs::File,
    ) -> Result<CheckpointRow, RoundError> {
        let started = std::time::Instant::now();
        let row = checkpoint(conn, "PASSIVE")?;
        // A passive checkpoint the writer overtook (nearly every one under load)
        // copies pages into the database file but leaves them unflushed. Flushing
        // them here keeps them from piling up for the restart, which would otherwise
        // flush a second's worth of scattered pages while the writer waits.
        if row.checkpointed > 0 {
            db_file.sync_data()?;
        }
        self.metrics.observe_checkpoint(
            "passive",
            started.elapsed().as_secs_f64(),
            i64::from(row.log),
            i64::from(row.checkpointed),
        );
        Ok(row)
    }
}

fn checkpoint(conn: &mut DbConn, mode: &str) -> Result<CheckpointRow, RoundError> {
    use diesel::RunQueryDsl;
    Ok(diesel::sql_query(format!("PRAGMA wal_checkpoint({mode})")).get_result(conn)?)
}

/// Copies the SQLite database at `source` to `to` while other connections keep
/// writing: `VACUUM INTO` reads one consistent snapshot (a read transaction, which
/// in WAL mode blocks no writer) into a temporary file beside `to`; the copy is
/// checked (`PRAGMA quick_check`), flushed to disk, and only then renamed to `to`,
/// so `to` is either absent or a complete copy. Returns the copy's size in bytes.
pub fn backup_sqlite(
    source: &std::path::Path,
    to: &std::path::Path,
) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    use diesel::RunQueryDsl;

    #[derive(diesel::QueryableByName)]
    struct Check {
        #[diesel(sql_type = diesel::sql_types::Text)]
        quick_check: String,
    }

    let file_name = to
        .file_name()
        .ok_or("the backup path names no file")?
        .to_string_lossy()
        .into_owned();
    let partial = to.with_file_name(format!(".{file_name}.partial-{}", std::process::id()));
    let result = (|| -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
        let source_url = source.to_str().ok_or("the database path is not UTF-8")?;
        let partial_path = partial.to_str().ok_or("the backup path is not UTF-8")?;
        let mut conn = SqliteConnection::establish(source_url)?;
        conn.batch_execute("PRAGMA busy_timeout = 10000;")?;
        diesel::sql_query("VACUUM INTO ?")
            .bind::<diesel::sql_types::Text, _>(partial_path)
            .execute(&mut conn)?;
        drop(conn);
        let mut copy = SqliteConnection::establish(partial_path)?;
        let check: Check = diesel::sql_query("PRAGMA quick_check").get_result(&mut copy)?;
        drop(copy);
        if check.quick_check != "ok" {
            return Err(
                format!("the copy failed its integrity check: {}", check.quick_check).into(),
            );
        }
        let file = std::fs::File::open(&partial)?;
        file.sync_all()?;
        let bytes = file.metadata()?.len();
        drop(file);
        // Never replace an existing file, even one created since the caller looked.
        std::fs::hard_link(&partial, to)?;
        std::fs::remove_file(&partial)?;
        if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(bytes)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// The function a `Database::run` closure was written in, from the closure's type
/// name (`agentid_server::routes::agents::get_agent::{{closure}}` → `routes::agents::get_agent`).
fn caller_name<F>() -> &'static str {
    let name = std::any::type_name::<F>();
    let name = name.strip_prefix("agentid_server::").unwrap_or(name);
    match name.find("::{{closure}}") {
        Some(end) => &name[..end],
        None => name,
    }
}

/// A migrated database of a test's own (SQLite in a temporary directory, or a fresh
/// database on the local PostgreSQL), removed on drop.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::PathBuf;

    use diesel::connection::SimpleConnection;
    use diesel::Connection;

    use super::{Backend, Database, Manager};
    use crate::config::Config;

    fn postgres_admin_url() -> String {
        std::env::var("AGENTID_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
    }

    #[derive(Debug)]
    pub(crate) struct TestDb {
        pub(crate) db: Database,
        dir: PathBuf,
        pg_name: Option<String>,
    }

    impl TestDb {
        pub(crate) fn new(backend: Backend) -> TestDb {
            let id = uuid::Uuid::new_v4().simple().to_string();
            let dir = std::env::temp_dir().join(format!("agentid-unit-{id}"));
            std::fs::create_dir_all(&dir).unwrap();
            let (url, pg_name) = match backend {
                Backend::Sqlite => (dir.join("agentid.db").to_string_lossy().into_owned(), None),
                Backend::Postgres => {
                    let name = format!("agentid_u_{id}");
                    let admin = postgres_admin_url();
                    let mut conn = diesel::PgConnection::establish(&admin)
                        .unwrap_or_else(|e| panic!("PostgreSQL must be reachable at {admin}: {e}"));
                    conn.batch_execute(&format!("CREATE DATABASE {name}"))
                        .unwrap();
                    let (base, _) = admin.rsplit_once('/').unwrap();
                    (format!("{base}/{name}"), Some(name))
                }
            };
            let vars = [
                ("DATABASE_URL", url.as_str()),
                ("AGENTID_DATA_DIR", &dir.to_string_lossy()),
                ("AGENTID_SECRET_KEY", &"k".repeat(40)),
                ("AGENTID_SQLITE_BUSY_TIMEOUT_MS", "30000"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()));
            let config = Config::from_vars(vars).unwrap();
            let db = Database::connect(&config.database).unwrap();
            db.migrate().unwrap();
            TestDb { db, dir, pg_name }
        }

        pub(crate) fn conn(&self) -> diesel::r2d2::PooledConnection<Manager> {
            self.db.get().unwrap()
        }

        /// Inserts an organization and starts its audit chain; returns its id.
        pub(crate) fn org(&self) -> String {
            let id = uuid::Uuid::new_v4().to_string();
            super::write_transaction(&mut self.conn(), |conn| {
                conn.batch_execute(&format!(
                    "INSERT INTO organizations (id, name, created_at) VALUES ('{id}', 'org {id}', 0)"
                ))?;
                crate::audit::init_chain(conn, &id)
            })
            .unwrap();
            id
        }
    }

    impl Drop for TestDb {
        fn drop(&mut self) {
            if let Some(name) = &self.pg_name {
                if let Ok(mut conn) = diesel::PgConnection::establish(&postgres_admin_url()) {
                    let _ =
                        conn.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
                }
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use diesel::RunQueryDsl;

    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }

    fn sqlite_config(dir: &std::path::Path) -> DatabaseConfig {
        let vars = [
            ("AGENTID_DATA_DIR", dir.to_string_lossy().into_owned()),
            ("AGENTID_SECRET_KEY", "k".repeat(40)),
        ]
        .map(|(k, v)| (k.to_owned(), v));
        Config::from_vars(vars).unwrap().database
    }

    /// The server's SQLite commits never checkpoint (`wal_autocheckpoint = 0`), so
    /// without the checkpointer thread the WAL would hold every page written and the
    /// database file none. With it, under a writer that commits back to back (as the
    /// decision writer does), the WAL stays near its restart size and, shortly after
    /// the writes stop, the database file alone holds every committed row.
    #[test]
    fn the_checkpointer_bounds_the_wal_and_fills_the_database_file() {
        let dir = std::env::temp_dir().join(format!("agentid-ckpt-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = sqlite_config(&dir);
        let DatabaseUrl::Sqlite(path) = config.url.clone() else {
            panic!("a SQLite configuration")
        };
        // Restart past 256 pages (1 MiB) and write 40 MiB: 40 times that.
        let restart_pages = 256;
        let (db, checkpointer) = Database::connect_serving_with(
            &config,
            Metrics::new(),
            Duration::from_millis(10),
            restart_pages,
        )
        .unwrap();
        assert!(checkpointer.is_some());
        let mut conn = db.get().unwrap();
        conn.batch_execute("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB NOT NULL)")
            .unwrap();
        let wal = path.with_extension("db-wal");
        let (commits, rows_per_commit) = (160, 64);
        let mut largest_wal = 0;
        for _ in 0..commits {
            let _turn = db.write_gate();
            write_transaction(&mut conn, |conn| {
                conn.batch_execute(&format!(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows_per_commit})
                     INSERT INTO t (b) SELECT randomblob(4000) FROM n"
                ))
            })
            .unwrap();
            largest_wal = largest_wal.max(std::fs::metadata(&wal).unwrap().len());
            drop(_turn);
            // The decision writer lets go between batches too; give the checkpointer
            // a chance at its turn as a busy server would.
            std::thread::yield_now();
        }
        let written = commits * rows_per_commit * 4096;
        assert!(
            largest_wal < written / 3,
            "the WAL grew to {largest_wal} bytes of {written} written"
        );

        // Within a few rounds the database file alone holds every row: a copy of it
        // without the WAL sees them all.
        let expected = (commits * rows_per_commit) as i64;
        let copy = dir.join("copy.db");
        let mut seen = -1;
        for _ in 0..200 {
            std::thread::sleep(Duration::from_millis(25));
            std::fs::copy(&path, &copy).unwrap();
            let _ = std::fs::remove_file(dir.join("copy.db-wal"));
            let mut check = SqliteConnection::establish(&copy.to_string_lossy()).unwrap();
            seen = diesel::sql_query("SELECT count(*) AS n FROM t")
                .get_result::<Count>(&mut check)
                .map(|c| c.n)
                .unwrap_or(-1);
            if seen == expected {
                break;
            }
        }
        assert_eq!(seen, expected, "rows in the database file alone");
        drop(conn);
        drop(checkpointer);
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
