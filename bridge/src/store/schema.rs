//! How far a database's schema is from what this build expects, read without changing
//! anything: for `switchboard check-config`, which must not create a database or apply a
//! migration (that is `run`'s job, at start-up).

use std::str::FromStr;

use sqlx::{
    Connection,
    migrate::{Migrate, Migrator},
    postgres::PgConnection,
    sqlite::{SqliteConnectOptions, SqliteConnection},
};

use super::{Engine, StoreError};

/// The migrations of each engine, embedded at compile time. `Store::connect` applies them.
pub(super) static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");
pub(super) static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");

/// What [`SchemaStatus::read`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    pub engine: Engine,
    /// `false`: a SQLite file that does not exist yet (its directory does); `run` creates it.
    pub exists: bool,
    /// How many of this build's migrations the database has.
    pub applied: usize,
    /// This build's migrations the database does not have yet, (version, description) in
    /// order: `run` applies them at start-up.
    pub pending: Vec<(i64, String)>,
    /// What would make `run` refuse the database (its migrator checks the same): a migration
    /// applied that this build does not know (the database was used by a newer Switchboard),
    /// one whose file changed since it was applied, one that failed half-way.
    pub problems: Vec<String>,
}

impl SchemaStatus {
    /// Connects to the database at `url` and compares its applied migrations with this
    /// build's. Reads only: a SQLite file is opened read-only and never created; nothing is
    /// migrated. A SQLite file that does not exist, in a directory that does, is reported
    /// with every migration pending; a missing directory is an error, as it is for `run`.
    /// Errors never hold the URL (a PostgreSQL URL holds its password).
    pub async fn read(url: &str) -> Result<Self, StoreError> {
        match Engine::of_url(url)? {
            Engine::Sqlite => {
                let options = SqliteConnectOptions::from_str(url)?
                    .read_only(true)
                    .create_if_missing(false);
                let file = options.get_filename();
                if !file.exists() {
                    let dir = match file.parent() {
                        Some(dir) if !dir.as_os_str().is_empty() => dir,
                        _ => std::path::Path::new("."),
                    };
                    if !dir.is_dir() {
                        return Err(StoreError::Database(sqlx::Error::Configuration(
                            format!(
                                "the directory {} of the database file does not exist",
                                dir.display()
                            )
                            .into(),
                        )));
                    }
                    return Ok(Self::compare(Engine::Sqlite, &SQLITE, false, None, &[]));
                }
                let mut conn = SqliteConnection::connect_with(&options).await?;
                let has_table: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
                )
                .fetch_one(&mut conn)
                .await?;
                let status =
                    Self::read_applied(&mut conn, has_table > 0, Engine::Sqlite, &SQLITE).await;
                let _ = conn.close().await;
                status
            }
            Engine::Postgres => {
                let mut conn = PgConnection::connect(url).await?;
                let has_table: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM information_schema.tables \
                     WHERE table_name = '_sqlx_migrations' AND table_schema = current_schema()",
                )
                .fetch_one(&mut conn)
                .await?;
                let status =
                    Self::read_applied(&mut conn, has_table > 0, Engine::Postgres, &POSTGRES).await;
                let _ = conn.close().await;
                status
            }
        }
    }

    async fn read_applied(
        conn: &mut impl Migrate,
        has_table: bool,
        engine: Engine,
        migrator: &Migrator,
    ) -> Result<Self, StoreError> {
        if !has_table {
            // A database nothing was ever migrated in: `run` applies everything.
            return Ok(Self::compare(engine, migrator, true, None, &[]));
        }
        let dirty = conn.dirty_version().await?;
        let applied: Vec<(i64, Vec<u8>)> = conn
            .list_applied_migrations()
            .await?
            .into_iter()
            .map(|m| (m.version, m.checksum.into_owned()))
            .collect();
        Ok(Self::compare(engine, migrator, true, dirty, &applied))
    }

    /// Compares what the database has applied, (version, checksum), with `migrator`'s.
    fn compare(
        engine: Engine,
        migrator: &Migrator,
        exists: bool,
        dirty: Option<i64>,
        applied: &[(i64, Vec<u8>)],
    ) -> Self {
        let known: Vec<_> = migrator
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .collect();
        let mut problems = Vec::new();
        if let Some(version) = dirty {
            problems.push(format!(
                "migration {version} failed half-way: restore the database from a backup taken before it"
            ));
        }
        for (version, checksum) in applied {
            match known.iter().find(|m| m.version == *version) {
                None => problems.push(format!(
                    "migration {version} is applied but unknown to this build: the database was used by a newer Switchboard"
                )),
                Some(m) if *m.checksum != **checksum => problems.push(format!(
                    "migration {version} ({}) was changed after it was applied",
                    m.description
                )),
                Some(_) => {}
            }
        }
        let pending = known
            .iter()
            .filter(|m| !applied.iter().any(|(v, _)| *v == m.version))
            .map(|m| (m.version, m.description.to_string()))
            .collect();
        Self {
            engine,
            exists,
            applied: known
                .iter()
                .filter(|m| applied.iter().any(|(v, _)| *v == m.version))
                .count(),
            pending,
            problems,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh file, one migrated by `Store::connect`, one with a migration missing and one
    /// with a migration this build does not know: each read as it is, and none changed by
    /// being read.
    #[tokio::test]
    async fn a_sqlite_schema_is_read_without_being_changed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sb.db");
        let url = format!("sqlite://{}", file.display());
        let total = SQLITE.iter().count();

        let fresh = SchemaStatus::read(&url).await.unwrap();
        assert!(!fresh.exists);
        assert_eq!((fresh.applied, fresh.pending.len()), (0, total));
        assert!(!file.exists(), "reading created the file");

        let missing_dir = format!("sqlite://{}", dir.path().join("nope/sb.db").display());
        let err = SchemaStatus::read(&missing_dir).await.unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");

        let store = crate::Store::connect(&url).await.unwrap();
        store.close().await;
        let current = SchemaStatus::read(&url).await.unwrap();
        assert_eq!(
            current,
            SchemaStatus {
                engine: Engine::Sqlite,
                exists: true,
                applied: total,
                pending: vec![],
                problems: vec![],
            }
        );

        let last = SQLITE.iter().last().unwrap();
        let mut conn = SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
            .bind(last.version)
            .execute(&mut conn)
            .await
            .unwrap();
        let behind = SchemaStatus::read(&url).await.unwrap();
        assert_eq!(
            behind.pending,
            [(last.version, last.description.to_string())]
        );
        assert!(behind.problems.is_empty());
        assert_eq!(
            SchemaStatus::read(&url).await.unwrap(),
            behind,
            "reading applied nothing"
        );

        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99999, 'from the future', TRUE, x'00', 0)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        let newer = SchemaStatus::read(&url).await.unwrap();
        assert_eq!(newer.problems.len(), 1, "{newer:?}");
        assert!(newer.problems[0].contains("99999"), "{newer:?}");
    }
}
