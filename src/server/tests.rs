//! Server tests: result encoding through arrow-pg (text and binary), and the
//! server started in-process on port 0 (HTTP, pg connection, shutdown).

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array, Int16Array,
    Int32Array, Int64Array, IntervalMonthDayNanoArray, RecordBatch, StringArray,
    TimestampMicrosecondArray, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{
    DataType, Field, IntervalMonthDayNano, IntervalUnit, Schema, TimeUnit,
};
use futures::StreamExt;
use pgwire::api::portal::Format;
use pgwire::api::results::FieldInfo;
use pgwire::api::Type;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::types::FromSql;

use super::encode::rows_response;
use super::*;

fn sample_batch() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("b", DataType::Boolean, true),
        Field::new("i2", DataType::Int16, true),
        Field::new("i4", DataType::Int32, true),
        Field::new("i8", DataType::Int64, true),
        Field::new("f4", DataType::Float32, true),
        Field::new("f8", DataType::Float64, true),
        Field::new("n", DataType::Decimal128(10, 2), true),
        Field::new("t", DataType::Utf8, true),
        Field::new("d", DataType::Date32, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new(
            "tstz",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("iv", DataType::Interval(IntervalUnit::MonthDayNano), true),
    ]));
    // 2024-01-02 03:04:05.678 UTC
    let ms = 1_704_164_645_678i64;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(BooleanArray::from(vec![Some(true), None])),
        Arc::new(Int16Array::from(vec![Some(-2), None])),
        Arc::new(Int32Array::from(vec![Some(40_000), None])),
        Arc::new(Int64Array::from(vec![Some(5_000_000_000), None])),
        Arc::new(Float32Array::from(vec![Some(1.5), None])),
        Arc::new(Float64Array::from(vec![Some(-0.25), None])),
        Arc::new(
            Decimal128Array::from(vec![Some(1234), None])
                .with_precision_and_scale(10, 2)
                .unwrap(),
        ),
        Arc::new(StringArray::from(vec![Some("héllo"), None])),
        Arc::new(Date32Array::from(vec![Some(19_724), None])), // 2024-01-02
        Arc::new(TimestampMillisecondArray::from(vec![Some(ms), None])),
        Arc::new(TimestampMicrosecondArray::from(vec![Some(ms * 1000), None]).with_timezone("UTC")),
        Arc::new(IntervalMonthDayNanoArray::from(vec![
            Some(IntervalMonthDayNano::new(1, 2, 3_000_000_000)),
            None,
        ])),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

/// Encodes the sample batch and splits each DataRow into its field values.
async fn encode(format: Format) -> (Vec<FieldInfo>, Vec<Vec<Option<Vec<u8>>>>) {
    let batch = sample_batch();
    let mut response = rows_response(&batch.schema(), vec![batch.clone()], &format).unwrap();
    let fields = response.row_schema().to_vec();
    let mut rows = vec![];
    while let Some(row) = response.data_rows().next().await {
        let row = row.unwrap();
        let mut data = &row.data[..];
        let mut values = vec![];
        for _ in 0..row.field_count {
            let len = i32::from_be_bytes(data[..4].try_into().unwrap());
            data = &data[4..];
            if len < 0 {
                values.push(None);
            } else {
                values.push(Some(data[..len as usize].to_vec()));
                data = &data[len as usize..];
            }
        }
        assert!(data.is_empty());
        rows.push(values);
    }
    (fields, rows)
}

#[tokio::test]
async fn encodes_common_types_as_text() {
    let (fields, rows) = encode(Format::UnifiedText).await;
    let types: Vec<Type> = fields.iter().map(|f| f.datatype().clone()).collect();
    assert_eq!(
        types,
        [
            Type::BOOL,
            Type::INT2,
            Type::INT4,
            Type::INT8,
            Type::FLOAT4,
            Type::FLOAT8,
            Type::NUMERIC,
            Type::TEXT,
            Type::DATE,
            Type::TIMESTAMP,
            Type::TIMESTAMPTZ,
            Type::INTERVAL,
        ]
    );
    let text: Vec<String> = rows[0]
        .iter()
        .map(|v| String::from_utf8(v.clone().unwrap()).unwrap())
        .collect();
    assert_eq!(
        text,
        [
            "t",
            "-2",
            "40000",
            "5000000000",
            "1.5",
            "-0.25",
            "12.34",
            "héllo",
            "2024-01-02",
            // Postgres trims trailing zeros; arrow-pg prints microseconds
            "2024-01-02 03:04:05.678",
            "2024-01-02 03:04:05.678+00",
            "1 mon 2 days 00:00:03",
        ]
    );
    assert!(rows[1].iter().all(Option::is_none), "NULLs: {:?}", rows[1]);
}

fn decode<'a, T: FromSql<'a>>(ty: &Type, value: &'a Option<Vec<u8>>) -> T {
    T::from_sql(ty, value.as_deref().expect("not null")).unwrap()
}

#[tokio::test]
async fn encodes_common_types_as_binary() {
    use chrono::{NaiveDate, NaiveDateTime, TimeZone, Utc};

    let (_, rows) = encode(Format::UnifiedBinary).await;
    let r = &rows[0];
    assert!(decode::<bool>(&Type::BOOL, &r[0]));
    assert_eq!(decode::<i16>(&Type::INT2, &r[1]), -2);
    assert_eq!(decode::<i32>(&Type::INT4, &r[2]), 40_000);
    assert_eq!(decode::<i64>(&Type::INT8, &r[3]), 5_000_000_000);
    assert_eq!(decode::<f32>(&Type::FLOAT4, &r[4]), 1.5);
    assert_eq!(decode::<f64>(&Type::FLOAT8, &r[5]), -0.25);
    // numeric: ndigits=2, weight=0, sign=+, dscale=2, digits [12, 3400]
    assert_eq!(
        r[6].as_deref().unwrap(),
        [0, 2, 0, 0, 0, 0, 0, 2, 0, 12, 13, 72]
    );
    assert_eq!(decode::<&str>(&Type::TEXT, &r[7]), "héllo");
    assert_eq!(
        decode::<NaiveDate>(&Type::DATE, &r[8]),
        NaiveDate::from_ymd_opt(2024, 1, 2).unwrap()
    );
    let ts = NaiveDate::from_ymd_opt(2024, 1, 2)
        .unwrap()
        .and_hms_milli_opt(3, 4, 5, 678)
        .unwrap();
    assert_eq!(decode::<NaiveDateTime>(&Type::TIMESTAMP, &r[9]), ts);
    assert_eq!(
        decode::<chrono::DateTime<Utc>>(&Type::TIMESTAMPTZ, &r[10]),
        Utc.from_utc_datetime(&ts)
    );
    // interval: microseconds (i64), days (i32), months (i32)
    let iv = r[11].as_deref().unwrap();
    assert_eq!(i64::from_be_bytes(iv[..8].try_into().unwrap()), 3_000_000);
    assert_eq!(i32::from_be_bytes(iv[8..12].try_into().unwrap()), 2);
    assert_eq!(i32::from_be_bytes(iv[12..].try_into().unwrap()), 1);
    assert!(rows[1].iter().all(Option::is_none), "NULLs: {:?}", rows[1]);
}

#[tokio::test]
async fn mixed_result_formats_follow_the_portal() {
    let batch = sample_batch();
    let codes = (0..batch.num_columns() as i16).map(|i| i % 2).collect();
    let response = rows_response(&batch.schema(), vec![batch], &Format::Individual(codes)).unwrap();
    let formats: Vec<i16> = response
        .row_schema()
        .iter()
        .map(|f| f.format().value())
        .collect();
    assert_eq!(formats, [0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1]);
}

#[tokio::test]
async fn null_columns_are_text() {
    let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Null, true)]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(datafusion::arrow::array::NullArray::new(2))],
    )
    .unwrap();
    for format in [Format::UnifiedText, Format::UnifiedBinary] {
        let mut response = rows_response(&schema, vec![batch.clone()], &format).unwrap();
        assert_eq!(response.row_schema()[0].datatype(), &Type::TEXT);
        let mut rows = 0;
        while let Some(row) = response.data_rows().next().await {
            assert_eq!(&row.unwrap().data[..], (-1i32).to_be_bytes());
            rows += 1;
        }
        assert_eq!(rows, 2);
    }
}

fn test_config(dir: &tempfile::TempDir) -> Config {
    Config {
        data_dir: dir.path().join("data"),
        pg_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    }
}

async fn http_get(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn serves_http_and_pg_and_shuts_down_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(test_config(&dir)).await.unwrap();
    assert_ne!(server.pg_addr().port(), 0);
    assert_ne!(server.http_addr().port(), 0);

    let health = http_get(
        server.http_addr(),
        "GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(health.starts_with("HTTP/1.1 200 OK\r\n"), "{health}");
    assert!(health.ends_with("\r\n\r\nok"), "{health}");
    let metrics = http_get(server.http_addr(), "GET /metrics HTTP/1.1\r\n\r\n").await;
    assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
    assert!(metrics.contains("Content-Type: text/plain; version=0.0.4\r\n"));
    let missing = http_get(server.http_addr(), "GET /nope HTTP/1.1\r\n\r\n").await;
    assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
    let garbage = http_get(server.http_addr(), "\u{16}\u{3}\u{1}\r\n\r\n").await;
    assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");

    // Any user, any database, no password.
    let url = format!(
        "host={} port={} user=weir dbname=anything",
        server.pg_addr().ip(),
        server.pg_addr().port()
    );
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn_task = tokio::spawn(connection);
    // Whatever the session answers (rows or an error, even a panic inside
    // it), the connection must survive and keep answering.
    for _ in 0..2 {
        match client.simple_query("SELECT 1").await {
            Ok(_) => {}
            Err(e) => assert!(e.as_db_error().is_some(), "not a server error: {e}"),
        }
        match client.query("SELECT 1", &[]).await {
            Ok(_) => {}
            Err(e) => assert!(e.as_db_error().is_some(), "not a server error: {e}"),
        }
    }
    // The empty query.
    client.simple_query("").await.unwrap();
    client.simple_query(" ; ").await.unwrap();

    // Shutdown closes the open connection and returns promptly.
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown within 10 s");
    let ended = tokio::time::timeout(Duration::from_secs(5), conn_task).await;
    assert!(ended.is_ok(), "client connection still open after shutdown");
}

#[tokio::test]
async fn reports_a_busy_address() {
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start(test_config(&dir)).await.unwrap();
    let mut config = test_config(&dir);
    config.data_dir = dir.path().join("other");
    config.pg_addr = first.pg_addr();
    let err = match Server::start(config).await {
        Ok(_) => panic!("second server bound a busy address"),
        Err(e) => e,
    };
    assert!(matches!(err, ServerError::Bind { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "cannot listen for Postgres connections on {}: ",
            first.pg_addr()
        )),
        "{message}"
    );
    first.shutdown().await;
}
