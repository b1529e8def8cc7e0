use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sluice::io::{Sink, SinkContext};
use sluice::{BoxError, Message, Rejection};
use sluice_schemas::bigquery::{Field, FieldType, TableSchema};
use sluice_schemas::SchemaRegistry;

use super::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn write_all(
    sink: &BigQuerySink,
    records: Vec<Message>,
) -> Result<Vec<Rejection<Message>>, BoxError> {
    let rt = runtime();
    let ctx = SinkContext::standalone(rt.handle().clone(), "test", 0, 1);
    let mut writer = sink.open(&ctx).unwrap();
    let fut = writer.write(1, records);
    rt.block_on(fut)
}

fn quick_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
    }
}

fn n_table() -> TableSchema {
    TableSchema {
        fields: vec![
            Field::new("n", FieldType::Int64),
            Field::new("additional_properties", FieldType::String),
        ],
    }
}

fn doc(ns: &str, n: serde_json::Value) -> Message {
    Message::new(json!({"n": n}).to_string())
        .with_attribute("document_namespace", ns)
        .with_attribute("document_type", "test")
        .with_attribute("document_version", "1")
}

fn sink(bq: &MemoryBigQuery) -> BigQuerySink {
    BigQuerySink::new(Arc::new(bq.clone()), config::default_table()).with_retry(quick_retry())
}

#[test]
fn a_refused_row_is_a_dead_letter_and_the_rest_lands() {
    let bq = MemoryBigQuery::new();
    bq.add_table("test", "test_v1", n_table());
    // a row that fits the table, which the service refuses all the same
    bq.refuse_rows(|row| (row["n"] == 4).then(|| "row too large for n".to_string()));
    let input: Vec<Message> = (0..10).map(|i| doc("test", json!(i))).collect();
    let refused = write_all(&sink(&bq), input.clone()).unwrap();
    let rows = bq.rows("test", "test_v1").unwrap();
    assert_eq!(rows.len(), 9);
    assert!(rows.iter().all(|r| r["n"] != 4));
    assert_eq!(refused.len(), 1);
    let r = &refused[0];
    assert_eq!(r.record.payload, input[4].payload);
    assert_eq!(r.record.attribute("error_table"), Some("test.test_v1"));
    assert_eq!(r.record.attribute("error_reason"), Some("invalid"));
    assert_eq!(r.failure.error_type.as_deref(), Some("WriteBigQuery"));
    assert!(r.failure.message.contains("n"), "{}", r.failure.message);
    // the request with the bad row, then the rest
    assert_eq!(bq.insert_calls(), 2);
}

#[test]
fn records_without_a_table_are_dead_letters() {
    let bq = MemoryBigQuery::new();
    bq.add_table("test", "test_v1", n_table());
    let no_attrs = Message::new("{\"n\":1}");
    let missing = doc("other", json!(1));
    let not_json = doc("test", json!(1));
    let not_json = Message {
        payload: "not json".into(),
        ..not_json
    };
    let refused = write_all(
        &sink(&bq),
        vec![no_attrs, missing, not_json, doc("test", json!(2))],
    )
    .unwrap();
    let reasons: Vec<_> = refused
        .iter()
        .map(|r| r.record.attribute("error_reason").unwrap().to_string())
        .collect();
    assert_eq!(reasons, ["unresolvedTable", "notFound", "invalid"]);
    assert_eq!(
        refused[1].record.attribute("error_table"),
        Some("other.test_v1")
    );
    assert_eq!(
        bq.rows("test", "test_v1").unwrap(),
        vec![json!({"n": 2}).as_object().unwrap().clone()]
    );
}

#[test]
fn create_tables_derives_the_schema_from_the_registry() {
    let bq = MemoryBigQuery::new();
    let registry =
        SchemaRegistry::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas/json")).unwrap();
    let s = sink(&bq)
        .with_create_tables(true)
        .with_registry(Arc::new(registry));
    let good = Message::new(r#"{"field":"x","count":3,"tags":["a"],"other":{"k":1}}"#)
        .with_attribute("document_namespace", "test")
        .with_attribute("document_type", "test")
        .with_attribute("document_version", "1");
    let unknown = Message::new("{}")
        .with_attribute("document_namespace", "nope")
        .with_attribute("document_type", "nope")
        .with_attribute("document_version", "1");
    let refused = write_all(&s, vec![good, unknown]).unwrap();
    assert_eq!(refused.len(), 1);
    assert_eq!(
        refused[0].record.attribute("error_reason"),
        Some("noSchema")
    );
    let rows = bq.rows("test", "test_v1").unwrap();
    assert_eq!(rows[0]["count"], 3);
    assert_eq!(rows[0]["additional_properties"], "{\"other\":{\"k\":1}}");
    assert!(bq
        .schema("test", "test_v1")
        .unwrap()
        .field("metadata")
        .is_some());
    assert!(bq.rows("nope", "nope_v1").is_none());
}

#[test]
fn transient_failures_are_retried_then_fail_the_write() {
    let bq = MemoryBigQuery::new();
    bq.add_table("test", "test_v1", n_table());
    bq.fail_inserts([
        ApiError::Transient("503".into()),
        ApiError::Transient("503".into()),
    ]);
    let refused = write_all(&sink(&bq), vec![doc("test", json!(1))]).unwrap();
    assert!(refused.is_empty());
    assert_eq!(bq.rows("test", "test_v1").unwrap().len(), 1);
    assert_eq!(bq.insert_calls(), 3);

    bq.fail_inserts((0..3).map(|_| ApiError::Transient("503".into())));
    let e = write_all(&sink(&bq), vec![doc("test", json!(2))]).unwrap_err();
    assert!(e.to_string().contains("after 3 attempts"), "{e}");
    assert_eq!(bq.rows("test", "test_v1").unwrap().len(), 1);

    bq.fail_inserts([ApiError::Fatal("permission denied".into())]);
    let e = write_all(&sink(&bq), vec![doc("test", json!(3))]).unwrap_err();
    assert!(e.to_string().contains("permission denied"), "{e}");
}

#[test]
fn requests_are_batched_by_rows_and_bytes_and_split_when_too_large() {
    let bq = MemoryBigQuery::new();
    bq.add_table("test", "test_v1", n_table());
    let input: Vec<Message> = (0..10).map(|i| doc("test", json!(i))).collect();
    let s = sink(&bq).with_batch(InsertBatch {
        max_rows: 3,
        max_bytes: 1 << 20,
    });
    assert!(write_all(&s, input.clone()).unwrap().is_empty());
    assert_eq!(bq.insert_calls(), 4);

    let bq = MemoryBigQuery::new();
    bq.add_table("test", "test_v1", n_table());
    // each row is `{"n":i}`: 7 bytes; 20 bytes hold two
    let s = sink(&bq).with_batch(InsertBatch {
        max_rows: 100,
        max_bytes: 20,
    });
    assert!(write_all(&s, input.clone()).unwrap().is_empty());
    assert_eq!(bq.insert_calls(), 5);

    // a request of more than 3 rows is refused whole: halves are tried until they pass
    let bq = MemoryBigQuery::new().with_max_request_rows(3);
    bq.add_table("test", "test_v1", n_table());
    assert!(write_all(&sink(&bq), input.clone()).unwrap().is_empty());
    let mut got: Vec<i64> = bq
        .rows("test", "test_v1")
        .unwrap()
        .iter()
        .map(|r| r["n"].as_i64().unwrap())
        .collect();
    got.sort();
    assert_eq!(got, (0..10).collect::<Vec<_>>());

    // a single row refused whole is a dead letter
    let bq = MemoryBigQuery::new().with_max_request_rows(0);
    bq.add_table("test", "test_v1", n_table());
    let refused = write_all(&sink(&bq), input[..2].to_vec()).unwrap();
    assert_eq!(refused.len(), 2);
    assert_eq!(
        refused[0].record.attribute("error_reason"),
        Some("payloadTooLarge")
    );
}

#[test]
fn insert_ids_are_sent_and_the_same_in_every_attempt_split_and_run() {
    let input: Vec<Message> = (0..6)
        .map(|i| {
            doc("test", json!(i % 3)).with_position(sluice::SourcePosition::Line {
                file: Some("in.ndjson".into()),
                line: i + 1,
            })
        })
        .collect();
    // the first request inserts, then its answer is lost: the retry sends the same ids,
    // and the table drops them as repeats
    let bq = MemoryBigQuery::new();
    bq.add_table("test", "test_v1", n_table());
    bq.lose_answers(1);
    assert!(write_all(&sink(&bq), input.clone()).unwrap().is_empty());
    let requests = bq.requests("test", "test_v1");
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0], requests[1]);
    let ids = requests[0].clone();
    assert_eq!(ids.len(), 6);
    assert!(ids.iter().all(|id| id.len() == 32 && !id.is_empty()));
    // equal rows read from different lines keep different ids
    let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), 6);
    assert_eq!(bq.rows("test", "test_v1").unwrap().len(), 6);
    assert_eq!(bq.repeated_rows("test", "test_v1"), 6);

    // a re-run (a new sink, as after a crash) sends the same ids; split requests too
    let bq2 = MemoryBigQuery::new().with_max_request_rows(2);
    bq2.add_table("test", "test_v1", n_table());
    assert!(write_all(&sink(&bq2), input.clone()).unwrap().is_empty());
    let requests = bq2.requests("test", "test_v1");
    assert!(requests.len() > 1, "{requests:?}");
    let sent: Vec<String> = requests
        .iter()
        .filter(|r| r.len() <= 2)
        .flatten()
        .cloned()
        .collect();
    let mut sorted_sent = sent.clone();
    sorted_sent.sort();
    let mut sorted_ids = ids.clone();
    sorted_ids.sort();
    assert_eq!(sorted_sent, sorted_ids);
    for r in &requests {
        assert!(r.iter().all(|id| ids.contains(id)), "{r:?} not in {ids:?}");
    }

    // a refused row's request is resent without it: the others keep their ids
    let bq3 = MemoryBigQuery::new();
    bq3.add_table("test", "test_v1", n_table());
    bq3.refuse_rows(|row| (row["n"] == 2).then(|| "no".to_string()));
    let refused = write_all(&sink(&bq3), input.clone()).unwrap();
    assert_eq!(refused.len(), 2);
    let requests = bq3.requests("test", "test_v1");
    assert_eq!(requests[0], ids);
    let kept: Vec<String> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 2)
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(requests[1], kept);
}

#[test]
fn the_insert_id_follows_the_table_the_position_and_the_row_only() {
    let table = TableRef::parse("ds.t").unwrap();
    let row = |n: i64| json!({"n": n}).as_object().unwrap().clone();
    let pubsub = |attempt| {
        Message::new("x").with_position(sluice::SourcePosition::PubSub(Box::new(
            sluice::PubSubPosition {
                subscription: "s".into(),
                message_id: "m1".into(),
                publish_time: Some("2026-01-01T00:00:00Z".into()),
                delivery_attempt: Some(attempt),
            },
        )))
    };
    // a redelivery is the same message
    assert_eq!(
        insert_id(&table, &pubsub(1), &row(1)),
        insert_id(&table, &pubsub(5), &row(1))
    );
    assert_ne!(
        insert_id(&table, &pubsub(1), &row(1)),
        insert_id(&table, &pubsub(1), &row(2))
    );
    assert_ne!(
        insert_id(&table, &pubsub(1), &row(1)),
        insert_id(&TableRef::parse("ds.u").unwrap(), &pubsub(1), &row(1))
    );
    // attributes that are not in the row do not matter; without a position the row decides
    let plain = Message::new("x");
    assert_eq!(
        insert_id(&table, &plain, &row(1)),
        insert_id(&table, &plain.clone().with_attribute("a", "b"), &row(1))
    );
    assert_ne!(
        insert_id(&table, &plain, &row(1)),
        insert_id(&table, &pubsub(1), &row(1))
    );
}

#[test]
fn raw_format_writes_dead_letters_to_an_error_table() {
    let bq = MemoryBigQuery::new();
    let s = BigQuerySink::new(
        Arc::new(bq.clone()),
        TableTemplate::parse("errors.decoder").unwrap(),
    )
    .with_format(RowFormat::Raw)
    .with_create_tables(true);
    let dl = sluice::DeadLetter::new(
        Message::new(vec![0xffu8, 0]).with_attribute("custom", "c"),
        "ParsePayload",
        sluice::Failure::new("bad"),
    )
    .to_message();
    assert!(write_all(&s, vec![dl]).unwrap().is_empty());
    let rows = bq.rows("errors", "decoder").unwrap();
    assert_eq!(rows[0]["error_type"], "ParsePayload");
    assert_eq!(rows[0]["error_message"], "bad");
    assert_eq!(rows[0]["payload"], "/wA=");
    assert_eq!(rows[0]["additional_properties"], "{\"custom\":\"c\"}");
}

#[test]
fn decoded_format_nests_the_metadata() {
    let bq = MemoryBigQuery::new();
    let s = BigQuerySink::new(
        Arc::new(bq.clone()),
        TableTemplate::parse("ds.decoded").unwrap(),
    )
    .with_format(RowFormat::Decoded)
    .with_create_tables(true);
    let m = Message::new("{\"a\":1}")
        .with_attribute("document_namespace", "telemetry")
        .with_attribute("geo_country", "FR")
        .with_attribute("sample_id", "12")
        .with_attribute("client_compression", "gzip");
    assert!(write_all(&s, vec![m]).unwrap().is_empty());
    let row = &bq.rows("ds", "decoded").unwrap()[0];
    assert_eq!(row["metadata"]["geo"]["country"], "FR");
    assert_eq!(row["metadata"]["document_namespace"], "telemetry");
    assert_eq!(row["sample_id"], 12);
    assert_eq!(row["payload"], "eyJhIjoxfQ==");
    assert_eq!(
        row["additional_properties"],
        "{\"client_compression\":\"gzip\"}"
    );
}

#[test]
fn check_needs_a_fixed_table_unless_it_creates_it() {
    let rt = runtime();
    let ctx = sluice::CheckContext::new(rt.handle().clone());
    let bq = MemoryBigQuery::new();
    let s = BigQuerySink::new(
        Arc::new(bq.clone()),
        TableTemplate::parse("errors.t").unwrap(),
    );
    let e = s.check(&ctx).unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    assert!(s.clone().with_create_tables(true).check(&ctx).is_ok());
    assert!(sink(&bq).check(&ctx).is_ok());
}

#[test]
fn retry_delays_double_up_to_the_cap() {
    let p = RetryPolicy {
        max_attempts: 10,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(500),
    };
    let delays: Vec<u128> = (1..6).map(|a| p.delay(a).as_millis()).collect();
    assert_eq!(delays, [100, 200, 400, 500, 500]);
}

mod property {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whatever the mix of records, batch bounds, request limits and transient faults:
        /// every record is inserted or refused, exactly once, and refused only when it is bad.
        #[test]
        fn every_record_is_inserted_or_refused_exactly_once(
            kinds in proptest::collection::vec(0u8..4, 0..40),
            max_rows in 1usize..8,
            max_request_rows in 1usize..6,
            faults in 0usize..3,
        ) {
            let bq = MemoryBigQuery::new().with_max_request_rows(max_request_rows);
            bq.add_table("test", "test_v1", TableSchema {
                fields: vec![Field::new("id", FieldType::Int64), Field::new("n", FieldType::Int64)],
            });
            bq.fail_inserts((0..faults).map(|_| ApiError::Transient("503".into())));
            let input: Vec<Message> = kinds
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    let m = |n: serde_json::Value, ns: &str| {
                        Message::new(json!({"id": i, "n": n}).to_string())
                            .with_attribute("document_namespace", ns)
                            .with_attribute("document_type", "test")
                            .with_attribute("document_version", "1")
                    };
                    match k {
                        0 => m(json!(i), "test"),
                        1 => m(json!("x"), "test"),
                        2 => m(json!(i), "elsewhere"),
                        _ => Message::new(json!({"id": i}).to_string()),
                    }
                })
                .collect();
            let s = sink(&bq).with_batch(InsertBatch { max_rows, max_bytes: 1 << 20 });
            let refused = write_all(&s, input.clone()).unwrap();
            let mut seen = vec![0usize; input.len()];
            for r in bq.rows("test", "test_v1").unwrap() {
                seen[r["id"].as_u64().unwrap() as usize] += 1;
            }
            for r in &refused {
                let v: serde_json::Value = serde_json::from_slice(&r.record.payload).unwrap();
                let id = v["id"].as_u64().unwrap() as usize;
                prop_assert!(kinds[id] != 0, "a valid record was refused: {:?}", r.failure);
                seen[id] += 1;
            }
            prop_assert!(seen.iter().all(|&n| n == 1), "{:?}", seen);
        }
    }
}
