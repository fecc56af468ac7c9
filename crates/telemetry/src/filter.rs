//! The log lines' filter, replaceable while the process runs (`set_log_level`, SIGHUP). With
//! traces off and no span directive, it costs nothing per span or event.
//!
//! `tracing_subscriber::reload` would do the swap, but it takes a lock at every span's new,
//! enter, exit and close, and an `EnvFilter` takes its own there too: at several polls per
//! request on two cores, that measured about 4 % of the traces-off benchmark. Here only the
//! callsite questions reach the filter (answered once per callsite and cached, the caches
//! rebuilt on a swap). The span hooks are forwarded only when the directive filters on spans
//! (`target[span{field=value}]=level`), the one case where the `EnvFilter` needs them. With
//! traces on, the span exporter answers many callsites differently, so those ask `enabled`
//! per span or event (a read lock, as `reload` took too).

use std::sync::{
    Arc, PoisonError, RwLock, RwLockReadGuard,
    atomic::{AtomicBool, Ordering},
};

use tracing::{Metadata, Subscriber, span, subscriber::Interest};
use tracing_subscriber::{
    EnvFilter,
    filter::LevelFilter,
    layer::{Context, Filter, Layer},
};

/// The filter in force; clones share it.
#[derive(Clone)]
pub(crate) struct LiveFilter {
    filter: Arc<RwLock<EnvFilter>>,
    /// Whether the directive filters on spans.
    spans: Arc<AtomicBool>,
}

impl LiveFilter {
    pub(crate) fn new(filter: EnvFilter, directive: &str) -> Self {
        LiveFilter {
            filter: Arc::new(RwLock::new(filter)),
            spans: Arc::new(AtomicBool::new(filters_on_spans(directive))),
        }
    }

    /// Puts `filter` (from `directive`) in force and makes every callsite ask again.
    pub(crate) fn replace(&self, filter: EnvFilter, directive: &str) {
        *self.filter.write().unwrap_or_else(PoisonError::into_inner) = filter;
        self.spans
            .store(filters_on_spans(directive), Ordering::Relaxed);
        tracing::callsite::rebuild_interest_cache();
    }

    fn current(&self) -> RwLockReadGuard<'_, EnvFilter> {
        self.filter.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn wants_spans(&self) -> bool {
        self.spans.load(Ordering::Relaxed)
    }
}

/// Span directives are the bracketed part of a directive: `target[span{field}]=level`.
fn filters_on_spans(directive: &str) -> bool {
    directive.contains('[')
}

/// As the subscriber's global filter (traces off).
impl<S: Subscriber> Layer<S> for LiveFilter {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        Layer::<S>::register_callsite(&*self.current(), metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>, cx: Context<'_, S>) -> bool {
        Layer::<S>::enabled(&*self.current(), metadata, cx)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Layer::<S>::max_level_hint(&*self.current())
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, cx: Context<'_, S>) {
        if self.wants_spans() {
            Layer::<S>::on_new_span(&*self.current(), attrs, id, cx);
        }
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, cx: Context<'_, S>) {
        if self.wants_spans() {
            Layer::<S>::on_record(&*self.current(), id, values, cx);
        }
    }

    fn on_enter(&self, id: &span::Id, cx: Context<'_, S>) {
        if self.wants_spans() {
            Layer::<S>::on_enter(&*self.current(), id, cx);
        }
    }

    fn on_exit(&self, id: &span::Id, cx: Context<'_, S>) {
        if self.wants_spans() {
            Layer::<S>::on_exit(&*self.current(), id, cx);
        }
    }

    fn on_close(&self, id: span::Id, cx: Context<'_, S>) {
        if self.wants_spans() {
            Layer::<S>::on_close(&*self.current(), id, cx);
        }
    }
}

/// As the log layer's own filter (traces on: the span exporter sees what the logs do not).
impl<S: Subscriber> Filter<S> for LiveFilter {
    fn enabled(&self, metadata: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        Filter::<S>::enabled(&*self.current(), metadata, cx)
    }

    fn callsite_enabled(&self, metadata: &'static Metadata<'static>) -> Interest {
        Filter::<S>::callsite_enabled(&*self.current(), metadata)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Filter::<S>::max_level_hint(&*self.current())
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, cx: Context<'_, S>) {
        if self.wants_spans() {
            Filter::<S>::on_new_span(&*self.current(), attrs, id, cx);
        }
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, cx: Context<'_, S>) {
        if self.wants_spans() {
            Filter::<S>::on_record(&*self.current(), id, values, cx);
        }
    }

    fn on_enter(&self, id: &span::Id, cx: Context<'_, S>) {
        if self.wants_spans() {
            Filter::<S>::on_enter(&*self.current(), id, cx);
        }
    }

    fn on_exit(&self, id: &span::Id, cx: Context<'_, S>) {
        if self.wants_spans() {
            Filter::<S>::on_exit(&*self.current(), id, cx);
        }
    }

    fn on_close(&self, id: span::Id, cx: Context<'_, S>) {
        if self.wants_spans() {
            Filter::<S>::on_close(&*self.current(), id, cx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::filters_on_spans;

    #[test]
    fn only_bracketed_directives_filter_on_spans() {
        assert!(filters_on_spans("warn,citadel[http{request_id=abc}]=debug"));
        assert!(!filters_on_spans("warn,citadel::serve=info"));
        assert!(!filters_on_spans("info"));
    }
}
