//! Start-up and shutdown of the whole process: raise the file limit and split it between
//! clients and the reserve for backend connections, bind the listeners, start
//! one worker per configured thread and the admin API's thread, wait for them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::admin::{self, LiveApi};
use crate::config::Config;
use crate::frontend::listener::{bind_reuseport, open_fds, ClientFds, FdReserve, ListenerSpec};
use crate::observe::health::HealthBoard;
use crate::observe::stats::StatsRegistry;
use crate::routing::Router;
use crate::runtime::shutdown::{self, Shutdown};
use crate::upstream::side_effects::EffectBoard;
use crate::warming::WarmManager;
use crate::worker::{Worker, WorkerSetup};

/// The soft RLIMIT_NOFILE now (`None` when it cannot be read); `RLIM_INFINITY` is the type's
/// largest value.
fn fd_limit() -> Option<libc::rlim_t> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid pointer to a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    Some(limit.rlim_cur)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit, as memcached and nginx do (a proxy holds a
/// socket per client beside its backend connections), and logs the limit it got.
pub fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            log::warn!(
                "getrlimit(RLIMIT_NOFILE) failed: {}",
                std::io::Error::last_os_error()
            );
            return;
        }
        let old = limit.rlim_cur;
        if old >= limit.rlim_max {
            log::info!("open file limit: {old} (the hard limit)");
            return;
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
            log::info!("open file limit: raised from {old} to {}", limit.rlim_max);
        } else {
            log::warn!(
                "open file limit: {old}; could not raise it to the hard limit {}: {}",
                limit.rlim_max,
                std::io::Error::last_os_error()
            );
        }
    }
}

/// The room for client connections: the open file limit less the [`FdReserve`] of `config`
/// run by `workers` workers over `router`'s servers. Logs the split; warns when the listeners'
/// `max_connections` add up to more than that room; an error when there is no room at all.
fn client_fds(config: &Config, router: &Router, workers: usize) -> Result<ClientFds, String> {
    let servers = router.servers();
    let conns: usize = servers.iter().map(|s| s.connections).sum();
    let checked = servers.iter().filter(|s| s.health.is_some()).count();
    // A warming job holds at most one connection per server on each side (read and write).
    let warm_conns = crate::warming::MAX_RUNNING * 2 * servers.len();
    let admin = config
        .admin
        .as_ref()
        .map(|a| (a.max_connections, warm_conns));
    let reserve = FdReserve::new(
        open_fds(),
        workers,
        config.listeners.len(),
        servers.len(),
        conns,
        checked,
        admin,
    );
    let Some(limit) = fd_limit() else {
        log::warn!("cannot read the open file limit: clients are not limited by it");
        return Ok(ClientFds::new(usize::MAX));
    };
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let reserved = reserve.total();
    let room = limit.saturating_sub(reserved);
    if room == 0 {
        return Err(format!(
            "the open file limit ({limit}) leaves no descriptor for clients: {reserved} are \
             reserved ({reserve:?}); raise it (ulimit -n, LimitNOFILE=) or lower workers, \
             connections or admin.max_connections"
        ));
    }
    log::info!(
        "file descriptors: limit {limit}, {reserved} reserved for backend connections, \
         probes, listeners and admin, room for {room} clients"
    );
    let configured = config
        .listeners
        .iter()
        .fold(0usize, |sum, l| sum.saturating_add(l.max_connections));
    if configured > room {
        log::warn!(
            "listeners' max_connections add up to {configured}, but the open file limit \
             ({limit}, {reserved} reserved for backends, probes, listeners and admin) leaves room \
             for {room} clients: more are refused (rejected_connections_fd); raise the limit \
             (ulimit -n, LimitNOFILE=)"
        );
    }
    Ok(ClientFds::new(room))
}

/// A running proxy: its worker threads and the addresses it listens on.
pub struct Running {
    /// The listeners' bound addresses, in config order (port 0 resolved).
    pub addrs: Vec<SocketAddr>,
    /// The admin API's bound address (port 0 resolved), when `admin` is configured.
    pub admin_addr: Option<SocketAddr>,
    /// The shutdown flag; `request()` it to stop.
    pub shutdown: Arc<Shutdown>,
    workers: Vec<JoinHandle<()>>,
    admin: Option<JoinHandle<()>>,
    resolver: Option<JoinHandle<()>>,
}

impl Running {
    /// Waits for every worker, and the admin API's thread, to finish.
    pub fn wait(self) {
        for handle in self.workers {
            if handle.join().is_err() {
                log::error!("a worker thread panicked");
            }
        }
        if let Some(handle) = self.admin {
            if handle.join().is_err() {
                log::error!("the admin API thread panicked");
            }
        }
        if let Some(handle) = self.resolver {
            if handle.join().is_err() {
                log::error!("the resolver thread panicked");
            }
        }
    }
}

/// `config` with its memory budgets sized from the memory limit of the process's control
/// group (a container's), where the file left them to their defaults; logged either way.
fn fit_to_container(config: &Config) -> Config {
    let mut config = config.clone();
    if config.workers == 0 {
        // std reads the CPU quota of the control group (v1 and v2) before the core count.
        log::info!(
            "workers: 0: one per CPU the process may use (its CPU quota, or the cores): {}",
            config.worker_count()
        );
    }
    let Some(limit) = crate::runtime::cgroup::memory_limit() else {
        return config;
    };
    let fit = config.fit_memory_limit(limit);
    let from = |sized: bool| {
        if sized {
            "from the limit"
        } else {
            "as configured"
        }
    };
    log::info!(
        "memory limit {} MiB (control group): reply_memory_budget {} MiB ({}), \
         request_memory_budget {} MiB ({})",
        fit.limit >> 20,
        fit.reply.0 >> 20,
        from(fit.reply.1),
        fit.request.0 >> 20,
        from(fit.request.1)
    );
    config
}

/// Binds every listener once per worker and starts the workers.
pub fn start(config: &Config) -> Result<Running, String> {
    let router = Arc::new(Router::new(config)?);
    let workers = config.worker_count().max(1);
    let health = Arc::new(HealthBoard::new(router.servers()));
    let pool_of = |name: &str| config.backend(name).map(|(index, _)| index);
    let effects = Arc::new(EffectBoard::new(config, pool_of));
    let registry = Arc::new(
        StatsRegistry::new(
            workers,
            router.routes().iter().map(|r| r.name.clone()).collect(),
            router.servers().iter().map(|s| s.address.clone()).collect(),
        )
        .with_health(health.clone())
        .with_effects(effects.clone())
        .with_origins(
            router
                .servers()
                .iter()
                .map(|s| s.origin.is_some())
                .collect(),
        ),
    );
    let client_fds = Arc::new(client_fds(config, &router, workers)?);
    let shutdown = Shutdown::new();

    // Bind the first socket of each listener to learn its real port (the config may say 0),
    // then bind the other workers' sockets to that same address.
    let mut sockets: Vec<Vec<(std::net::TcpListener, ListenerSpec)>> =
        (0..workers).map(|_| Vec::new()).collect();
    let mut addrs = Vec::new();
    for listener in &config.listeners {
        let first = bind_reuseport(listener.bind)
            .map_err(|e| format!("listener '{}': bind {}: {e}", listener.name, listener.bind))?;
        let addr = first
            .local_addr()
            .map_err(|e| format!("listener '{}': {e}", listener.name))?;
        let spec = ListenerSpec::new(listener);
        addrs.push(addr);
        let mut first = Some(first);
        for per_worker in sockets.iter_mut() {
            let socket = match first.take() {
                Some(s) => s,
                None => bind_reuseport(addr)
                    .map_err(|e| format!("listener '{}': bind {addr}: {e}", listener.name))?,
            };
            per_worker.push((socket, spec.clone()));
        }
        log::info!("listener '{}' on {addr}", listener.name);
    }

    // Bound before any worker starts, so that a taken admin port fails start-up cleanly
    // instead of leaving workers running behind an error.
    let admin = match &config.admin {
        Some(a) => {
            let api = Arc::new(LiveApi {
                registry: registry.clone(),
                router: router.clone(),
                health: health.clone(),
                warm: Arc::new(WarmManager::new(config, router.clone(), health.clone())),
            });
            let limits = admin::Limits::new(a.request_timeout, a.header_timeout, a.max_connections);
            let token = a.token.clone();
            let stats = registry.admin();
            let server = admin::start(a.bind, api, token, limits, stats, shutdown.clone())
                .map_err(|e| format!("admin.bind {}: {e}", a.bind))?;
            log::info!("admin API on {}", server.addr);
            Some(server)
        }
        None => None,
    };
    let admin_addr = admin.as_ref().map(|a| a.addr);
    let admin_thread = admin.map(|a| a.thread);

    let request_memory = Arc::new(crate::frontend::clients::RequestMemory::new(
        config.request_memory_budget,
    ));
    let mut handles = Vec::new();
    for (id, listeners) in sockets.into_iter().enumerate() {
        let worker = Worker::new(WorkerSetup {
            id,
            router: router.clone(),
            listeners,
            registry: registry.clone(),
            shutdown: shutdown.clone(),
            reply_budget: config.reply_memory_budget / workers,
            workers,
            health: health.clone(),
            effects: effects.clone(),
            client_fds: client_fds.clone(),
            request_memory: request_memory.clone(),
        })
        .map_err(|e| format!("worker {id}: {e}"));
        let handle = worker.and_then(|worker| {
            std::thread::Builder::new()
                .name(format!("bifrost-w{id}"))
                .spawn(move || worker.run())
                .map_err(|e| format!("worker {id}: {e}"))
        });
        match handle {
            Ok(handle) => handles.push(handle),
            Err(e) => {
                // Stop what already runs (the admin API, earlier workers) rather than leave
                // it serving behind a failed start.
                shutdown.request();
                return Err(e);
            }
        }
    }
    let named = router
        .servers()
        .iter()
        .map(|s| (s.addr.clone(), s.resolve_interval))
        .collect();
    let resolver = crate::upstream::resolver::start(named, health.clone(), shutdown.clone())
        .map_err(|e| {
            shutdown.request();
            format!("resolver thread: {e}")
        })?;
    log::info!("{workers} worker(s) serving");
    Ok(Running {
        addrs,
        admin_addr,
        shutdown,
        workers: handles,
        admin: admin_thread,
        resolver,
    })
}

/// Runs until SIGINT/SIGTERM, then drains and returns.
pub fn run(config: &Config) -> Result<(), String> {
    raise_fd_limit();
    shutdown::block_termination_signals();
    let config = fit_to_container(config);
    let running = start(&config)?;
    shutdown::spawn_signal_thread(running.shutdown.clone())
        .map_err(|e| format!("signal thread: {e}"))?;
    running.wait();
    log::info!("stopped");
    Ok(())
}
