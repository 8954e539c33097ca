//! `herald stats` over a generated set of tracking events: every figure it prints is worked out
//! by hand below. The events go straight onto the tracking stream (a real nats-server), some of
//! them twice and some outside the time range asked for, so the command must count each
//! delivery once and only the range's events. `herald events export` writes the same range as
//! JSON lines, CSV and Parquet, each read back with its own parser.

use std::collections::BTreeMap;

use herald_schemas::{Channel, Status, Timestamp, TrackEvent, ids};
use herald_tests::TestEnv;
use serde_json::{Value, json};
use uuid::Uuid;

/// The range asked for starts two hours ago; every generated time is an offset from it (the
/// scan starts at the range's start in stream time, which is when the test stores them: later).
fn at(ms: i64) -> Timestamp {
    static BASE_MS: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let base = *BASE_MS.get_or_init(|| Timestamp::now().as_millisecond() - 2 * 3_600_000);
    Timestamp::from_millisecond(base + ms).expect("a time within jiff's range")
}

struct Gen {
    events: Vec<TrackEvent>,
}

impl Gen {
    fn push(&mut self, n: u128, d: Option<u128>, status: Status, ms: i64, template: &str, provider: Option<&str>) {
        let notification = Uuid::from_u128(n);
        let delivery = d.map(Uuid::from_u128);
        let channel = delivery.map(|_| if template == "otp" { Channel::Sms } else { Channel::Email });
        self.events.push(TrackEvent {
            event_id: ids::event_id(delivery.unwrap_or(notification), "test", status, self.events.len() as u32),
            notification_id: Some(notification),
            delivery_id: delivery,
            user_id: Some(format!("u-{n}")),
            channel,
            template: Some(template.into()),
            category: Some(if template == "otp" { "security" } else { "marketing" }.into()),
            provider: provider.map(str::to_owned),
            ..TrackEvent::new("acme", status, "test", at(ms))
        });
    }
}

/// `welcome` (e-mail): notifications 0..20, one delivery each, accepted at i s, sent
/// (i + 1) × 10 ms later; 0..15 delivered 1000 + 100 i ms after accepted, 15..18 bounced;
/// 0..6 opened (0 and 1 twice), 0..3 clicked. Two more deliveries (100, 101) failed unsent,
/// one of them after a retry. `otp` (SMS): notifications 200..210 sent at 50 ms, delivered at
/// 500 ms but 209, which was undelivered. Outside the range: notification 300, an hour before
/// and an hour after.
fn generate() -> Vec<TrackEvent> {
    let mut g = Gen { events: Vec::new() };
    for i in 0..20u128 {
        let accepted = i as i64 * 1000;
        let d = 1000 + i;
        g.push(i, None, Status::Accepted, accepted, "welcome", None);
        g.push(i, Some(d), Status::Sent, accepted + (i as i64 + 1) * 10, "welcome", Some("smtp"));
        if i < 15 {
            g.push(i, Some(d), Status::Delivered, accepted + 1000 + 100 * i as i64, "welcome", Some("sendgrid"));
        } else if i < 18 {
            g.push(i, Some(d), Status::Bounced, accepted + 900, "welcome", Some("sendgrid"));
        }
        if i < 6 {
            g.push(i, Some(d), Status::Opened, accepted + 5000, "welcome", Some("sendgrid"));
        }
        if i < 2 {
            g.push(i, Some(d), Status::Opened, accepted + 6000, "welcome", Some("sendgrid"));
        }
        if i < 3 {
            g.push(i, Some(d), Status::Clicked, accepted + 7000, "welcome", Some("sendgrid"));
        }
    }
    g.push(100, None, Status::Accepted, 30_000, "welcome", None);
    g.push(100, Some(1100), Status::Failed, 30_010, "welcome", Some("smtp"));
    g.push(101, None, Status::Accepted, 31_000, "welcome", None);
    g.push(101, Some(1101), Status::Retrying, 31_010, "welcome", Some("smtp"));
    g.push(101, Some(1101), Status::DeadLettered, 33_000, "welcome", None);
    for i in 200..210u128 {
        let accepted = 40_000 + i as i64 * 1000;
        g.push(i, None, Status::Accepted, accepted, "otp", None);
        g.push(i, Some(1000 + i), Status::Sent, accepted + 50, "otp", Some("twilio"));
        let status = if i == 209 { Status::Undelivered } else { Status::Delivered };
        g.push(i, Some(1000 + i), status, accepted + 500, "otp", Some("twilio"));
    }
    g.push(300, None, Status::Accepted, -3_600_000, "welcome", None);
    g.push(300, Some(1300), Status::Sent, -3_599_000, "welcome", Some("smtp"));
    g.push(300, Some(1300), Status::Failed, 3_600_000, "otp", Some("twilio"));
    g.events
}

fn latency(samples: u64, p50: f64, p99: f64) -> Value {
    json!({ "samples": samples, "p50_ms": p50, "p99_ms": p99 })
}

#[tokio::test]
async fn stats_over_generated_events_match_the_hand_count() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    env.provision().await?;
    let events = generate();
    let js = async_nats::jetstream::new(async_nats::connect(env.server.url()).await?);
    // Every event once, in an order unlike time's, then a few again (no Nats-Msg-Id, so the
    // stream keeps both copies): a `sent`, a `delivered` and a `failed`.
    let mut order: Vec<&TrackEvent> = events.iter().rev().collect();
    order.extend(events.iter().filter(|e| e.delivery_id == Some(Uuid::from_u128(1000)) && e.status != Status::Opened));
    order.extend(events.iter().filter(|e| e.delivery_id == Some(Uuid::from_u128(1100))));
    for event in &order {
        js.publish(format!("herald.events.acme.{}", event.status), serde_json::to_vec(event)?.into()).await?.await?;
    }
    // Another tenant's events are not this report's.
    js.publish("herald.events.other.sent", serde_json::to_vec(&events[1])?.into()).await?.await?;
    let in_range = events.iter().filter(|e| e.at >= at(0) && e.at < at(3_600_000)).count() as u64;
    let repeated = order.len() as u64 - events.len() as u64;

    let since = at(0).to_string();
    let until = at(3_600_000).to_string();
    let out = env.run(&["stats", "--tenant", "acme", "--since", &since, "--until", &until, "--by", "template", "--json"]).await?;
    let report: Value = serde_json::from_str(&out)?;
    assert_eq!(report["events"], json!(in_range + repeated), "{out}");
    let rows: BTreeMap<String, &Value> =
        report["rows"].as_array().into_iter().flatten().map(|r| (r["group"]["template"].as_str().unwrap_or("?").to_owned(), r)).collect();
    assert_eq!(rows.keys().collect::<Vec<_>>(), ["otp", "welcome"], "{out}");

    let welcome = rows["welcome"];
    // 20 sent, 2 failed unsent; 15 delivered, 3 bounced; 6 opened, 3 clicked.
    let counts = |r: &Value| {
        ["deliveries", "sent", "delivered", "undelivered", "failed", "opened", "clicked"].map(|k| r[k].as_u64().unwrap_or(u64::MAX))
    };
    assert_eq!(counts(welcome), [22, 20, 15, 3, 2, 6, 3], "{welcome}");
    // Rates to the last bit but one: JSON's decimal text need not parse back to the same f64.
    let rate = |r: &Value, key: &str, expected: f64| {
        let got = r[key].as_f64().unwrap_or(f64::NAN);
        assert!((got - expected).abs() < 1e-12, "{key}: {got}, by hand {expected}");
    };
    rate(welcome, "delivery_rate", 15.0 / 20.0);
    rate(welcome, "failure_rate", 2.0 / 22.0);
    rate(welcome, "open_rate", 6.0 / 20.0);
    rate(welcome, "click_rate", 3.0 / 20.0);
    // Accepted → sent: 10, 20 … 200 ms. Nearest rank of 20: p50 is the 10th (100), p99 the 20th.
    assert_eq!(welcome["accepted_to_sent"], latency(20, 100.0, 200.0));
    // Accepted → delivered: 1000, 1100 … 2400 ms. Of 15: p50 is the 8th (1700), p99 the 15th.
    assert_eq!(welcome["accepted_to_delivered"], latency(15, 1700.0, 2400.0));

    let otp = rows["otp"];
    assert_eq!(counts(otp), [10, 10, 9, 1, 0, 0, 0], "{otp}");
    rate(otp, "delivery_rate", 9.0 / 10.0);
    rate(otp, "failure_rate", 0.0);
    rate(otp, "open_rate", 0.0);
    assert_eq!(otp["accepted_to_sent"], latency(10, 50.0, 50.0));
    assert_eq!(otp["accepted_to_delivered"], latency(9, 500.0, 500.0));

    let total = &report["total"];
    assert_eq!(counts(total), [32, 30, 24, 4, 2, 6, 3], "{total}");
    // 30 sent latencies: 10, 20, 30, 40, then eleven 50s (welcome's and otp's ten), 60 … 200.
    // The 15th is 50; the 30th (p99 of 30) is 200.
    assert_eq!(total["accepted_to_sent"], latency(30, 50.0, 200.0));

    // By provider and channel, as a table: who sent each delivery.
    let table = env.run(&["stats", "--tenant", "acme", "--since", &since, "--until", &until, "--by", "provider,channel"]).await?;
    let lines: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines[0][..3], ["PROVIDER", "CHANNEL", "DELIVERIES"], "{table}");
    let row = |provider: &str| lines.iter().find(|l| l[0] == provider).unwrap_or_else(|| panic!("no {provider} row in\n{table}"));
    // smtp sent (or failed) every welcome e-mail; the dead-lettered one's last answer was smtp's.
    assert_eq!(row("smtp")[1..5], ["email", "22", "20", "15"], "{table}");
    assert_eq!(row("twilio")[1..5], ["sms", "10", "10", "9"], "{table}");
    assert_eq!(row("(all)")[1..4], ["32", "30", "24"], "{table}");
    assert!(table.contains(&format!("{} events of tenant acme", in_range + repeated)), "{table}");

    // The same range exported: as JSON lines (stdout), CSV and Parquet, read back independently.
    let counts = |statuses: &mut dyn Iterator<Item = String>| {
        let mut c = std::collections::BTreeMap::<String, usize>::new();
        for s in statuses {
            *c.entry(s).or_default() += 1;
        }
        c
    };
    let mut expected: Vec<&TrackEvent> = order.iter().copied().filter(|e| e.at >= at(0) && e.at < at(3_600_000)).collect();
    expected.sort_by_key(|e| e.event_id);
    let by_status = counts(&mut expected.iter().map(|e| e.status.to_string()));
    let range = ["--tenant", "acme", "--since", since.as_str(), "--until", until.as_str()];
    let jsonl = env.run(&[&["events", "export"], &range[..]].concat()).await?;
    let mut exported: Vec<TrackEvent> = jsonl.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    exported.sort_by_key(|e| e.event_id);
    assert_eq!(exported.iter().collect::<Vec<_>>(), expected, "JSON lines are the range's events, repeats included");

    let csv_file = env.dir.path().join("events.csv");
    let csv_path = csv_file.to_string_lossy().into_owned();
    env.run(&[&["events", "export", "--format", "csv", "--out", csv_path.as_str()], &range[..]].concat()).await?;
    let mut reader = csv::Reader::from_path(&csv_file)?;
    let header: Vec<String> = reader.headers()?.iter().map(str::to_owned).collect();
    assert_eq!(header.first().map(String::as_str), Some("event_id"));
    assert_eq!(header.last().map(String::as_str), Some("at"));
    let status_at = header.iter().position(|h| h == "status").unwrap_or(usize::MAX);
    let template_at = header.iter().position(|h| h == "template").unwrap_or(usize::MAX);
    let rows: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>()?;
    assert_eq!(counts(&mut rows.iter().map(|r| r.get(status_at).unwrap_or_default().to_owned())), by_status);
    assert!(rows.iter().all(|r| ["welcome", "otp"].contains(&r.get(template_at).unwrap_or_default())));

    let parquet_file = env.dir.path().join("events.parquet");
    let parquet_path = parquet_file.to_string_lossy().into_owned();
    env.run(&[&["events", "export", "--format", "parquet", "--out", parquet_path.as_str()], &range[..]].concat()).await?;
    use parquet::file::reader::FileReader as _;
    let reader = parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&parquet_file)?)?;
    assert_eq!(reader.metadata().file_metadata().num_rows() as usize, expected.len());
    let mut statuses = Vec::new();
    for row in reader.get_row_iter(None)? {
        let row = row?;
        let status =
            row.get_column_iter().find(|(name, _)| name.as_str() == "status").map(|(_, v)| v.to_string().trim_matches('"').to_owned());
        statuses.push(status.unwrap_or_default());
    }
    assert_eq!(counts(&mut statuses.into_iter()), by_status, "the Parquet file holds the same events");
    // A status filter narrows the export; Parquet without a file is refused with the fix.
    let sent = env.run(&[&["events", "export", "--status", "sent"], &range[..]].concat()).await?;
    assert_eq!(sent.lines().count(), by_status["sent"]);
    let refused = env.herald(&["events", "export", "--format", "parquet"]).output().await?;
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("--out"));

    // A bad grouping is refused with the choices.
    let refused = env.herald(&["stats", "--by", "colour"]).output().await?;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("template, channel, provider or category"));
    Ok(())
}
