//! A typed pipeline on memory IO: parse JSON orders, keep the valid ones, route every failure to
//! a dead-letter sink (`cargo run -p sluice-examples --example orders`).

use sluice::{Failure, MemorySink, MemorySource, Message, Original, Pipeline};

/// A typed record: the steps after parsing work on orders, not on bytes, and a sink of orders
/// cannot be handed a collection of messages.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Order {
    id: String,
    cents: u64,
}

/// How an order is kept in a dead letter if a sink refuses it: as the JSON it was read from.
impl Original for Order {
    fn to_original(&self) -> Message {
        Message::new(serde_json::json!({"id": self.id, "cents": self.cents}).to_string())
    }
}

fn parse(m: &Message) -> Result<Order, Failure> {
    let v: serde_json::Value = serde_json::from_slice(&m.payload)?;
    let id = v["id"]
        .as_str()
        .ok_or_else(|| Failure::new("order has no string `id`"))?;
    let cents = v["cents"]
        .as_u64()
        .ok_or_else(|| Failure::new("order has no integer `cents`"))?;
    Ok(Order {
        id: id.to_string(),
        cents,
    })
}

fn main() -> anyhow::Result<()> {
    let input = vec![
        Message::new(r#"{"id":"a-1","cents":1250}"#),
        Message::new(r#"{"id":"a-2","cents":"free"}"#),
        Message::new("not json"),
        Message::new(r#"{"id":"a-3","cents":99}"#),
    ];
    let orders = MemorySink::new();
    let dead = MemorySink::new();
    let (o, d) = (orders.clone(), dead.clone());
    let summary = Pipeline::new("orders").workers(2).run(move |p| {
        let mut dead_letters = p.dead_letters();
        p.read("read", MemorySource::from(input.clone()))
            .try_map("ParseOrder", parse)
            .failures_to(&mut dead_letters)
            .filter(|order| order.cents > 100)
            .write("write", o.clone());
        dead_letters.write("write_dead_letters", d.clone());
        Ok(())
    })?;
    println!("orders over a dollar: {:?}", orders.sorted());
    for dl in dead.sorted() {
        println!(
            "dead letter {}: {} (payload {:?})",
            dl.error_type,
            dl.error_message,
            String::from_utf8_lossy(&dl.original.payload)
        );
    }
    println!(
        "read {}, dead-lettered {}",
        summary.total_read(),
        summary.total_dead_lettered()
    );
    Ok(())
}
