//! Typed handles on one instance's maps, taken from a freshly loaded object or
//! found again by id through the attached program (another process).
use crate::model::RuleSet;
use anyhow::{anyhow, Context as _, Result};
use aya::{
    maps::{lpm_trie::Key, Array, LpmTrie, Map, MapData, MapInfo, PerCpuArray, PerCpuValues},
    programs::ProgramInfo,
    Ebpf,
};
use impair_common::{
    index::MatchIndex,
    map_names,
    matrix::{MatrixAddr, MatrixEntry},
    DelayTable, GlobalCounters, Owner, Rule, RuleCounters, RuleSetHeader, CONTROL_ACTIVE_SLOT,
    CONTROL_LEASE_DEADLINE_NS, MAX_RULES,
};

pub struct Maps {
    pub control: Array<MapData, u64>,
    pub rulesets: Array<MapData, RuleSetHeader>,
    pub rules: Array<MapData, Rule>,
    pub index: Array<MapData, MatchIndex>,
    pub rule_counters: PerCpuArray<MapData, RuleCounters>,
    pub global: PerCpuArray<MapData, GlobalCounters>,
    pub rng: PerCpuArray<MapData, u64>,
    pub loss_state: PerCpuArray<MapData, u32>,
    pub tables: Array<MapData, DelayTable>,
    pub rate_state: Array<MapData, u64>,
    pub delay_state: PerCpuArray<MapData, u64>,
    pub owner: Array<MapData, Owner>,
    /// Latency matrices of both slots (`impair_common::matrix`).
    pub matrix: LpmTrie<MapData, MatrixAddr, MatrixEntry>,
    /// Delay and loss series of both slots (`impair_common::series`).
    pub series_hdr: Array<MapData, impair_common::series::SeriesHeader>,
    pub series: Array<MapData, u32>,
    /// Rate traces of both slots (`impair_common::trace`).
    pub trace_hdr: Array<MapData, impair_common::trace::RateTraceHeader>,
    pub trace_times: Array<MapData, u32>,
    pub trace_before: Array<MapData, u32>,
    /// What the record of impaired packets wrote and skipped
    /// (`impair_common::capture::Counters`, per CPU).
    pub capture_counters: PerCpuArray<MapData, impair_common::capture::Counters>,
}

fn typed<T: TryFrom<Map>>(map: Option<Map>, name: &str) -> Result<T>
where
    T::Error: std::error::Error + Send + Sync + 'static,
{
    let map = map.ok_or_else(|| anyhow!("the eBPF object has no map {name}"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}

impl Maps {
    /// Takes the maps out of a just-loaded object (the programs keep using them).
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        Ok(Self {
            control: typed(ebpf.take_map(map_names::CONTROL), map_names::CONTROL)?,
            rulesets: typed(ebpf.take_map(map_names::RULESETS), map_names::RULESETS)?,
            rules: typed(ebpf.take_map(map_names::RULES), map_names::RULES)?,
            index: typed(ebpf.take_map(map_names::INDEX), map_names::INDEX)?,
            rule_counters: typed(
                ebpf.take_map(map_names::RULE_COUNTERS),
                map_names::RULE_COUNTERS,
            )?,
            global: typed(
                ebpf.take_map(map_names::GLOBAL_COUNTERS),
                map_names::GLOBAL_COUNTERS,
            )?,
            rng: typed(ebpf.take_map(map_names::RNG), map_names::RNG)?,
            loss_state: typed(ebpf.take_map(map_names::LOSS_STATE), map_names::LOSS_STATE)?,
            tables: typed(ebpf.take_map(map_names::TABLES), map_names::TABLES)?,
            rate_state: typed(ebpf.take_map(map_names::RATE_STATE), map_names::RATE_STATE)?,
            delay_state: typed(
                ebpf.take_map(map_names::DELAY_STATE),
                map_names::DELAY_STATE,
            )?,
            owner: typed(ebpf.take_map(map_names::OWNER), map_names::OWNER)?,
            matrix: typed(ebpf.take_map(map_names::MATRIX), map_names::MATRIX)?,
            series_hdr: typed(ebpf.take_map(map_names::SERIES_HDR), map_names::SERIES_HDR)?,
            series: typed(ebpf.take_map(map_names::SERIES), map_names::SERIES)?,
            trace_hdr: typed(ebpf.take_map(map_names::TRACE_HDR), map_names::TRACE_HDR)?,
            trace_times: typed(
                ebpf.take_map(map_names::TRACE_TIMES),
                map_names::TRACE_TIMES,
            )?,
            trace_before: typed(
                ebpf.take_map(map_names::TRACE_BEFORE),
                map_names::TRACE_BEFORE,
            )?,
            capture_counters: typed(
                ebpf.take_map(impair_common::capture::MAP_COUNTERS),
                impair_common::capture::MAP_COUNTERS,
            )?,
        })
    }

    /// Opens the maps a loaded program uses, by id (for `impair stats` and
    /// friends in a process other than the controller).
    pub fn of_program(info: &ProgramInfo) -> Result<Self> {
        let ids = info
            .map_ids()
            .context("listing the program's maps")?
            .unwrap_or_default();
        let mut found: Vec<(String, Map)> = Vec::new();
        for id in ids {
            let name = MapInfo::from_id(id)
                .ok()
                .and_then(|i| i.name_as_str().map(str::to_owned))
                .unwrap_or_default();
            if name.starts_with("IMPAIR_") {
                let data = MapData::from_id(id)
                    .with_context(|| format!("opening map {name} (id {id})"))?;
                found.push((name, Map::from_map_data(data)?));
            }
        }
        let mut take = |name: &str| {
            found
                .iter()
                .position(|(n, _)| n == name)
                .map(|i| found.swap_remove(i).1)
        };
        Ok(Self {
            control: typed(take(map_names::CONTROL), map_names::CONTROL)?,
            rulesets: typed(take(map_names::RULESETS), map_names::RULESETS)?,
            rules: typed(take(map_names::RULES), map_names::RULES)?,
            index: typed(take(map_names::INDEX), map_names::INDEX)?,
            rule_counters: typed(take(map_names::RULE_COUNTERS), map_names::RULE_COUNTERS)?,
            global: typed(take(map_names::GLOBAL_COUNTERS), map_names::GLOBAL_COUNTERS)?,
            rng: typed(take(map_names::RNG), map_names::RNG)?,
            loss_state: typed(take(map_names::LOSS_STATE), map_names::LOSS_STATE)?,
            tables: typed(take(map_names::TABLES), map_names::TABLES)?,
            rate_state: typed(take(map_names::RATE_STATE), map_names::RATE_STATE)?,
            delay_state: typed(take(map_names::DELAY_STATE), map_names::DELAY_STATE)?,
            owner: typed(take(map_names::OWNER), map_names::OWNER)?,
            matrix: typed(take(map_names::MATRIX), map_names::MATRIX)?,
            series_hdr: typed(take(map_names::SERIES_HDR), map_names::SERIES_HDR)?,
            series: typed(take(map_names::SERIES), map_names::SERIES)?,
            trace_hdr: typed(take(map_names::TRACE_HDR), map_names::TRACE_HDR)?,
            trace_times: typed(take(map_names::TRACE_TIMES), map_names::TRACE_TIMES)?,
            trace_before: typed(take(map_names::TRACE_BEFORE), map_names::TRACE_BEFORE)?,
            capture_counters: typed(
                take(impair_common::capture::MAP_COUNTERS),
                impair_common::capture::MAP_COUNTERS,
            )?,
        })
    }

    pub fn owner(&self) -> Result<Owner> {
        Ok(self.owner.get(&0, 0)?)
    }

    pub fn active_slot(&self) -> Result<u32> {
        Ok((self.control.get(&CONTROL_ACTIVE_SLOT, 0)? & 1) as u32)
    }

    pub fn lease_deadline_ns(&self) -> Result<u64> {
        Ok(self.control.get(&CONTROL_LEASE_DEADLINE_NS, 0)?)
    }

    pub fn set_lease_deadline_ns(&mut self, deadline_ns: u64) -> Result<()> {
        Ok(self
            .control
            .set(CONTROL_LEASE_DEADLINE_NS, deadline_ns, 0)?)
    }

    /// The active slot's header and rules.
    pub fn active_rules(&self) -> Result<(u32, RuleSetHeader, Vec<Rule>)> {
        let slot = self.active_slot()?;
        let header = self.rulesets.get(&slot, 0)?;
        let n = header.rule_count.min(MAX_RULES);
        let rules = (0..n)
            .map(|i| self.rules.get(&(slot * MAX_RULES + i), 0))
            .collect::<Result<_, _>>()?;
        Ok((slot, header, rules))
    }

    /// The jitter table of rule `i` of `slot` (meaningful when the rule draws
    /// from a table).
    pub fn delay_table(&self, slot: u32, i: u32) -> Result<DelayTable> {
        Ok(self.tables.get(&(slot * MAX_RULES + i), 0)?)
    }

    /// Counters of rule `i` of `slot`, summed over CPUs.
    pub fn rule_counters(&self, slot: u32, i: u32) -> Result<RuleCounters> {
        let per_cpu = self.rule_counters.get(&(slot * MAX_RULES + i), 0)?;
        Ok(per_cpu.iter().fold(RuleCounters::default(), |mut acc, c| {
            acc.add(c);
            acc
        }))
    }

    pub fn global_counters(&self) -> Result<GlobalCounters> {
        let per_cpu = self.global.get(&0, 0)?;
        Ok(per_cpu
            .iter()
            .fold(GlobalCounters::default(), |mut acc, c| {
                acc.add(c);
                acc
            }))
    }

    /// Writes `rules` into the inactive slot (counters zeroed first) and makes
    /// it active with one map write. The caller guarantees no packet still runs
    /// on the inactive slot (see `Engine::update`).
    pub fn write_and_activate(&mut self, slot: u32, set: &RuleSet, generation: u64) -> Result<()> {
        let cpus = nr_cpus()?;
        for i in 0..MAX_RULES {
            let idx = slot * MAX_RULES + i;
            self.rule_counters.set(
                idx,
                PerCpuValues::try_from(vec![RuleCounters::default(); cpus])?,
                0,
            )?;
            self.loss_state
                .set(idx, PerCpuValues::try_from(vec![0u32; cpus])?, 0)?;
            self.delay_state
                .set(idx, PerCpuValues::try_from(vec![0u64; cpus])?, 0)?;
            self.rate_state.set(idx, 0, 0)?;
        }
        for (i, r) in set.rules.iter().enumerate() {
            let idx = slot * MAX_RULES + i as u32;
            if let Some(Some(t)) = set.tables.get(i) {
                self.tables.set(idx, **t, 0)?;
            }
            self.rules.set(idx, r, 0)?;
        }
        self.write_matrices(slot, set)?;
        self.write_series(slot, set)?;
        self.write_trace(slot, set)?;
        let matchers: Vec<_> = set.rules.iter().map(|r| r.matcher).collect();
        self.index.set(slot, MatchIndex::build(&matchers), 0)?;
        let header = RuleSetHeader {
            rule_count: set.rules.len() as u32,
            flags: if set
                .rules
                .iter()
                .any(|r| r.matcher.flags & impair_common::match_flags::CGROUP != 0)
            {
                impair_common::ruleset_flags::CGROUP
            } else {
                0
            },
            generation,
        };
        self.rulesets.set(slot, header, 0)?;
        self.control.set(CONTROL_ACTIVE_SLOT, u64::from(slot), 0)?;
        Ok(())
    }

    /// Seeds every CPU's generator from one seed (see `impair_common::rng`).
    pub fn seed_rng(&mut self, seed: u64) -> Result<()> {
        let states: Vec<u64> = (0..nr_cpus()?)
            .map(|cpu| impair_common::rng::cpu_state(seed, cpu as u32))
            .collect();
        self.rng.set(0, PerCpuValues::try_from(states)?, 0)?;
        Ok(())
    }
}

/// Possible CPUs, the length of every per-CPU map value.
pub fn nr_cpus() -> Result<usize> {
    aya::util::nr_cpus().map_err(|(what, e)| anyhow!("{what}: {e}"))
}

/// One destination of a running matrix, with its counters (`impair stats`).
#[derive(Debug, Clone)]
pub struct MatrixDest {
    /// The rule's position in its set.
    pub rule: u32,
    pub prefix: ipnet::IpNet,
    pub entry: MatrixEntry,
}

impl Maps {
    /// Every entry of `slot`'s matrices (of rules `slot * MAX_RULES ..`).
    fn matrix_keys(&self, slot: u32) -> Result<Vec<Key<MatrixAddr>>> {
        let range = slot * MAX_RULES..(slot + 1) * MAX_RULES;
        let mut keys = Vec::new();
        for k in self.matrix.keys() {
            let k = k.context("listing the latency matrix")?;
            if range.contains(&k.data().rule) {
                keys.push(k);
            }
        }
        Ok(keys)
    }

    /// Replaces `slot`'s matrices with `set`'s (the slot is inactive: no
    /// packet reads it). Entries start with zero state and counters.
    fn write_matrices(&mut self, slot: u32, set: &RuleSet) -> Result<()> {
        for k in self.matrix_keys(slot)? {
            self.matrix
                .remove(&k)
                .context("clearing the inactive latency matrix")?;
        }
        for (i, m) in set.matrices.iter().enumerate() {
            let Some(m) = m else { continue };
            for (len, addr, value) in m.entries(slot * MAX_RULES + i as u32) {
                self.matrix
                    .insert(&Key::new(len, addr), value, 0)
                    .with_context(|| format!("writing the latency matrix {}", m.source))?;
            }
        }
        Ok(())
    }

    /// The destinations of `slot`'s matrices with their counters.
    pub fn matrix_dests(&self, slot: u32) -> Result<Vec<MatrixDest>> {
        let mut out = Vec::new();
        for k in self.matrix_keys(slot)? {
            let entry = self.matrix.get(&k, 0)?;
            let d = k.data();
            out.push(MatrixDest {
                rule: d.rule - slot * MAX_RULES,
                prefix: prefix_of(k.prefix_len(), &d),
                entry,
            });
        }
        Ok(out)
    }

    /// Rule `i` of `slot`'s matrix as a model value (for `impair update`,
    /// which keeps what the flags do not change), or `None` without one.
    pub fn matrix_of(&self, slot: u32, i: u32) -> Result<Option<crate::model::Matrix>> {
        let mut dests: Vec<_> = self
            .matrix_dests(slot)?
            .into_iter()
            .filter(|d| d.rule == i)
            .map(|d| crate::model::matrix::Dest::of_entry(d.prefix, &d.entry))
            .collect();
        if dests.is_empty() {
            return Ok(None);
        }
        dests.sort_by_key(|d| d.prefix);
        Ok(Some(crate::model::Matrix {
            source: "running matrix".into(),
            dests,
        }))
    }
}

/// The prefix a trie key stands for.
fn prefix_of(prefix_len: u32, d: &MatrixAddr) -> ipnet::IpNet {
    use impair_common::matrix::{MATRIX_RULE_BITS, V4_MAPPED_BITS};
    let mut octets = [0u8; 16];
    for (i, w) in d.addr.iter().enumerate() {
        octets[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
    }
    let bits = prefix_len.saturating_sub(MATRIX_RULE_BITS);
    let v6 = std::net::Ipv6Addr::from(octets);
    match v6.to_ipv4_mapped() {
        Some(v4) if bits >= V4_MAPPED_BITS => {
            ipnet::Ipv4Net::new(v4, (bits - V4_MAPPED_BITS) as u8)
                .map_or_else(|_| ipnet::IpNet::from(std::net::IpAddr::V4(v4)), Into::into)
        }
        _ => ipnet::Ipv6Net::new(v6, bits.min(128) as u8)
            .map_or_else(|_| ipnet::IpNet::from(std::net::IpAddr::V6(v6)), Into::into),
    }
}

impl Maps {
    /// Writes `slot`'s delay and loss series (values, then the header with
    /// time 0 = now), or clears them.
    fn write_series(&mut self, slot: u32, set: &RuleSet) -> Result<()> {
        use impair_common::series::{
            series_slot_index, SeriesHeader, SERIES_DELAY, SERIES_KINDS, SERIES_LOSS,
        };
        for (kind, series) in [
            (SERIES_DELAY, &set.delay_series),
            (SERIES_LOSS, &set.loss_series),
        ] {
            let hdr_idx = slot * SERIES_KINDS + kind;
            let Some(series) = series else {
                self.series_hdr.set(hdr_idx, SeriesHeader::default(), 0)?;
                continue;
            };
            let (mut h, values) = series.expand();
            for (i, v) in values.iter().enumerate() {
                self.series
                    .set(series_slot_index(slot, kind, i as u32), *v, 0)
                    .with_context(|| format!("writing the series {}", series.source))?;
            }
            h.start_ns = crate::sys::monotonic_ns();
            self.series_hdr.set(hdr_idx, h, 0)?;
        }
        Ok(())
    }

    /// The header of series `kind` (`impair_common::series::SERIES_DELAY`
    /// or `SERIES_LOSS`) of `slot`.
    pub fn series_header(
        &self,
        slot: u32,
        kind: u32,
    ) -> Result<impair_common::series::SeriesHeader> {
        Ok(self
            .series_hdr
            .get(&(slot * impair_common::series::SERIES_KINDS + kind), 0)?)
    }

    /// Moves series `kind` of `slot` to start at `start_ns` (tests: put
    /// "now" in a known step).
    pub fn set_series_start(&mut self, slot: u32, kind: u32, start_ns: u64) -> Result<()> {
        let mut h = self.series_header(slot, kind)?;
        h.start_ns = start_ns;
        self.series_hdr
            .set(slot * impair_common::series::SERIES_KINDS + kind, h, 0)?;
        Ok(())
    }

    /// Series `kind` of `slot` read back (for `impair update`), or `None`.
    pub fn series_of(&self, slot: u32, kind: u32) -> Result<Option<crate::model::series::Series>> {
        use crate::model::series::{Series, SeriesKind};
        let h = self.series_header(slot, kind)?;
        if h.len == 0 {
            return Ok(None);
        }
        let values = (0..h.len)
            .map(|i| {
                self.series
                    .get(&impair_common::series::series_slot_index(slot, kind, i), 0)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let k = if kind == impair_common::series::SERIES_DELAY {
            SeriesKind::Delay
        } else {
            SeriesKind::Loss
        };
        Ok(Some(Series::from_table(k, &h, &values)))
    }
}

impl Maps {
    /// Writes `slot`'s rate trace (tables, then the header with time 0 = now
    /// and an empty cursor), or clears it.
    fn write_trace(&mut self, slot: u32, set: &RuleSet) -> Result<()> {
        use impair_common::trace::{
            RateTraceHeader, TRACE_BEFORE_ENTRIES, TRACE_MAX_OPPORTUNITIES,
        };
        let Some(trace) = &set.rate_trace else {
            self.trace_hdr.set(slot, RateTraceHeader::default(), 0)?;
            return Ok(());
        };
        for (k, t) in trace.times_ms.iter().enumerate() {
            self.trace_times
                .set(slot * TRACE_MAX_OPPORTUNITIES + k as u32, *t, 0)
                .with_context(|| format!("writing the rate trace {}", trace.source))?;
        }
        for (ms, n) in trace.before_table().iter().enumerate() {
            self.trace_before
                .set(slot * TRACE_BEFORE_ENTRIES + ms as u32, *n, 0)?;
        }
        let h = RateTraceHeader {
            start_ns: crate::sys::monotonic_ns(),
            cursor_bytes: 0,
            period_ms: trace.period_ms(),
            opportunities: trace.times_ms.len() as u32,
        };
        self.trace_hdr.set(slot, h, 0)?;
        Ok(())
    }

    /// `slot`'s rate-trace header (period 0: none).
    pub fn trace_header(&self, slot: u32) -> Result<impair_common::trace::RateTraceHeader> {
        Ok(self.trace_hdr.get(&slot, 0)?)
    }

    /// Moves `slot`'s rate trace to start at `start_ns` (tests).
    pub fn set_trace_start(&mut self, slot: u32, start_ns: u64) -> Result<()> {
        let mut h = self.trace_header(slot)?;
        h.start_ns = start_ns;
        self.trace_hdr.set(slot, h, 0)?;
        Ok(())
    }

    /// `slot`'s rate trace read back (for `impair update`), or `None`.
    pub fn rate_trace_of(&self, slot: u32) -> Result<Option<crate::model::trace::RateTrace>> {
        let h = self.trace_header(slot)?;
        if h.period_ms == 0 {
            return Ok(None);
        }
        let times_ms = (0..h.opportunities)
            .map(|k| {
                self.trace_times.get(
                    &(slot * impair_common::trace::TRACE_MAX_OPPORTUNITIES + k),
                    0,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(crate::model::trace::RateTrace {
            source: "running trace".into(),
            times_ms,
        }))
    }
}
