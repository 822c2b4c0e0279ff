//! `switchboard run`: the service. Loads and checks what it runs with, connects to the
//! homeserver and the database, builds each enabled platform's connector, and serves the
//! appservice, visitor and admin endpoints until a signal stops it.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use switchboard_appservice::{
    AppserviceRegistration, HomeserverClient,
    ruma::{OwnedServerName, OwnedUserId, ServerName},
    server::{self as as_server, AppserviceState},
};
use switchboard_bridge::{
    Bridge, Store,
    admin_api::{self, AdminState},
    bridge::RoomPostQueue,
    cluster::Cluster,
    config::{BridgeConfig, DEFAULT_OFFLINE_MESSAGE, DEFAULT_WELCOME_NOTICE, VisitorMode},
    connector::{
        Connector, ConnectorState, RemoteSink, RoomWrites,
        registry::{self, BuildContext},
    },
    health::{DATABASE, HOMESERVER, Health, PartState},
    media_links,
    store::Engine,
    visitor_account::VisitorAccounts,
    visitor_api::{self, VisitorApiState},
    visitor_proxy::{self, ProxyState},
};
use tokio::sync::watch;

use crate::{config, web};

/// What `run` and `check-config` read and check before connecting anywhere: the
/// registration, and the bot's user ID on the configured server.
pub(crate) struct Prepared {
    pub(crate) registration: Arc<AppserviceRegistration>,
    pub(crate) server_name: OwnedServerName,
    pub(crate) bot: OwnedUserId,
}

impl Prepared {
    pub(crate) fn new(config: &config::Config) -> anyhow::Result<Self> {
        let path = config.appservice.registration.display();
        let registration = Arc::new(
            AppserviceRegistration::load(&config.appservice.registration)
                .context("loading the appservice registration")?,
        );
        let inner = &registration.inner;
        anyhow::ensure!(
            !inner.as_token.trim().is_empty() && !inner.hs_token.trim().is_empty(),
            "{path}: as_token or hs_token is empty; generate a registration with `switchboard generate-registration`"
        );
        // The example registration in the repository has placeholder tokens, equal to each
        // other; running with it would let anyone who read the repository talk to us.
        anyhow::ensure!(
            inner.as_token != inner.hs_token,
            "{path}: as_token and hs_token must differ; generate a registration with `switchboard generate-registration`"
        );
        let server_name: OwnedServerName = ServerName::parse(&config.homeserver.server_name)
            .context("homeserver.server_name is not a valid server name")?;
        let bot = registration
            .bot_user_id(&server_name)
            .with_context(|| format!("{path}: sender_localpart"))?;
        Ok(Self {
            registration,
            server_name,
            bot,
        })
    }
}

/// What every platform's connector is built with, in `run` and in `check-config` alike.
pub(crate) fn build_context(
    config: &config::Config,
    client: Arc<HomeserverClient>,
    health: Health,
    room_writes: Arc<dyn RoomWrites>,
    state: Arc<dyn ConnectorState>,
) -> BuildContext {
    BuildContext {
        client,
        health,
        room_writes,
        state,
        public_url: config.visitors.public_url.clone(),
        topics: config
            .topics
            .iter()
            .map(|t| (t.id.clone(), t.name.clone()))
            .collect(),
    }
}

/// One platform's connector, built by its own module from its own section; `None`: the
/// configuration does not enable it. The error names the platform.
pub(crate) fn build_connector(
    spec: &registry::PlatformSpec,
    config: &config::Config,
    context: &BuildContext,
) -> anyhow::Result<Option<Arc<dyn Connector>>> {
    (spec.build)(config.platform_section(spec.name), context)
        .map_err(|e| anyhow::anyhow!("{}: {e}", spec.name))
}

/// SQLite serves one running Switchboard at a time: two would each work through the same
/// queues as if they were alone (several instances coordinate through PostgreSQL). So `run`
/// holds an exclusive lock on a file beside the database for its whole life, and a second one
/// is refused before it touches the database. The commands (`responders`, `dead-letters`…)
/// take no lock: they are meant to run beside the service. `None` where there is nothing to
/// lock: PostgreSQL, or an in-memory SQLite database.
fn hold_instance_lock(database_url: &str) -> anyhow::Result<Option<std::fs::File>> {
    let Some(rest) = database_url.strip_prefix("sqlite:") else {
        return Ok(None);
    };
    let path = rest
        .trim_start_matches("//")
        .split('?')
        .next()
        .unwrap_or_default();
    if path.is_empty() || path.starts_with(":memory:") {
        return Ok(None);
    }
    let lock_path = format!("{path}.instance-lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&lock_path)
        .with_context(|| format!("opening the instance lock {lock_path}"))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another Switchboard is running on the SQLite database {path} (it holds \
             {lock_path}); SQLite serves one instance: stop the other, or run several on \
             PostgreSQL"
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking the instance lock {lock_path}"))
        }
    }
}

pub(crate) async fn run(config: config::Config) -> anyhow::Result<()> {
    let Prepared {
        registration,
        server_name,
        bot,
    } = Prepared::new(&config)?;

    // Held until `run` returns, that is for the life of the service.
    let _instance = hold_instance_lock(&config.database.url)?;
    let store = Store::connect(&config.database.url)
        .await
        .context("opening the database")?;
    tracing::info!(engine = ?store.engine(), "database ready");
    // Alone on SQLite; on PostgreSQL, among whatever other instances share the database.
    let cluster = match store.engine() {
        Engine::Sqlite => Cluster::alone(),
        Engine::Postgres => {
            let holder = config.cluster.holder();
            let lease = config.cluster.lease()?;
            tracing::info!(instance = %holder, lease_seconds = lease.as_secs(), "sharing the database with any other instances");
            Cluster::shared(store.clone(), holder, lease)
        }
    };
    // How each part is doing, for /health and /ready: shared by the bridge, the connectors
    // and the web routes, on the store's clock (the system's) like everything else.
    let health = Health::with_clock(store.clock().clone());
    health.report(DATABASE, PartState::Connected, None);

    let client = Arc::new(
        connect_homeserver(&config.homeserver.url, &registration.inner.as_token, bot).await?,
    );
    health.report(HOMESERVER, PartState::Connected, None);
    // Writes into rooms are queued in the store and posted by the bridge; the Matrix
    // connector queues its notices there too, so it gets the queue before the bridge exists.
    let room_posts = RoomPostQueue::new(store.clone());
    // Every enabled platform's connector, built by its own module from its own section.
    let context = build_context(
        &config,
        client.clone(),
        health.clone(),
        Arc::new(room_posts.clone()),
        Arc::new(store.clone()),
    );
    let mut connectors: Vec<Arc<dyn Connector>> = Vec::new();
    for spec in registry::PLATFORMS {
        if let Some(connector) = build_connector(spec, &config, &context)? {
            connectors.push(connector);
            tracing::info!(platform = spec.name, "connector enabled");
        }
    }
    let bridge = Arc::new(
        Bridge::new(
            store.clone(),
            client.clone(),
            registration.clone(),
            BridgeConfig {
                appservice_id: registration.inner.id.clone(),
                server_name: server_name.to_string(),
                public_homeserver_url: config.public_homeserver_url().to_owned(),
                topics: config.topics.clone(),
                responders: config.responders.clone(),
                limits: config.visitors.clone(),
                welcome_notice: config
                    .welcome_notice
                    .clone()
                    .unwrap_or_else(|| DEFAULT_WELCOME_NOTICE.to_owned()),
                offline_message: config
                    .offline_message
                    .clone()
                    .unwrap_or_else(|| DEFAULT_OFFLINE_MESSAGE.to_owned()),
            },
            connectors,
        )
        .with_health(health.clone())
        .with_room_posts(room_posts)
        .with_retention(config.retention.clone())
        .with_cluster(cluster.clone()),
    );
    tracing::info!(
        transcript_days = config.retention.transcript_days,
        erase_by = if config.retention.homeserver_admin_token.is_some() {
            "synapse admin API"
        } else {
            "redaction"
        },
        "retention"
    );

    let sink: Arc<dyn RemoteSink> = bridge.clone();
    bridge
        .seed_register()
        .await
        .context("seeding the responder register")?;
    let visitor_state = VisitorApiState::new(bridge.clone())
        .with_allowed_origins(config.allowed_origins()?)
        .with_visitor_accounts(VisitorAccounts::new(client.clone(), registration.clone()));
    tracing::info!(
        visitor_mode = config.visitors.mode.as_str(),
        allowed_origins = ?config.web.allowed_origins,
        "visitor API"
    );
    let mut pushes = AppserviceState::new(registration.clone(), bridge.clone());
    if store.engine() == Engine::Postgres {
        // Other instances may take the homeserver's pushes in turn: they share the order
        // guard's state through the database.
        pushes = pushes.with_shared_order(Arc::new(store.clone()));
    }
    let mut app = as_server::router(pushes)
        .merge(visitor_api::router(visitor_state))
        .merge(media_links::router(bridge.clone()))
        .merge(
            web::router(
                &bridge.config().public_homeserver_url,
                web::Probes {
                    health: health.clone(),
                    store: store.clone(),
                },
            )
            .context("homeserver.public_url (or url)")?,
        );
    if config.visitors.mode == VisitorMode::Proxied {
        let proxy = ProxyState::new(bridge.clone(), client.clone())
            .with_allowed_origins(config.allowed_origins()?);
        app = app.merge(visitor_proxy::router(proxy));
        tracing::info!(
            session_ttl_hours = config.visitors.session_ttl_hours,
            "visitor proxy enabled"
        );
    }
    // Off the public listener: the admin API when it has an address of its own, and metrics.
    let mut private = axum::Router::new();
    if let Some(admin) = &config.admin {
        let platforms = bridge
            .connectors()
            .map(|c| c.platform().as_str().to_owned())
            .collect();
        let state = AdminState::new(
            store.clone(),
            admin.token.as_str(),
            bridge.register_changed(),
            platforms,
        )
        .map_err(|e| anyhow::anyhow!("admin.token: {e}"))?
        .with_trusted_forwarded_for(config.visitors.trust_forwarded_for)
        .with_service_level_targets(config.first_reply_targets())
        .with_wake({
            let bridge = bridge.clone();
            move || bridge.wake()
        })
        .with_eraser(bridge.clone());
        if admin.listen.is_some() {
            private = private.merge(admin_api::router(state));
        } else {
            app = app.merge(admin_api::router(state));
        }
        tracing::info!(listen = ?admin.listen, "admin API enabled");
    }
    let mut metrics_app = None;
    if let Some(metrics) = &config.metrics {
        let handle = install_metrics_recorder()?;
        let routes =
            switchboard_bridge::metrics::router(switchboard_bridge::metrics::MetricsState {
                store: store.clone(),
                health: health.clone(),
                platforms: bridge.connectors().map(|c| c.platform().as_str()).collect(),
                render: Arc::new(move || handle.render()),
            });
        if metrics.listen.is_some() {
            metrics_app = Some(routes);
        } else {
            private = private.merge(routes);
        }
    }
    for routes in bridge
        .connectors()
        .filter_map(|c| c.clone().webhook_routes(sink.clone()))
    {
        app = app.merge(routes);
    }

    let listener = tokio::net::TcpListener::bind(config.appservice.listen)
        .await
        .with_context(|| format!("binding {}", config.appservice.listen))?;
    tracing::info!(listen = %config.appservice.listen, "listening");

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut servers = vec![serve(listener, app, stop_rx.clone())];
    let private_addr = config.admin.as_ref().and_then(|a| a.listen);
    if let Some(addr) = private_addr {
        servers.push(serve(
            bind(addr, "admin.listen").await?,
            private,
            stop_rx.clone(),
        ));
    }
    if let (Some(routes), Some(addr)) =
        (metrics_app, config.metrics.as_ref().and_then(|m| m.listen))
    {
        servers.push(serve(
            bind(addr, "metrics.listen").await?,
            routes,
            stop_rx.clone(),
        ));
    }
    let coordination = {
        let cluster = cluster.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move { cluster.run(stop).await })
    };
    let worker = tokio::spawn(bridge.clone().run(stop_rx.clone()));
    // What every instance serves (email's SMTP listener), leading or not.
    let listeners: Vec<_> = bridge
        .connectors()
        .map(|c| tokio::spawn(c.clone().serve(sink.clone(), stop_rx.clone())))
        .collect();
    let receivers = tokio::spawn(run_receivers(
        cluster.clone(),
        bridge.clone(),
        stop_rx.clone(),
    ));

    // Now that we listen, ask the homeserver to ping us: it then sends at once whatever it
    // queued while we were down.
    let pinger = bridge.clone();
    tokio::spawn(async move {
        let mut wait = Duration::from_millis(500);
        loop {
            match pinger.ping_homeserver().await {
                Ok(rtt) => {
                    tracing::info!(rtt_ms = rtt.as_millis() as u64, "homeserver ping succeeded");
                    pinger
                        .health()
                        .report(HOMESERVER, PartState::Connected, None);
                    break;
                }
                Err(e) => {
                    pinger
                        .health()
                        .report(HOMESERVER, PartState::Degraded, Some(e.to_string()));
                    tracing::warn!(error = %e, "homeserver ping failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
            }
        }
    });

    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    for server in servers {
        let _ = server.await;
    }
    let _ = worker.await;
    let _ = receivers.await;
    for l in listeners {
        let _ = l.await;
    }
    let _ = coordination.await;
    // What this instance held, given up now rather than left to expire.
    cluster.leave().await;
    store.close().await;
    Ok(())
}

/// Runs the platforms' receivers (Telegram long polling, the Discord gateway, IMAP) while
/// this instance leads (`cluster.rs`; alone, from start to stop): started at each term's
/// beginning and stopped at its end, so only one instance receives from a platform.
async fn run_receivers(cluster: Cluster, bridge: Arc<Bridge>, mut stop: watch::Receiver<bool>) {
    let mut terms = cluster.terms();
    loop {
        let term = terms.borrow_and_update().clone();
        if let Some(term) = term {
            tracing::info!(
                epoch = term.epoch(),
                "leading: starting the platforms' receivers"
            );
            // What they record carries the term's fence: a deposed leader records nothing.
            let sink = bridge.as_leader(&term);
            let running: Vec<_> = bridge
                .connectors()
                .map(|c| tokio::spawn(c.clone().run(sink.clone(), term.clone())))
                .collect();
            for r in running {
                let _ = r.await;
            }
            tracing::info!(epoch = term.epoch(), "the platforms' receivers stopped");
        }
        tokio::select! {
            changed = terms.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Serves `app` on `listener` until `stop` turns true, with each request's peer address
/// (rate limits key on it).
fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    tokio::spawn(
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|stop| *stop).await;
        })
        .into_future(),
    )
}

async fn bind(addr: std::net::SocketAddr, key: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("{key}: binding {addr}"))?;
    tracing::info!(listen = %addr, "{key}: listening");
    Ok(listener)
}

/// Installs the Prometheus recorder the `metrics` facade reports to (once, for the process),
/// with histogram buckets instead of summaries so Prometheus can aggregate and take quantiles
/// across instances, and keeps its histograms trimmed.
fn install_metrics_recorder() -> anyhow::Result<metrics_exporter_prometheus::PrometheusHandle> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(switchboard_bridge::metrics::SECONDS_BUCKETS)
        .context("metrics buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    switchboard_bridge::metrics::describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// Waits for the homeserver: at start-up next to a homeserver that is itself starting, a
/// refused connection is expected for a while.
async fn connect_homeserver(
    url: &str,
    as_token: &str,
    bot: switchboard_appservice::ruma::OwnedUserId,
) -> anyhow::Result<HomeserverClient> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        match HomeserverClient::connect(url, as_token, bot.clone()).await {
            Ok(client) => return Ok(client),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "homeserver not reachable yet");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e).context("connecting to the homeserver"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_instance_at_a_time_holds_a_sqlite_database() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
        let first = hold_instance_lock(&url).unwrap();
        assert!(first.is_some());
        let second = hold_instance_lock(&url).unwrap_err().to_string();
        assert!(
            second.contains("another Switchboard") && second.contains("s.db.instance-lock"),
            "{second}"
        );
        drop(first);
        assert!(
            hold_instance_lock(&url).unwrap().is_some(),
            "free once the first is gone"
        );
        // Nothing to lock for PostgreSQL or a database in memory.
        assert!(
            hold_instance_lock("postgres://localhost/s")
                .unwrap()
                .is_none()
        );
        assert!(hold_instance_lock("sqlite::memory:").unwrap().is_none());
    }
}
