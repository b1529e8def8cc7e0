//! Oracle: one pipeline with a fallible step and an exchange, run on 1, 2 and 4 workers, with
//! serialized exchanges, and on a 2-process timely cluster over loopback, gives the same multiset
//! of outputs and dead letters as a plain-iterator model of the same logic.

use sluice::{DeadLetter, Failure, Pipeline, PipelineBuilder};
use sluice_testing::cluster::{run_two_process_cluster, ClusterChild};
use sluice_testing::{assert_that, MemorySink, MemorySource, TestPipeline};

fn input() -> Vec<u64> {
    (0..5_000u64)
        .map(|i| i.wrapping_mul(2_654_435_761) % 10_007)
        .collect()
}

/// The logic, as plain iterators.
fn model(input: &[u64]) -> (Vec<u64>, Vec<String>) {
    let mut out = Vec::new();
    let mut dead = Vec::new();
    for &x in input {
        if x % 7 == 0 {
            dead.push(x.to_string());
            continue;
        }
        let y = x * 3;
        out.push(y);
        if y % 2 == 0 {
            out.push(y + 1);
        }
    }
    out.sort();
    dead.sort();
    (out, dead)
}

/// The same logic as a pipeline: a fallible step, a flat_map, an exchange and a partition.
fn build(
    p: &mut PipelineBuilder<'_>,
    source: MemorySource<u64>,
    out: MemorySink<u64>,
    dead: MemorySink<DeadLetter>,
) {
    let mut dead_letters = p.dead_letters();
    let checked = p
        .read("read", source)
        .try_map("CheckSeven", |x: &u64| {
            if x.is_multiple_of(7) {
                Err(Failure::new("multiple of seven"))
            } else {
                Ok(x * 3)
            }
        })
        .failures_to(&mut dead_letters);
    let spread = checked
        .flat_map(|y| if y % 2 == 0 { vec![y, y + 1] } else { vec![y] })
        .exchange_by(|y| *y);
    let mut parts = spread.partition(2, |y| (y % 2) as usize);
    let odd = parts.pop().expect("two parts");
    let even = parts.pop().expect("two parts");
    even.concat(odd).write("write", out);
    dead_letters.write("dead_letters", dead);
}

fn run(tp: TestPipeline) -> (Vec<u64>, Vec<String>) {
    let source = MemorySource::from(input());
    let out = MemorySink::new();
    let dead = MemorySink::new();
    let (o, d) = (out.clone(), dead.clone());
    tp.run(move |p| {
        build(p, source.clone(), o.clone(), d.clone());
        Ok(())
    })
    .expect("pipeline runs");
    let dead_payloads = dead
        .sorted()
        .into_iter()
        .map(|d| String::from_utf8(d.original.payload.to_vec()).expect("utf-8"))
        .collect::<Vec<_>>();
    let mut dead_payloads = dead_payloads;
    dead_payloads.sort();
    (out.sorted(), dead_payloads)
}

#[test]
fn same_result_on_1_2_and_4_workers_as_the_model() {
    let expected = model(&input());
    assert!(!expected.1.is_empty(), "the input must exercise failures");
    for workers in [1, 2, 4] {
        let got = run(TestPipeline::new().workers(workers));
        assert_eq!(
            got.0.len(),
            expected.0.len(),
            "{workers} workers: output count"
        );
        assert_eq!(got, expected, "{workers} workers");
    }
}

#[test]
fn same_result_when_exchanges_serialize_like_a_cluster() {
    let got = run(TestPipeline::new().workers(2).serialize_exchanges());
    assert_eq!(got, model(&input()));
}

#[test]
fn dead_letters_carry_provenance_and_the_untouched_original() {
    let out = MemorySink::new();
    let dead = MemorySink::new();
    let (o, d) = (out.clone(), dead.clone());
    TestPipeline::new()
        .run(move |p| {
            build(p, MemorySource::from(vec![14, 15]), o.clone(), d.clone());
            Ok(())
        })
        .unwrap();
    assert_that(&out).contains_in_any_order([45]);
    assert_that(&dead).satisfies(|dls| {
        assert_eq!(dls.len(), 1);
        let dl = &dls[0];
        assert_eq!(dl.original.payload, "14");
        assert_eq!(dl.error_type, "CheckSeven");
        assert_eq!(dl.error_message, "multiple of seven");
        assert_eq!(dl.job_name.as_deref(), Some("test"));
        assert_eq!(dl.input_type.as_deref(), Some("memory"));
        assert_eq!(dl.stack_trace, None, "TestPipeline turns stack traces off");
    });
}

const CHILD: &str = "SLUICE_ORACLE_CLUSTER_CHILD";

/// Runs as one process of the cluster when the parent test starts this binary with `CHILD` set.
#[test]
fn cluster_child() {
    let Some(ClusterChild {
        process,
        addresses,
        out_file,
    }) = ClusterChild::from_env(CHILD)
    else {
        return;
    };
    let source = MemorySource::from(input());
    let out = MemorySink::new();
    let dead = MemorySink::new();
    let (o, d) = (out.clone(), dead.clone());
    Pipeline::new("oracle")
        .cluster(process, addresses)
        .run(move |p| {
            build(p, source.clone(), o.clone(), d.clone());
            Ok(())
        })
        .expect("cluster pipeline runs");
    let mut text = String::new();
    for y in out.records() {
        text.push_str(&format!("out {y}\n"));
    }
    for dl in dead.records() {
        text.push_str(&format!(
            "dead {}\n",
            String::from_utf8_lossy(&dl.original.payload)
        ));
    }
    std::fs::write(out_file, text).unwrap();
}

#[test]
fn same_result_on_a_two_process_cluster_over_loopback() {
    let dir = std::env::temp_dir().join(format!("sluice-oracle-{}", std::process::id()));
    let outputs = run_two_process_cluster("cluster_child", CHILD, &dir);
    let mut got_out = Vec::new();
    let mut got_dead = Vec::new();
    for out in outputs {
        for line in std::fs::read_to_string(&out).unwrap().lines() {
            match line.split_once(' ') {
                Some(("out", y)) => got_out.push(y.parse::<u64>().unwrap()),
                Some(("dead", x)) => got_dead.push(x.to_string()),
                _ => panic!("unexpected line {line}"),
            }
        }
    }
    got_out.sort();
    got_dead.sort();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!((got_out, got_dead), model(&input()));
}

#[test]
fn messages_and_dead_letters_cross_a_serializing_exchange_intact() {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;
    use sluice::Message;

    let mut runner = TestRunner::deterministic();
    let messages: Vec<Message> = (0..200)
        .map(|_| {
            sluice_testing::strategies::arb_message()
                .new_tree(&mut runner)
                .unwrap()
                .current()
        })
        .collect();
    let out = MemorySink::new();
    let dead = MemorySink::new();
    let (o, d) = (out.clone(), dead.clone());
    let source = MemorySource::from(messages.clone());
    TestPipeline::new()
        .workers(2)
        .serialize_exchanges()
        .run(move |p| {
            let mut dead_letters = p.dead_letters();
            let checked = p
                .read("read", source.clone())
                .try_map("OddLength", |m: &Message| {
                    if m.payload.len() % 2 == 1 {
                        Err(Failure::new("odd"))
                    } else {
                        Ok(m.clone())
                    }
                })
                .failures_to(&mut dead_letters);
            checked
                .exchange_by(|m| m.payload.len() as u64)
                .write("write", o.clone());
            dead_letters
                .into_pcollection()
                .exchange_by(|dl| dl.original.payload.len() as u64)
                .write("dead", d.clone());
            Ok(())
        })
        .unwrap();
    let mut seen = out.records();
    seen.extend(dead.records().into_iter().map(|dl| {
        assert_eq!(dl.error_type, "OddLength");
        dl.original
    }));
    seen.sort();
    let mut expected = messages;
    expected.sort();
    assert_eq!(seen, expected);
}

#[test]
fn rebalance_spreads_one_workers_input_over_all_workers_and_loses_nothing() {
    use std::sync::{Arc, Mutex};
    // one epoch batch: only worker 0 reads it
    let source = MemorySource::from_epochs(vec![(0..1000u64).collect()]);
    let out = MemorySink::new();
    let seen_by: Arc<Mutex<Vec<usize>>> = Arc::default();
    let (o, seen) = (out.clone(), seen_by.clone());
    TestPipeline::new()
        .workers(2)
        .serialize_exchanges()
        .run(move |p| {
            let worker = p.worker_index();
            let seen = seen.clone();
            p.read("read", source.clone())
                .rebalance()
                .inspect(move |_| seen.lock().unwrap().push(worker))
                .write("write", o.clone());
            Ok(())
        })
        .unwrap();
    assert_that(&out).contains_in_any_order(0..1000);
    let seen = seen_by.lock().unwrap();
    let on_worker_1 = seen.iter().filter(|w| **w == 1).count();
    assert_eq!(
        on_worker_1, 500,
        "round robin: half of the records on each worker"
    );
}
