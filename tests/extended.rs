//! The extended query protocol through tokio-postgres: prepared statements
//! with `$n` parameters, and results in binary format decoded into Rust types.

mod common;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use common::{connect, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_and_binary_results() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let c = connect(&server).await;
    c.batch_execute(
        "CREATE TABLE t (id BIGINT PRIMARY KEY, small SMALLINT, i INT, f REAL, d DOUBLE, b BOOLEAN,
                         s TEXT, day DATE, at TIMESTAMP, atz TIMESTAMPTZ)",
    )
    .await
    .unwrap();
    let insert = c
        .prepare("INSERT INTO t (id, small, i, f, d, b, s, day, at, atz) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
        .await
        .unwrap();
    let day = NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
    let at: NaiveDateTime = day.and_hms_milli_opt(12, 30, 5, 250).unwrap();
    let atz: DateTime<Utc> = at.and_utc();
    let n = c
        .execute(
            &insert,
            &[
                &1i64, &7i16, &-3i32, &1.5f32, &2.25f64, &true, &"héllo", &day, &at, &atz,
            ],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    c.execute(
        &insert,
        &[
            &2i64,
            &None::<i16>,
            &4i32,
            &0.5f32,
            &-1.0f64,
            &false,
            &"b",
            &day,
            &at,
            &atz,
        ],
    )
    .await
    .unwrap();

    let rows = c
        .query(
            "SELECT id, small, i, f, d, b, s, day, at, atz FROM t WHERE id = $1",
            &[&1i64],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r.get::<_, i64>(0), 1);
    assert_eq!(r.get::<_, i16>(1), 7);
    assert_eq!(r.get::<_, i32>(2), -3);
    assert_eq!(r.get::<_, f32>(3), 1.5);
    assert_eq!(r.get::<_, f64>(4), 2.25);
    assert!(r.get::<_, bool>(5));
    assert_eq!(r.get::<_, String>(6), "héllo");
    assert_eq!(r.get::<_, NaiveDate>(7), day);
    assert_eq!(r.get::<_, NaiveDateTime>(8), at);
    assert_eq!(r.get::<_, DateTime<Utc>>(9), atz);

    // A parameter compared with a column takes the column's type; NULLs come back as None.
    let rows = c
        .query(
            "SELECT id, small FROM t WHERE d < $1 ORDER BY id",
            &[&0.0f64],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i64>(0), 2);
    assert_eq!(rows[0].get::<_, Option<i16>>(1), None);

    // A parameter's type comes from the cast around it, as in Postgres.
    let cast = c
        .prepare("SELECT $1::BIGINT + 1, CAST($2 AS DOUBLE) * 2")
        .await
        .unwrap();
    assert_eq!(
        cast.params(),
        &[
            tokio_postgres::types::Type::INT8,
            tokio_postgres::types::Type::FLOAT8
        ]
    );
    let row = c.query_one(&cast, &[&41i64, &1.25f64]).await.unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, f64>(1)), (42, 2.5));

    // A statement prepared once runs with different parameters.
    let by_flag = c
        .prepare("SELECT COUNT(*) FROM t WHERE b = $1")
        .await
        .unwrap();
    assert_eq!(
        c.query_one(&by_flag, &[&true])
            .await
            .unwrap()
            .get::<_, i64>(0),
        1
    );
    assert_eq!(
        c.query_one(&by_flag, &[&false])
            .await
            .unwrap()
            .get::<_, i64>(0),
        1
    );

    // Errors in the extended protocol carry their SQLSTATE, and the connection goes on.
    let err = c
        .execute(
            &insert,
            &[
                &1i64,
                &None::<i16>,
                &0i32,
                &0f32,
                &0f64,
                &true,
                &"x",
                &day,
                &at,
                &atz,
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "23505");
    let err = c
        .query("SELECT * FROM missing WHERE x = $1", &[&1i64])
        .await
        .unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "42P01");

    let updated = c
        .execute("UPDATE t SET s = $1 WHERE id = $2", &[&"new", &2i64])
        .await
        .unwrap();
    assert_eq!(updated, 1);
    let row = c
        .query_one("SELECT s FROM t WHERE id = 2", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "new");
    server.shutdown().await;
}
