//! The queries that are the same on both backends but for their pool, row and connection
//! types, written once: `queries!` expands them inside `sqlite` and `postgres`, where the
//! parts that differ stand beside it: the SQL that differs (`INSERT_AUDIT`, `SELECT_AUDIT`,
//! `SELECT_TRACE`, `FATE_COLUMNS`, `DEAD_LETTER_COLUMNS`, `CLAIM_ROWS`, and the pieces
//! `TIME`, `MICROS_OF`, `AMONG`, `STARTS_WITH` and `CONCERNS` that times and conditions are
//! put together from), how lists and UUIDs are bound and read (`text_list`, `db_uuid`,
//! `db_uuids`, `row_uuid`), and how a consistent read and a change begin (`begin_snapshot`,
//! `begin_write`).

macro_rules! queries {
    ($pool:ty, $db:ty, $row:ty, $conn:ty) => {
        pub(super) async fn load_directory(pool: &$pool) -> Result<StoredDirectory, StoreError> {
            const OP: &str = "load directory";
            // One snapshot for the lists and the version, so that they agree.
            let mut tx = begin_snapshot(pool).await.map_err(StoreError::query(OP))?;
            let destinations = sqlx::query(admin::SELECT_DESTINATIONS)
                .fetch_all(&mut *tx)
                .await
                .map_err(StoreError::query(OP))?;
            let routes = sqlx::query(admin::SELECT_ROUTES)
                .fetch_all(&mut *tx)
                .await
                .map_err(StoreError::query(OP))?;
            let services = sqlx::query(admin::SELECT_SERVICES)
                .fetch_all(&mut *tx)
                .await
                .map_err(StoreError::query(OP))?;
            let version = sqlx::query(admin::SELECT_VERSION)
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::query(OP))?;
            tx.commit().await.map_err(StoreError::query(OP))?;
            Ok(StoredDirectory {
                destinations: Columns::read_all(&destinations, OP, Columns::destination)?,
                routes: Columns::read_all(&routes, OP, Columns::route)?,
                services: Columns::read_all(&services, OP, Columns::service)?,
                version: Columns::new(&version, OP).int()?,
            })
        }

        pub(super) async fn directory_version(pool: &$pool) -> Result<i64, StoreError> {
            let row = sqlx::query(admin::SELECT_VERSION)
                .fetch_one(pool)
                .await
                .map_err(StoreError::query("directory version"))?;
            Columns::new(&row, "directory version").int()
        }

        pub(super) async fn audit(
            pool: &$pool,
            entry: &NewAudit,
            at: i64,
        ) -> Result<(), StoreError> {
            let mut conn = pool.acquire().await.map_err(StoreError::query("audit"))?;
            insert_audit(&mut conn, entry, at, "audit").await
        }

        async fn insert_audit(
            conn: &mut $conn,
            entry: &NewAudit,
            at: i64,
            operation: &'static str,
        ) -> Result<(), StoreError> {
            let (lands, destinations) = entry.concerns.columns();
            let record = &entry.record;
            sqlx::query(INSERT_AUDIT)
                .bind(at)
                .bind(&record.actor)
                .bind(&record.actor_scope)
                .bind(&record.action)
                .bind(&record.object)
                .bind(&record.before)
                .bind(&record.after)
                .bind(lands)
                .bind(destinations)
                .execute(conn)
                .await
                .map_err(StoreError::query(operation))?;
            Ok(())
        }

        pub(super) async fn list_audit(
            pool: &$pool,
            conditions: &[Condition],
            limit: u32,
        ) -> Result<Vec<AuditEntry>, StoreError> {
            const OP: &str = "list audit";
            let rows = select(
                pool,
                SELECT_AUDIT,
                conditions,
                " ORDER BY id DESC",
                Some(limit),
                OP,
            )
            .await?;
            Columns::read_all(&rows, OP, Columns::audit_entry)
        }

        /// `head` (a SELECT … FROM), ` WHERE` `conditions`, `tail` (an ORDER BY) and a LIMIT.
        async fn select(
            pool: &$pool,
            head: &str,
            conditions: &[Condition],
            tail: &str,
            limit: Option<u32>,
            operation: &'static str,
        ) -> Result<Vec<$row>, StoreError> {
            let mut query = QueryBuilder::new(head);
            push_where(&mut query, conditions);
            query.push(tail);
            if let Some(limit) = limit {
                query.push(" LIMIT ");
                query.push_bind(i64::from(limit));
            }
            query
                .build()
                .fetch_all(pool)
                .await
                .map_err(StoreError::query(operation))
        }

        /// Appends ` WHERE a AND b …` for `conditions` (nothing for none), put together from
        /// the backend's `TIME`, `AMONG`, `STARTS_WITH` and `CONCERNS`.
        fn push_where(query: &mut QueryBuilder<'_, $db>, conditions: &[Condition]) {
            for (i, condition) in conditions.iter().enumerate() {
                query.push(if i == 0 { " WHERE " } else { " AND " });
                match condition {
                    Condition::Equals(column, value) => {
                        query.push(format_args!("{column} = "));
                        query.push_bind(value.clone());
                    }
                    Condition::StartsWith(column, value) => {
                        let [open, between, close] = STARTS_WITH;
                        query.push(format_args!("{open}{column}{between}"));
                        query.push_bind(value.clone());
                        query.push(close);
                    }
                    Condition::NotBefore(column, micros) => {
                        query.push(format_args!("{column} >= "));
                        push_time(query, *micros);
                    }
                    Condition::Before(column, micros) => {
                        query.push(format_args!("{column} < "));
                        push_time(query, *micros);
                    }
                    Condition::IdBelow(id) => {
                        query.push("id < ");
                        query.push_bind(*id);
                    }
                    Condition::DeadLetterAfter(micros, id) => {
                        query.push("(dead_lettered_at, id) > (");
                        push_time(query, *micros);
                        query.push(", ");
                        query.push_bind(db_uuid(*id));
                        query.push(")");
                    }
                    Condition::DeadLetterId(id) => {
                        query.push("id = ");
                        query.push_bind(db_uuid(*id));
                    }
                    Condition::Subjects {
                        platforms,
                        destinations,
                    } => {
                        query.push("(platform");
                        push_among(query, platforms);
                        query.push(" OR destination");
                        push_among(query, destinations);
                        query.push(")");
                    }
                    Condition::Concerns {
                        lands,
                        destinations,
                    } => {
                        let [open, between, close] = CONCERNS;
                        query.push(open);
                        query.push_bind(text_list(lands));
                        query.push(between);
                        query.push_bind(text_list(destinations));
                        query.push(close);
                    }
                }
            }
        }

        /// A bound time, microseconds since the epoch, as the backend's time columns take it.
        fn push_time(query: &mut QueryBuilder<'_, $db>, micros: i64) {
            query.push(TIME[0]);
            query.push_bind(micros);
            query.push(TIME[1]);
        }

        /// After a column: it is one of `items`.
        fn push_among(query: &mut QueryBuilder<'_, $db>, items: &[String]) {
            query.push(AMONG[0]);
            query.push_bind(text_list(items));
            query.push(AMONG[1]);
        }

        /// The time bound as `$n`, as the backend's time columns take it.
        fn time_param(n: u8) -> String {
            format!("{}${n}{}", TIME[0], TIME[1])
        }

        /// The time `column` as microseconds since the epoch, as the rows are read.
        fn micros_of(column: &str) -> String {
            format!("{}{column}{}", MICROS_OF[0], MICROS_OF[1])
        }

        /// `column` is one of the list bound as `$n` (`text_list`, `db_uuids`).
        fn among(column: &str, n: u8) -> String {
            format!("{column}{}${n}{}", AMONG[0], AMONG[1])
        }

        /// The `columns` of dead letter `id`, read with `read`.
        async fn dead_letter_by_id<T>(
            pool: &$pool,
            columns: &str,
            id: Uuid,
            operation: &'static str,
            read: for<'r> fn(Columns<'r, $row>) -> Result<T, StoreError>,
        ) -> Result<Option<T>, StoreError> {
            let row = sqlx::query(&format!("SELECT {columns} FROM dead_letters WHERE id = $1"))
                .bind(db_uuid(id))
                .fetch_optional(pool)
                .await
                .map_err(StoreError::query(operation))?;
            row.as_ref()
                .map(|row| read(Columns::new(row, operation)))
                .transpose()
        }

        pub(super) async fn list_dead_letters(
            pool: &$pool,
            conditions: &[Condition],
            limit: u32,
        ) -> Result<Vec<DeadLetter>, StoreError> {
            const OP: &str = "list dead letters";
            let head = format!("SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters");
            let order = " ORDER BY dead_lettered_at, id";
            let rows = select(pool, &head, conditions, order, Some(limit), OP).await?;
            Columns::read_all(&rows, OP, Columns::dead_letter)
        }

        pub(super) async fn count_dead_letters(
            pool: &$pool,
            conditions: &[Condition],
        ) -> Result<i64, StoreError> {
            const OP: &str = "count dead letters";
            let head = "SELECT count(*) FROM dead_letters";
            let rows = select(pool, head, conditions, "", None, OP).await?;
            match rows.first() {
                Some(row) => Columns::new(row, OP).int(),
                None => Err(StoreError::Corrupt {
                    detail: "count returned no row".into(),
                }),
            }
        }

        /// `(key, count)` of the letters matching `conditions`, grouped by `column`.
        pub(super) async fn count_dead_letters_by(
            pool: &$pool,
            conditions: &[Condition],
            column: &'static str,
        ) -> Result<Vec<(String, u64)>, StoreError> {
            const OP: &str = "count dead letters by group";
            let head = format!("SELECT {column}, count(*) FROM dead_letters");
            let tail = format!(" GROUP BY {column}");
            let rows = select(pool, &head, conditions, &tail, None, OP).await?;
            Columns::read_all(&rows, OP, Columns::group_count)
        }

        pub(super) async fn dead_letter_message(
            pool: &$pool,
            id: Uuid,
        ) -> Result<Option<DeadLetterMessage>, StoreError> {
            let columns = "body, content_type, message_id, headers, platform";
            let op = "read dead letter message";
            dead_letter_by_id(pool, columns, id, op, |row| row.dead_letter_message()).await
        }

        pub(super) async fn set_dead_letter_state(
            pool: &$pool,
            ids: &[Uuid],
            state: DeadLetterState,
            actor: &str,
            at: i64,
        ) -> Result<u64, StoreError> {
            let done = sqlx::query(&format!(
                "UPDATE dead_letters SET state = $1, state_changed_at = {}, \
                     state_changed_by = $3, replays = replays + $4 \
                 WHERE state = 'pending' AND {}",
                time_param(2),
                among("id", 5)
            ))
            .bind(state.as_str())
            .bind(at)
            .bind(actor)
            .bind(i32::from(state == DeadLetterState::Replayed))
            .bind(db_uuids(ids))
            .execute(pool)
            .await
            .map_err(StoreError::query("set dead letter state"))?;
            Ok(done.rows_affected())
        }

        pub(super) async fn trace(
            pool: &$pool,
            submission_id: &str,
        ) -> Result<Vec<TraceEvent>, StoreError> {
            const OP: &str = "trace";
            let rows = sqlx::query(SELECT_TRACE)
                .bind(submission_id)
                .fetch_all(pool)
                .await
                .map_err(StoreError::query(OP))?;
            Columns::read_all(&rows, OP, Columns::trace_event)
        }

        pub(super) async fn fate(pool: &$pool, id: Uuid) -> Result<Option<Fate>, StoreError> {
            const OP: &str = "read submission fate";
            let rows = sqlx::query(&format!(
                "SELECT {FATE_COLUMNS} FROM delivered_submissions WHERE submission_id = $1"
            ))
            .bind(db_uuid(id))
            .fetch_all(pool)
            .await
            .map_err(StoreError::query(OP))?;
            Ok(fates(&rows, OP)?.pop())
        }

        pub(super) async fn record_answer(
            pool: &$pool,
            answer: &Answer,
            at: i64,
        ) -> Result<bool, StoreError> {
            let done = sqlx::query(&format!(
                "UPDATE delivered_submissions \
                 SET answer = $1, answer_digest = $2, answered_at = {} \
                 WHERE submission_id = $4 AND destination = $5 \
                   AND (answer IS NULL OR answer = 'forwarded-onward')",
                time_param(3)
            ))
            .bind(&answer.answer)
            .bind(answer.digest.as_slice())
            .bind(at)
            .bind(db_uuid(answer.submission_id))
            .bind(&answer.destination)
            .execute(pool)
            .await
            .map_err(StoreError::query("record answer"))?;
            Ok(done.rows_affected() == 1)
        }

        pub(super) async fn unanswered(
            pool: &$pool,
            query: &Unanswered<'_>,
        ) -> Result<Vec<Fate>, StoreError> {
            const OP: &str = "list unanswered submissions";
            let none = Vec::new();
            let (all, platforms, destinations) = match query.visible {
                Visible::All => (true, &none, &none),
                Visible::Only {
                    platforms,
                    destinations,
                } => (false, platforms, destinations),
            };
            let rows = sqlx::query(&format!(
                "SELECT {FATE_COLUMNS} FROM delivered_submissions \
                 WHERE answer IS NULL AND delivered_at < {} \
                   AND ($2 = 0 OR overdue_reported_at IS NULL) \
                   AND ($4 OR {} OR {}) \
                 ORDER BY delivered_at, submission_id LIMIT $3",
                time_param(1),
                among("platform", 5),
                among("destination", 6)
            ))
            .bind(query.delivered_before)
            .bind(i64::from(query.unreported_only))
            .bind(i64::from(query.limit))
            .bind(all)
            .bind(text_list(platforms))
            .bind(text_list(destinations))
            .fetch_all(pool)
            .await
            .map_err(StoreError::query(OP))?;
            fates(&rows, OP)
        }

        /// Claims up to `limit` overdue, unreported submissions whose claim (if any) is
        /// older than `stale_before`, in one statement (see the backend's `CLAIM_ROWS`).
        pub(super) async fn claim_overdue(
            pool: &$pool,
            delivered_before: i64,
            stale_before: i64,
            at: i64,
            limit: u32,
        ) -> Result<Vec<Fate>, StoreError> {
            const OP: &str = "claim overdue submissions";
            let rows = sqlx::query(&format!(
                "UPDATE delivered_submissions SET overdue_claimed_at = {} \
                 WHERE submission_id IN ( \
                     SELECT submission_id FROM delivered_submissions \
                     WHERE answer IS NULL AND overdue_reported_at IS NULL \
                       AND delivered_at < {} \
                       AND (overdue_claimed_at IS NULL OR overdue_claimed_at < {}) \
                     ORDER BY delivered_at, submission_id LIMIT $4{CLAIM_ROWS}) \
                 RETURNING {FATE_COLUMNS}",
                time_param(3),
                time_param(1),
                time_param(2)
            ))
            .bind(delivered_before)
            .bind(stale_before)
            .bind(at)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(StoreError::query(OP))?;
            fates(&rows, OP)
        }

        pub(super) async fn mark_overdue_reported(
            pool: &$pool,
            ids: &[Uuid],
            at: i64,
        ) -> Result<(), StoreError> {
            sqlx::query(&format!(
                "UPDATE delivered_submissions SET overdue_reported_at = {} WHERE {}",
                time_param(1),
                among("submission_id", 2)
            ))
            .bind(at)
            .bind(db_uuids(ids))
            .execute(pool)
            .await
            .map_err(StoreError::query("mark overdue"))?;
            Ok(())
        }

        pub(super) async fn release_overdue_claims(
            pool: &$pool,
            ids: &[Uuid],
        ) -> Result<(), StoreError> {
            sqlx::query(&format!(
                "UPDATE delivered_submissions SET overdue_claimed_at = NULL \
                 WHERE {} AND overdue_reported_at IS NULL",
                among("submission_id", 1)
            ))
            .bind(db_uuids(ids))
            .execute(pool)
            .await
            .map_err(StoreError::query("release overdue claims"))?;
            Ok(())
        }

        pub(super) async fn purge(pool: &$pool, cutoff_micros: i64) -> Result<u64, StoreError> {
            let from = "delivered_submissions WHERE";
            delete_before(pool, from, "delivered_at", cutoff_micros, "purge").await
        }

        pub(super) async fn purge_dead_letters(
            pool: &$pool,
            cutoff_micros: i64,
        ) -> Result<u64, StoreError> {
            let from = "dead_letters WHERE state <> 'pending' AND";
            let op = "purge dead letters";
            delete_before(pool, from, "state_changed_at", cutoff_micros, op).await
        }

        pub(super) async fn purge_events(
            pool: &$pool,
            cutoff_micros: i64,
        ) -> Result<u64, StoreError> {
            delete_before(
                pool,
                "trace_events WHERE",
                "at",
                cutoff_micros,
                "purge events",
            )
            .await
        }

        /// Deletes the rows of `from` (a table and `WHERE`, perhaps with conditions and
        /// `AND`) whose time `column` is before `cutoff_micros`; returns how many.
        async fn delete_before(
            pool: &$pool,
            from: &str,
            column: &str,
            cutoff_micros: i64,
            operation: &'static str,
        ) -> Result<u64, StoreError> {
            let done = sqlx::query(&format!("DELETE FROM {from} {column} < {}", time_param(1)))
                .bind(cutoff_micros)
                .execute(pool)
                .await
                .map_err(StoreError::query(operation))?;
            Ok(done.rows_affected())
        }

        pub(super) async fn apply_directory_change(
            pool: &$pool,
            change: &DirectoryChange,
            audit: &NewAudit,
            at: i64,
        ) -> Result<i64, StoreError> {
            const OP: &str = "apply directory change";
            let mut tx = begin_write(pool).await.map_err(StoreError::query(OP))?;
            let (sql, params) = change.statement();
            let mut query = sqlx::query(sql);
            for param in params {
                query = query.bind(param);
            }
            let done = query
                .execute(&mut *tx)
                .await
                .map_err(StoreError::query(OP))?;
            if done.rows_affected() == 0 {
                // Dropping the transaction rolls it back: no version bump, no audit row.
                return Err(change.not_found());
            }
            let version = sqlx::query(admin::BUMP_VERSION)
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::query(OP))?;
            let version = Columns::new(&version, OP).int()?;
            insert_audit(&mut tx, audit, at, OP).await?;
            tx.commit().await.map_err(StoreError::query(OP))?;
            Ok(version)
        }

        pub(super) async fn heartbeat(pool: &$pool, instance: &Instance) -> Result<(), StoreError> {
            sqlx::query(&format!(
                "INSERT INTO gateway_instances \
                     (id, host, pid, version, started_at, seen_at, directory_version, \
                      consumed, forwarded, rejected, in_flight) \
                 VALUES ($1, $2, $3, $4, {}, {}, $7, $8, $9, $10, $11) \
                 ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at, \
                     directory_version = excluded.directory_version, \
                     consumed = excluded.consumed, forwarded = excluded.forwarded, \
                     rejected = excluded.rejected, in_flight = excluded.in_flight",
                time_param(5),
                time_param(6)
            ))
            .bind(&instance.id)
            .bind(&instance.host)
            .bind(i64::from(instance.pid))
            .bind(&instance.version)
            .bind(to_micros(instance.started_at))
            .bind(to_micros(instance.seen_at))
            .bind(instance.directory_version)
            .bind(instances::count(instance.consumed))
            .bind(instances::count(instance.forwarded))
            .bind(instances::count(instance.rejected))
            .bind(instances::count(instance.in_flight))
            .execute(pool)
            .await
            .map_err(StoreError::query("write heartbeat"))?;
            Ok(())
        }

        /// The instances seen since `since` (microseconds), longest-running first.
        pub(super) async fn instances(
            pool: &$pool,
            since: i64,
        ) -> Result<Vec<Instance>, StoreError> {
            const OP: &str = "list instances";
            sqlx::query(&format!(
                "SELECT id, host, pid, version, {}, {}, \
                     directory_version, consumed, forwarded, rejected, in_flight \
                 FROM gateway_instances WHERE seen_at >= {} ORDER BY started_at, id",
                micros_of("started_at"),
                micros_of("seen_at"),
                time_param(1)
            ))
            .bind(since)
            .fetch_all(pool)
            .await
            .map_err(StoreError::query(OP))?
            .iter()
            .map(instances::instance)
            .collect()
        }

        /// Forgets instances not seen since `cutoff` (microseconds).
        pub(super) async fn purge_instances(pool: &$pool, cutoff: i64) -> Result<u64, StoreError> {
            let from = "gateway_instances WHERE";
            delete_before(pool, from, "seen_at", cutoff, "purge instances").await
        }

        /// A row of `delivered_submissions` as the message path's checks select it.
        fn delivery_record(row: &$row) -> Result<DeliveryRecord, StoreError> {
            const OP: &str = "check";
            let submission_id = row_uuid(row, 0, OP)?;
            let fingerprint: Vec<u8> = row.try_get(1).map_err(StoreError::query(OP))?;
            Ok(DeliveryRecord {
                submission_id,
                fingerprint: super::fingerprint_from_bytes(&fingerprint, &submission_id)?,
                destination: row.try_get(2).map_err(StoreError::query(OP))?,
                delivered_at: from_micros(row.try_get(3).map_err(StoreError::query(OP))?),
                platform: row.try_get(4).map_err(StoreError::query(OP))?,
                received_at: row
                    .try_get::<Option<i64>, _>(5)
                    .map_err(StoreError::query(OP))?
                    .map(from_micros),
            })
        }

        fn fates(rows: &[$row], op: &'static str) -> Result<Vec<Fate>, StoreError> {
            rows.iter()
                .map(|row| {
                    Ok(Fate {
                        submission_id: row_uuid(row, 0, op)?,
                        platform: row.try_get(1).map_err(StoreError::query(op))?,
                        destination: row.try_get(2).map_err(StoreError::query(op))?,
                        delivered_at: from_micros(row.try_get(3).map_err(StoreError::query(op))?),
                        answer: row.try_get(4).map_err(StoreError::query(op))?,
                        answer_digest: row.try_get(5).map_err(StoreError::query(op))?,
                        answered_at: row
                            .try_get::<Option<i64>, _>(6)
                            .map_err(StoreError::query(op))?
                            .map(from_micros),
                        overdue_reported_at: row
                            .try_get::<Option<i64>, _>(7)
                            .map_err(StoreError::query(op))?
                            .map(from_micros),
                    })
                })
                .collect()
        }
    };
}

pub(super) use queries;

/// The migrations of one backend, `migrations/<dir>/`: the same steps on both, each in its
/// own SQL.
macro_rules! migrations {
    ($dir:literal) => {
        super::common::migrations!($dir:
            1, "delivered submissions", "0001_delivered_submissions.sql";
            2, "admin", "0002_admin.sql";
            3, "receipts", "0003_receipts.sql";
            4, "receipt queues", "0004_receipt_queues.sql";
            5, "trace on the delivery record", "0005_trace_on_record.sql";
            6, "instances", "0006_instances.sql";
            7, "scopes", "0007_scopes.sql";
        )
    };
    ($dir:literal: $($version:literal, $description:literal, $file:literal;)*) => {
        &[$((
            $version,
            $description,
            include_str!(concat!("migrations/", $dir, "/", $file)),
        )),*]
    };
}

pub(super) use migrations;
