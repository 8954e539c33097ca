//! Header names of the wire protocol.

/// JetStream's publish-dedupe header: `<delivery or notification id>:<stage>`.
pub const MSG_ID: &str = "Nats-Msg-Id";
/// On a dead-lettered message: the stage that gave up.
pub const DLQ_STAGE: &str = "Herald-Dlq-Stage";
/// On a dead-lettered message: the subject it was consumed from (where a redrive sends it).
pub const DLQ_SUBJECT: &str = "Herald-Dlq-Subject";
/// On a dead-lettered message: its sequence in the stream it was consumed from.
pub const DLQ_SEQUENCE: &str = "Herald-Dlq-Sequence";
/// On a dead-lettered message: how many times it was delivered.
pub const DLQ_DELIVERED: &str = "Herald-Dlq-Delivered";
/// On a dead-lettered message: the machine-readable reason.
pub const DLQ_REASON: &str = "Herald-Dlq-Reason";
/// On a dead-lettered message: the human-readable explanation.
pub const DLQ_DETAIL: &str = "Herald-Dlq-Detail";
/// The broker's message scheduling (NATS 2.12+): `@at <RFC 3339>` on a message stored on a
/// schedule subject…
pub const SCHEDULE: &str = "Nats-Schedule";
/// …and the subject the server publishes it to when it is due.
pub const SCHEDULE_TARGET: &str = "Nats-Schedule-Target";
/// On a message the server published from a schedule: the schedule's subject.
pub const SCHEDULER: &str = "Nats-Scheduler";
