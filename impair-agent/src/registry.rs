//! The impairments this agent owns: one [`Engine`] per id, created,
//! updated and removed through blocking calls (the engine's netlink and bpf
//! work; the HTTP layer runs them on tokio's blocking pool). One lock
//! serialises every change, so a create and a delete of one id never
//! interleave. Dropping the registry detaches everything.
use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use impair::{
    engine::{AttachOptions, Engine, Error as EngineError, HookOptions},
    model::{ModelError, RuleSpec},
    observe::snapshot::Snapshot,
    profile::scenario::Scenario,
};
use serde::Serialize;

use crate::{
    error::ApiError,
    request::{model_error, rules_of, CreateRequest, UpdateRequest},
};

/// One impairment: the request that made it, its engine and its clock.
struct Instance {
    request: CreateRequest,
    /// `None` only while the engine is away on a namespace thread.
    engine: Option<Engine>,
    label: String,
    created: Instant,
    created_unix_ns: u64,
    deadline: Option<Instant>,
    scenario: Option<Playing>,
    cgroup_id: Option<u64>,
    /// Where the engine runs: the target's netns, or its container's.
    netns: Option<String>,
}

/// A scenario being played: the player and the step it last applied.
struct Playing {
    player: impair_tools::player::Player,
    step: usize,
}

/// An instance as the API shows it: the request, and the live counters
/// (configured vs measured, `impair stats --json`'s snapshot).
#[derive(Debug, Serialize)]
pub struct View {
    pub id: String,
    pub request: CreateRequest,
    pub label: String,
    pub created_unix_ns: u64,
    /// Milliseconds until the duration ends, when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_ms: Option<u64>,
    pub status: Option<Snapshot>,
}

pub struct Registry {
    instances: Mutex<BTreeMap<String, Instance>>,
    max_instances: usize,
}

/// Runs `f` in the network namespace `ns` (a name in /run/netns or a
/// path), on a thread of its own; `None` runs it here.
pub fn in_netns<T: Send + 'static>(
    ns: Option<&str>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    match ns {
        None => Ok(f()),
        Some(name) if !name.starts_with('/') => impair::netns::run_in(name, f),
        Some(path) => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("opening network namespace {path}"))?;
            std::thread::spawn(move || -> Result<T> {
                impair::sys::setns_net(&file)?;
                Ok(f())
            })
            .join()
            .map_err(|p| anyhow::anyhow!("{}", impair::netns::panic_message(&*p)))?
        }
    }
}

/// An engine failure as the API says it: the engine's refusals (which
/// changed nothing) are the client's to fix; the rest are the system's.
fn engine_error(e: anyhow::Error) -> ApiError {
    if let Some(m) = e.downcast_ref::<ModelError>() {
        return model_error("rules", m);
    }
    let Some(refusal) = e.downcast_ref::<EngineError>() else {
        return ApiError::internal(&e);
    };
    let msg = refusal.to_string();
    match refusal {
        EngineError::InvalidInterfaceName { .. } | EngineError::NoSuchInterface { .. } => {
            ApiError::bad_request(
                msg,
                Some("target.interface".into()),
                Some("an interface of the target's network namespace".into()),
            )
        }
        EngineError::AlreadyImpaired { .. } | EngineError::XdpBusy { .. } => {
            ApiError::conflict(msg)
        }
        EngineError::CgroupAtIngress
        | EngineError::EgressOnlyAtIngress(_)
        | EngineError::RateInBothDirections => ApiError::bad_request(
            msg,
            Some("direction".into()),
            Some("egress for delay, jitter, reordering, duplication and cgroups".into()),
        ),
        EngineError::ConfiguredRootQdisc { .. } | EngineError::NoFq { .. } => {
            ApiError::bad_request(
                msg,
                Some("rules".into()),
                Some("rules without delay or rate on this interface".into()),
            )
        }
        EngineError::TcxUnsupported => ApiError::bad_request(
            msg,
            Some("attach_mode".into()),
            Some("auto or netlink".into()),
        ),
        EngineError::NotRoot | EngineError::PermissionDenied => ApiError::new(500, msg),
        _ => ApiError::bad_request(msg, Some("target".into()), None),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Instance {
    fn netns(&self) -> Option<String> {
        self.netns.clone()
    }

    fn view(&self, id: &str) -> View {
        let status = self.engine.as_ref().and_then(|e| {
            let maps = e.maps();
            Snapshot::read(&maps, e.iface()).ok()
        });
        View {
            id: id.to_owned(),
            request: self.request.clone(),
            label: self.label.clone(),
            created_unix_ns: self.created_unix_ns,
            remaining_ms: self
                .deadline
                .map(|d| d.saturating_duration_since(Instant::now()).as_millis() as u64),
            status,
        }
    }

    /// Replaces the rules atomically, in the instance's namespace (fq, which
    /// delay and rate need, is installed there).
    fn update(&mut self, rules: Vec<RuleSpec>, label: Option<String>) -> Result<(), ApiError> {
        let engine = self
            .engine
            .take()
            .ok_or_else(|| ApiError::new(500, "the instance's engine is missing"))?;
        let (engine, result) = in_netns(self.netns().as_deref(), move || {
            let mut engine = engine;
            let r = engine.update(&rules).and_then(|()| match &label {
                Some(l) => engine.set_label(l),
                None => Ok(()),
            });
            (engine, r)
        })
        .map_err(|e| ApiError::internal(&e))?;
        self.engine = Some(engine);
        result.map_err(engine_error)
    }

    fn detach(mut self) -> Result<()> {
        match self.engine.take() {
            Some(e) => e.detach(),
            None => Ok(()),
        }
    }
}

impl Registry {
    pub fn new(max_instances: usize) -> Self {
        Registry {
            instances: Mutex::new(BTreeMap::new()),
            max_instances,
        }
    }

    /// Creates `req.id`, or returns it when it exists with the same body
    /// (`Ok((view, false))`); a different body is a conflict.
    /// `container_netns`: the namespace of `req.target.container`, which
    /// the caller resolved through the container runtime.
    pub fn create(
        &self,
        req: CreateRequest,
        container_netns: Option<String>,
    ) -> Result<(View, bool), ApiError> {
        let mut map = lock(&self.instances);
        if let Some(existing) = map.get(&req.id) {
            if existing.request == req {
                return Ok((existing.view(&req.id), false));
            }
            return Err(ApiError::conflict(format!(
                "impairment '{}' exists with a different body; delete it first or update it",
                req.id
            )));
        }
        if map.len() >= self.max_instances {
            return Err(ApiError::conflict(format!(
                "this agent holds at most {} impairments",
                self.max_instances
            )));
        }
        let plan = req.plan()?;
        let opts = AttachOptions {
            iface: req.target.interface.clone(),
            mode: plan.attach_mode,
            rules: plan.rules.clone(),
            seed: req.seed,
            label: format!("agent {}: {}", req.id, plan.label),
            duration: plan.duration,
            // The device's offloads are managed as for `impair attach`.
            keep_offloads: false,
        };
        let hooks = HookOptions {
            direction: plan.direction,
            ..HookOptions::default()
        };
        let label = opts.label.clone();
        let netns = container_netns.or_else(|| req.target.netns.clone());
        let engine = in_netns(netns.as_deref(), move || Engine::attach_with(opts, hooks))
            .map_err(|e| {
                ApiError::bad_request(
                    format!("{e:#}"),
                    Some("target.netns".into()),
                    Some("a name from `ip netns list` or a path such as /proc/PID/ns/net".into()),
                )
            })?
            .map_err(engine_error)?;
        tracing::info!(id = req.id, iface = engine.iface(), "attached");
        let now = Instant::now();
        let scenario = plan.scenario.map(|s: Scenario| Playing {
            player: impair_tools::player::Player::new(s),
            step: 0,
        });
        let inst = Instance {
            engine: Some(engine),
            label,
            created: now,
            created_unix_ns: impair::sys::unix_ns(),
            deadline: plan.duration.map(|d| now + d),
            scenario,
            cgroup_id: plan.cgroup_id,
            netns,
            request: req.clone(),
        };
        let view = inst.view(&req.id);
        map.insert(req.id, inst);
        Ok((view, true))
    }

    pub fn list(&self) -> Vec<View> {
        lock(&self.instances)
            .iter()
            .map(|(id, i)| i.view(id))
            .collect()
    }

    pub fn get(&self, id: &str) -> Result<View, ApiError> {
        lock(&self.instances)
            .get(id)
            .map(|i| i.view(id))
            .ok_or_else(|| ApiError::not_found(format!("no impairment '{id}'")))
    }

    /// Every instance's snapshot, for `/metrics`. An interface in another
    /// namespace is labelled `IFACE@NETNS` (or `IFACE@CONTAINER`): every
    /// container's `eth0` is a series of its own.
    pub fn snapshots(&self) -> Vec<Snapshot> {
        lock(&self.instances)
            .values()
            .filter_map(|i| {
                let e = i.engine.as_ref()?;
                let t = &i.request.target;
                let label = match t.container.as_ref().or(t.netns.as_ref()) {
                    Some(place) => format!("{}@{place}", e.iface()),
                    None => e.iface().to_owned(),
                };
                Snapshot::read(&e.maps(), &label).ok()
            })
            .collect()
    }

    /// Replaces the rule set of `id` atomically (the engine's update).
    pub fn update(&self, id: &str, req: UpdateRequest) -> Result<View, ApiError> {
        let mut map = lock(&self.instances);
        let inst = map
            .get_mut(id)
            .ok_or_else(|| ApiError::not_found(format!("no impairment '{id}'")))?;
        if inst.scenario.is_some() {
            return Err(ApiError::conflict(
                "a scenario's rules change by its timeline; delete it and create another",
            ));
        }
        let Some((mut rules, label)) = rules_of(&req.rules, &req.profile)? else {
            return Err(ApiError::bad_request(
                "give rules or a profile",
                Some("rules".into()),
                Some("one of rules, profile".into()),
            ));
        };
        // The target's cgroup scopes the new rules as it did the first.
        for r in &mut rules {
            r.matcher.cgroup = inst.cgroup_id;
        }
        let label = format!("agent {id}: {label}");
        inst.update(rules, Some(label.clone()))?;
        inst.label = label;
        inst.request.rules = req.rules;
        inst.request.profile = req.profile;
        Ok(inst.view(id))
    }

    /// Detaches `id`, restoring the interface exactly.
    pub fn delete(&self, id: &str) -> Result<(), ApiError> {
        let inst = lock(&self.instances)
            .remove(id)
            .ok_or_else(|| ApiError::not_found(format!("no impairment '{id}'")))?;
        inst.detach().map_err(|e| ApiError::internal(&e))?;
        tracing::info!(id, "detached");
        Ok(())
    }

    /// The periodic work: plays scenario steps and removes instances whose
    /// duration has ended (the lease stopped them already).
    pub fn tick(&self) {
        let mut map = lock(&self.instances);
        let now = Instant::now();
        let expired: Vec<String> = map
            .iter()
            .filter(|(_, i)| i.deadline.is_some_and(|d| d <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            if let Some(inst) = map.remove(&id) {
                if let Err(e) = inst.detach() {
                    tracing::error!(id, "detaching at the end of its duration: {e:#}");
                }
                tracing::info!(id, "duration ended; detached");
            }
        }
        for (id, inst) in map.iter_mut() {
            let Some(play) = inst.scenario.as_mut() else {
                continue;
            };
            let elapsed = now.duration_since(inst.created);
            let (step, _) = play.player.scenario().step_at(elapsed);
            if step == play.step {
                continue;
            }
            play.step = step;
            let rules = play.player.scenario().steps[step].rules.clone();
            let label = format!("agent {id}: {}", play.player.label(step));
            if let Err(e) = inst.update(rules, Some(label.clone())) {
                tracing::error!(id, "scenario step {}: {e}", step + 1);
            } else {
                inst.label = label;
            }
        }
    }

    /// Detaches everything (SIGTERM, SIGINT); returns how many failed.
    pub fn shutdown(&self) -> usize {
        let all = std::mem::take(&mut *lock(&self.instances));
        let mut failed = 0;
        for (id, inst) in all {
            if let Err(e) = inst.detach() {
                tracing::error!(id, "detaching: {e:#}");
                failed += 1;
            }
        }
        failed
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// How often [`Registry::tick`] runs.
pub const TICK: Duration = Duration::from_millis(100);
