//! Connection counts by listener: open now, and closed by reason (`citadel_connections_*`).

use std::sync::OnceLock;

use opentelemetry::{
    KeyValue, global,
    metrics::{Counter, UpDownCounter},
};

struct Instruments {
    open: UpDownCounter<i64>,
    closed: Counter<u64>,
}

fn instruments() -> &'static Instruments {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| {
        let meter = global::meter("citadel.conn");
        Instruments {
            open: meter
                .i64_up_down_counter("citadel.connections.open")
                .with_description("Client connections open, by listener")
                .build(),
            closed: meter
                .u64_counter("citadel.connections.closed")
                .with_description(
                    "Client connections closed by the server's limits (refused, evicted, \
                     header_timeout, idle, write_timeout, shutdown), by listener and reason",
                )
                .build(),
        }
    })
}

pub(crate) fn opened(listener: &'static str) {
    instruments()
        .open
        .add(1, &[KeyValue::new("listener", listener)]);
}

pub(crate) fn gone(listener: &'static str) {
    instruments()
        .open
        .add(-1, &[KeyValue::new("listener", listener)]);
}

pub(crate) fn closed(listener: &'static str, reason: &'static str) {
    instruments().closed.add(
        1,
        &[
            KeyValue::new("listener", listener),
            KeyValue::new("reason", reason),
        ],
    );
}
