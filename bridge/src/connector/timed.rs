//! Every call into a connector with a hard time limit.
//!
//! The bridge wraps each connector in [`Timed`] when it starts, so no call to a platform can
//! take longer than the `call_timeout` the connector declares, whatever the platform client
//! does inside (teloxide's own time-outs, the homeserver client's retries). A call cut off is
//! a transient failure: whoever made it retries later, in its own lane.

use std::{future::Future, sync::Arc, time::Duration};

use async_trait::async_trait;

use crate::cluster::Term;
use tokio::sync::watch;

use super::{
    Attachment, Capabilities, Connector, ConnectorError, Delivery, HomeserverEvents, Offer,
    Platform, RemoteFile, RemoteSink,
};

/// A connector whose calls are cut off after its declared `call_timeout`.
pub struct Timed {
    inner: Arc<dyn Connector>,
    limit: Duration,
}

impl Timed {
    pub fn new(inner: Arc<dyn Connector>) -> Self {
        let limit = inner.capabilities().call_timeout;
        Self { inner, limit }
    }

    async fn within<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, ConnectorError>>,
    ) -> Result<T, ConnectorError> {
        match tokio::time::timeout(self.limit, call).await {
            Ok(result) => result,
            Err(_) => Err(ConnectorError::Transient(format!(
                "{} {what} took longer than {} s",
                self.inner.platform().as_str(),
                self.limit.as_secs_f32()
            ))),
        }
    }
}

#[async_trait]
impl Connector for Timed {
    fn platform(&self) -> Platform {
        self.inner.platform()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn validate_address(&self, address: &str) -> Result<(), String> {
        self.inner.validate_address(address)
    }

    /// Not cut off here: reading an event is mostly store lookups, and its one platform call
    /// (joining a direct chat) goes through the homeserver client's own time limit.
    fn homeserver_events(&self) -> Option<&dyn HomeserverEvents> {
        self.inner.homeserver_events()
    }

    fn how_to_accept(&self) -> &'static str {
        self.inner.how_to_accept()
    }

    /// Not cut off: it takes a request per message of the conversation, and its caller (an
    /// operator's erasure) waits for all of it.
    async fn erase_conversation(&self, handles: &[String]) -> Result<(), ConnectorError> {
        self.inner.erase_conversation(handles).await
    }

    fn takes_initiators(&self) -> bool {
        self.inner.takes_initiators()
    }

    async fn ask_topic(
        &self,
        address: &str,
        thread: Option<&str>,
        text: &str,
        topics: &[(String, String)],
    ) -> Result<(), ConnectorError> {
        self.within(
            "topic question",
            self.inner.ask_topic(address, thread, text, topics),
        )
        .await
    }

    async fn offer(&self, offer: &Offer, address: &str) -> Result<Option<String>, ConnectorError> {
        self.within("offer", self.inner.offer(offer, address)).await
    }

    async fn offer_accepted(
        &self,
        address: &str,
        handle: &str,
        text: &str,
    ) -> Result<(), ConnectorError> {
        self.within(
            "offer acceptance",
            self.inner.offer_accepted(address, handle, text),
        )
        .await
    }

    async fn conversation_opened(
        &self,
        address: &str,
        handle: &str,
        visitor_alias: &str,
        topic_name: &str,
    ) -> Result<Option<String>, ConnectorError> {
        self.within(
            "opening of the conversation's place",
            self.inner
                .conversation_opened(address, handle, visitor_alias, topic_name),
        )
        .await
    }

    async fn close_offer(
        &self,
        address: &str,
        remote_message_id: &str,
        why: &str,
    ) -> Result<(), ConnectorError> {
        self.within(
            "offer withdrawal",
            self.inner.close_offer(address, remote_message_id, why),
        )
        .await
    }

    fn render(&self, delivery: &Delivery) -> Vec<String> {
        self.inner.render(delivery)
    }

    async fn deliver(
        &self,
        delivery: &Delivery,
        index: usize,
        part: &str,
        address: &str,
    ) -> Result<String, ConnectorError> {
        self.within(
            "delivery",
            self.inner.deliver(delivery, index, part, address),
        )
        .await
    }

    async fn deliver_batch(
        &self,
        deliveries: &[Delivery],
        address: &str,
    ) -> Result<String, ConnectorError> {
        self.within(
            "delivery of several messages",
            self.inner.deliver_batch(deliveries, address),
        )
        .await
    }

    async fn deliver_file(
        &self,
        delivery: &Delivery,
        caption: &str,
        file: Attachment,
        address: &str,
    ) -> Result<String, ConnectorError> {
        self.within(
            "file delivery",
            self.inner.deliver_file(delivery, caption, file, address),
        )
        .await
    }

    async fn edit_delivered(
        &self,
        delivery: &Delivery,
        message_id: &str,
        part: &str,
        address: &str,
    ) -> Result<(), ConnectorError> {
        self.within(
            "edit",
            self.inner
                .edit_delivered(delivery, message_id, part, address),
        )
        .await
    }

    async fn delete_delivered(
        &self,
        delivery: &Delivery,
        message_id: &str,
        address: &str,
    ) -> Result<(), ConnectorError> {
        self.within(
            "deletion",
            self.inner.delete_delivered(delivery, message_id, address),
        )
        .await
    }

    async fn fetch_file(&self, file: &RemoteFile) -> Result<Attachment, ConnectorError> {
        self.within("file download", self.inner.fetch_file(file))
            .await
    }

    async fn typing(
        &self,
        address: &str,
        thread: Option<&str>,
        typing: bool,
    ) -> Result<(), ConnectorError> {
        self.within("typing", self.inner.typing(address, thread, typing))
            .await
    }

    async fn notify(
        &self,
        address: &str,
        thread: Option<&str>,
        text: &str,
    ) -> Result<Option<String>, ConnectorError> {
        self.within("notice", self.inner.notify(address, thread, text))
            .await
    }

    async fn conversation_closed(
        &self,
        address: &str,
        thread: &str,
        why: &str,
    ) -> Result<(), ConnectorError> {
        self.within(
            "close",
            self.inner.conversation_closed(address, thread, why),
        )
        .await
    }

    /// The receive loop runs for the whole term; it is the connector's own.
    async fn run(self: Arc<Self>, sink: Arc<dyn RemoteSink>, term: Term) {
        self.inner.clone().run(sink, term).await
    }

    async fn serve(self: Arc<Self>, sink: Arc<dyn RemoteSink>, shutdown: watch::Receiver<bool>) {
        self.inner.clone().serve(sink, shutdown).await
    }

    fn webhook_routes(self: Arc<Self>, sink: Arc<dyn RemoteSink>) -> Option<axum::Router> {
        self.inner.clone().webhook_routes(sink)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A platform whose sends never answer.
    struct Hanging;

    #[async_trait]
    impl Connector for Hanging {
        fn platform(&self) -> Platform {
            super::super::telegram::SPEC.platform()
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                call_timeout: Duration::from_secs(3),
                ..Capabilities::unpaced('/')
            }
        }
        async fn offer(&self, _: &Offer, _: &str) -> Result<Option<String>, ConnectorError> {
            std::future::pending().await
        }
        fn render(&self, d: &Delivery) -> Vec<String> {
            vec![d.body.clone()]
        }
        async fn deliver(
            &self,
            _: &Delivery,
            _: usize,
            _: &str,
            _: &str,
        ) -> Result<String, ConnectorError> {
            std::future::pending().await
        }
        async fn notify(
            &self,
            _: &str,
            _: Option<&str>,
            _: &str,
        ) -> Result<Option<String>, ConnectorError> {
            Ok(Some("7".into()))
        }
        async fn run(self: Arc<Self>, _: Arc<dyn RemoteSink>, _: Term) {}
        fn takes_initiators(&self) -> bool {
            true
        }
    }

    /// What a connector declares passes through the wrapper: a default method left
    /// unforwarded would silently turn a platform's feature off.
    #[test]
    fn declarations_pass_through() {
        let timed = Timed::new(Arc::new(Hanging));
        assert!(timed.takes_initiators());
        assert_eq!(timed.capabilities().call_timeout, Duration::from_secs(3));
        assert_eq!(timed.how_to_accept(), Hanging.how_to_accept());
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_call_becomes_a_transient_failure_at_the_declared_limit() {
        let timed = Timed::new(Arc::new(Hanging));
        let delivery = Delivery {
            room_id: "!r:x".into(),
            event_id: "$e".into(),
            visitor_alias: "Visitor 1".into(),
            body: "hi".into(),
            formatted_body: None,
            media: None,
            thread: None,
            revises: None,
            to_initiator: false,
        };
        let started = tokio::time::Instant::now();
        let err = timed.deliver(&delivery, 0, "hi", "42").await.unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        assert!(
            matches!(&err, ConnectorError::Transient(t) if t.contains("longer than 3 s")),
            "{err:?}"
        );
        // A call that answers in time is passed through untouched.
        assert_eq!(
            timed.notify("42", None, "x").await.unwrap(),
            Some("7".into())
        );
    }
}
