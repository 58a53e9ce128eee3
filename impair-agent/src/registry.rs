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
    engine::{
        pair::{side_label, EnginePair, PairOptions, SideOptions},
        AttachOptions, Direction, Engine, Error as EngineError, HookOptions,
    },
    model::{LinkRules, ModelError, RuleSpec},
    observe::snapshot::Snapshot,
    profile::scenario::Scenario,
};
use serde::Serialize;

use crate::{
    error::ApiError,
    link::{link_of, sides_wanted, PairPlan},
    request::{CreateRequest, UpdateRequest},
    rule_json::model_error,
};

/// The engine(s) of one instance: one hook set (rules, a one-way profile or
/// scenario) or a two-way link's pair (uplink at egress, downlink at
/// ingress).
enum Engines {
    One(Box<Engine>),
    Pair(Box<EnginePair>),
}

impl Engines {
    /// Every attached engine, the uplink first.
    fn all(&self) -> Vec<&Engine> {
        match self {
            Engines::One(e) => vec![&**e],
            Engines::Pair(p) => p.engines().collect(),
        }
    }

    fn detach(self) -> Result<()> {
        match self {
            Engines::One(e) => (*e).detach(),
            Engines::Pair(p) => (*p).detach(),
        }
    }
}

/// New rules for an instance: one rule set, or each side of a pair.
enum NewRules {
    One(Vec<RuleSpec>),
    Pair {
        uplink: Vec<RuleSpec>,
        downlink: Vec<RuleSpec>,
    },
}

/// One impairment: the request that made it, its engine and its clock.
struct Instance {
    request: CreateRequest,
    /// `None` only while the engine is away on a namespace thread.
    engine: Option<Engines>,
    /// The hooks (one-way) or the sides (two-way) it was created with.
    direction: Direction,
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
    /// The counters of the (first) instance: a two-way link's uplink, or
    /// its only side.
    pub status: Option<Snapshot>,
    /// A two-way link: each side's counters, uplink first, each with its
    /// `direction` (egress: the uplink, ingress: the downlink).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sides: Vec<Snapshot>,
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
        let snaps: Vec<Snapshot> = self
            .engine
            .iter()
            .flat_map(Engines::all)
            .filter_map(|e| Snapshot::read(&e.maps(), e.iface()).ok())
            .collect();
        let status = snaps.first().cloned();
        let sides = match self.engine {
            Some(Engines::Pair(_)) => snaps,
            _ => Vec::new(),
        };
        View {
            id: id.to_owned(),
            request: self.request.clone(),
            label: self.label.clone(),
            created_unix_ns: self.created_unix_ns,
            remaining_ms: self
                .deadline
                .map(|d| d.saturating_duration_since(Instant::now()).as_millis() as u64),
            status,
            sides,
        }
    }

    /// Replaces the rules atomically, in the instance's namespace (fq, which
    /// delay and rate need, is installed there); a pair's sides each flip
    /// atomically, uplink first.
    fn update(&mut self, rules: NewRules, label: Option<String>) -> Result<(), ApiError> {
        let engine = self
            .engine
            .take()
            .ok_or_else(|| ApiError::new(500, "the instance's engine is missing"))?;
        let (engine, result) = in_netns(self.netns().as_deref(), move || {
            let mut engine = engine;
            let r = match (&mut engine, &rules) {
                (Engines::One(e), NewRules::One(r)) => e.update(r).and_then(|()| match &label {
                    Some(l) => e.set_label(l),
                    None => Ok(()),
                }),
                (Engines::Pair(p), NewRules::Pair { uplink, downlink }) => {
                    p.update(uplink, downlink).and_then(|()| match &label {
                        Some(l) => p.set_label(l),
                        None => Ok(()),
                    })
                }
                _ => Err(anyhow::anyhow!(
                    "one rule set for a two-way link or two for a one-way instance"
                )),
            };
            (engine, r)
        })
        .map_err(|e| ApiError::internal(&e))?;
        self.engine = Some(engine);
        result.map_err(engine_error)
    }

    /// What `link` (checked, flipped if asked) gives this instance: a pair
    /// takes both sides it has (a side it was created without must stay
    /// without rules, unless its `direction` left that side out); a one-way
    /// instance takes a two-way link's side at its direction.
    fn new_rules(&self, link: LinkRules, field: &str) -> Result<NewRules, ApiError> {
        let (want_up, want_down) = sides_wanted(self.direction);
        match &self.engine {
            Some(Engines::Pair(p)) => {
                if !link.two_way {
                    return Err(ApiError::bad_request(
                        "this impairment is a two-way link: give its new uplink/downlink or a two-way profile",
                        Some(field.to_owned()),
                        Some("uplink and downlink rules, or a two-way profile".into()),
                    ));
                }
                let side = |attached: bool, wanted: bool, rules: Vec<RuleSpec>, name: &str| {
                    if attached {
                        Ok(rules)
                    } else if !wanted || rules.is_empty() {
                        Ok(Vec::new())
                    } else {
                        Err(ApiError::bad_request(
                            format!("this impairment was created without a {name} instance"),
                            Some(if field == "profile" { "profile" } else { name }.to_owned()),
                            Some(format!("no {name} rules; delete it and create it with both sides")),
                        ))
                    }
                };
                let uplink = side(p.uplink.is_some(), want_up, link.uplink, "uplink")?;
                let downlink = side(p.downlink.is_some(), want_down, link.downlink, "downlink")?;
                Ok(NewRules::Pair { uplink, downlink })
            }
            _ if !link.two_way => Ok(NewRules::One(link.uplink)),
            _ => match (want_up, want_down) {
                (true, false) => Ok(NewRules::One(link.uplink)),
                (false, true) => Ok(NewRules::One(link.downlink)),
                _ => Err(ApiError::bad_request(
                    "this impairment is one instance at egress and ingress: a two-way link's sides cannot both go to it",
                    Some(field.to_owned()),
                    Some("rules, or a profile written without directions".into()),
                )),
            },
        }
    }

    fn detach(mut self) -> Result<()> {
        match self.engine.take() {
            Some(e) => e.detach(),
            None => Ok(()),
        }
    }
}

/// A refusal of one side of a two-way link names that side's field.
fn side_error(e: EngineError, field: &str) -> ApiError {
    let mut err = engine_error(e.into());
    if matches!(err.field.as_deref(), Some("direction" | "rules")) {
        err.field = Some(field.to_owned());
    }
    err
}

/// Checks every side of a two-way plan (and of every scenario step)
/// against its hooks, then attaches the pair.
fn attach_pair(
    opts: PairOptions,
    steps: &[LinkRules],
    field: &str,
) -> Result<impl FnOnce() -> Result<EnginePair> + Send + 'static, ApiError> {
    for l in steps {
        if opts.uplink.is_some() {
            opts.uplink_hooks()
                .check(&l.uplink)
                .map_err(|e| side_error(e, if field == "uplink" { "uplink" } else { field }))?;
        }
        if opts.downlink.is_some() {
            opts.downlink_hooks()
                .check(&l.downlink)
                .map_err(|e| side_error(e, if field == "uplink" { "downlink" } else { field }))?;
        }
    }
    Ok(move || EnginePair::attach(opts))
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
        let label = format!("agent {}: {}", req.id, plan.label);
        let netns = container_netns.or_else(|| req.target.netns.clone());
        let attach: Box<dyn FnOnce() -> Result<Engines> + Send> = match &plan.pair {
            None => {
                let opts = AttachOptions {
                    iface: req.target.interface.clone(),
                    mode: plan.attach_mode,
                    rules: plan.rules.clone(),
                    seed: req.seed,
                    label: label.clone(),
                    duration: plan.duration,
                    // The device's offloads are managed as for `impair attach`.
                    keep_offloads: false,
                };
                let hooks = HookOptions {
                    direction: plan.direction,
                    ..HookOptions::default()
                };
                Box::new(move || {
                    Engine::attach_with(opts, hooks).map(|e| Engines::One(Box::new(e)))
                })
            }
            Some(PairPlan { uplink, downlink }) => {
                let both = uplink.is_some() && downlink.is_some();
                let side = |rules: &Option<Vec<RuleSpec>>, name: &str| {
                    rules.as_ref().map(|r| SideOptions {
                        rules: r.clone(),
                        label: side_label(&label, name, both),
                    })
                };
                let opts = PairOptions {
                    iface: req.target.interface.clone(),
                    mode: plan.attach_mode,
                    seed: req.seed,
                    duration: plan.duration,
                    uplink: side(uplink, "uplink"),
                    downlink: side(downlink, "downlink"),
                    ..PairOptions::default()
                };
                let mut steps: Vec<LinkRules> = match &plan.scenario {
                    Some(sc) => sc.steps.iter().map(|st| st.link()).collect(),
                    None => Vec::new(),
                };
                steps.push(LinkRules {
                    uplink: uplink.clone().unwrap_or_default(),
                    downlink: downlink.clone().unwrap_or_default(),
                    two_way: true,
                });
                let field = if req.profile.is_some() {
                    "profile"
                } else if req.scenario.is_some() {
                    "scenario"
                } else {
                    "uplink"
                };
                let go = attach_pair(opts, &steps, field)?;
                Box::new(move || go().map(|p| Engines::Pair(Box::new(p))))
            }
        };
        let engine = in_netns(netns.as_deref(), attach)
            .map_err(|e| {
                ApiError::bad_request(
                    format!("{e:#}"),
                    Some("target.netns".into()),
                    Some("a name from `ip netns list` or a path such as /proc/PID/ns/net".into()),
                )
            })?
            .map_err(engine_error)?;
        let iface = engine
            .all()
            .first()
            .map(|e| e.iface().to_owned())
            .unwrap_or_default();
        tracing::info!(id = req.id, iface, "attached");
        let now = Instant::now();
        let scenario = plan.scenario.map(|s: Scenario| Playing {
            player: impair_tools::player::Player::new(s),
            step: 0,
        });
        let inst = Instance {
            engine: Some(engine),
            direction: plan.direction,
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
            .flat_map(|i| {
                let t = &i.request.target;
                let place = t.container.as_ref().or(t.netns.as_ref());
                i.engine
                    .iter()
                    .flat_map(Engines::all)
                    .filter_map(|e| {
                        let label = match place {
                            Some(place) => format!("{}@{place}", e.iface()),
                            None => e.iface().to_owned(),
                        };
                        Snapshot::read(&e.maps(), &label).ok()
                    })
                    .collect::<Vec<_>>()
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
        let Some((link, label)) = link_of(
            &req.rules,
            &req.profile,
            &req.uplink,
            &req.downlink,
            req.flip,
        )?
        else {
            return Err(ApiError::bad_request(
                "give rules, a profile or uplink/downlink",
                Some("rules".into()),
                Some("one of rules, profile, uplink/downlink".into()),
            ));
        };
        let field = if req.profile.is_some() {
            "profile"
        } else if req.rules.is_some() {
            "rules"
        } else {
            "uplink"
        };
        let mut rules = inst.new_rules(link, field)?;
        // The target's cgroup scopes the new rules as it did the first.
        match &mut rules {
            NewRules::One(r) => scope(r, inst.cgroup_id),
            NewRules::Pair { uplink, downlink } => {
                scope(uplink, inst.cgroup_id);
                scope(downlink, inst.cgroup_id);
            }
        }
        let label = format!("agent {id}: {label}");
        inst.update(rules, Some(label.clone()))?;
        inst.label = label;
        inst.request.rules = req.rules;
        inst.request.profile = req.profile;
        inst.request.uplink = req.uplink;
        inst.request.downlink = req.downlink;
        inst.request.flip = req.flip;
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
            let st = &play.player.scenario().steps[step];
            let rules = match &inst.engine {
                Some(Engines::Pair(p)) => NewRules::Pair {
                    uplink: if p.uplink.is_some() {
                        st.rules.clone()
                    } else {
                        Vec::new()
                    },
                    downlink: if p.downlink.is_some() {
                        st.downlink.clone()
                    } else {
                        Vec::new()
                    },
                },
                _ => NewRules::One(st.rules.clone()),
            };
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

/// Scopes rules to the target's cgroup (or none).
fn scope(rules: &mut [RuleSpec], cgroup_id: Option<u64>) {
    for r in rules {
        r.matcher.cgroup = cgroup_id;
    }
}

/// How often [`Registry::tick`] runs.
pub const TICK: Duration = Duration::from_millis(100);
