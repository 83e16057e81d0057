//! Storage: one code path for SQLite and PostgreSQL.
//!
//! [`DbConn`] is a diesel `MultiConnection` over both backends, so queries are
//! written once. Connections come from an r2d2 pool and are only ever used on a
//! blocking thread ([`Database::run`]), never on an async worker. SQLite
//! connections are opened in WAL mode with foreign keys on, a busy timeout and the
//! configured `synchronous` level, so a commit that returned has reached the WAL
//! file and survives a process crash. Migrations for each backend are embedded in
//! the binary.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::r2d2::{self, ManageConnection};
use diesel::sqlite::SqliteConnection;
use diesel::Connection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use secrecy::ExposeSecret;

use crate::config::{DatabaseConfig, DatabaseUrl, SqliteSync};

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/postgres");

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
                conn.batch_execute(&format!(
                    "PRAGMA busy_timeout = {};
                     PRAGMA journal_mode = WAL;
                     PRAGMA synchronous = {synchronous};
                     PRAGMA foreign_keys = ON;",
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
}

impl Database {
    /// Creates the pool. For SQLite the data directory is created if needed. Does
    /// not wait for the database to answer: readiness reports that.
    pub fn connect(config: &DatabaseConfig) -> Result<Database, DbError> {
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
        let manager = Manager {
            url: config.url.clone(),
            busy_timeout: config.sqlite_busy_timeout,
            synchronous: config.sqlite_synchronous,
        };
        let pool = r2d2::Pool::builder()
            .max_size(config.pool_size)
            .min_idle(Some(0))
            .connection_timeout(config.pool_timeout)
            .test_on_check_out(false)
            .build_unchecked(manager);
        Ok(Database { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
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
        let db = self.clone();
        // A debug span, enabled only when traces are exported (telemetry.rs); the
        // caller is named by the closure's type, a static string.
        let request_span = tracing::Span::current();
        let span = tracing::debug_span!(
            parent: &request_span,
            "db.run",
            db.backend = self.backend().as_str(),
            db.caller = caller_name::<F>(),
        );
        let joined = actix_web::rt::task::spawn_blocking(move || {
            // The request's span too: a disabled `db.run` does not enter its parent,
            // and log lines inside must still carry the request id.
            let _request = request_span.enter();
            let _entered = span.enter();
            let mut conn = db.get()?;
            f(&mut conn)
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
