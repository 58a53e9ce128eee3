//! The scenario player: a timeline of rule sets applied to a running
//! engine by atomic updates, each step held for its duration, once or
//! looped. The command line's `attach --scenario` and the agent drive it
//! from their own loops with [`Player::tick`] (one instance: each step's
//! uplink rules, as before two-way scenarios) or [`Player::tick_pair`] (a
//! two-way link: both sides switched together, each side's swap atomic).
use std::time::Duration;

use anyhow::Result;
use impair::{
    engine::{pair::EnginePair, Engine},
    profile::scenario::{Scenario, Step},
};

/// Where a scenario is on its timeline.
#[derive(Debug)]
pub struct Player {
    scenario: Scenario,
    step: usize,
    ended: bool,
}

/// A step the player has just switched to.
#[derive(Debug, Clone)]
pub struct StepChange {
    /// 0-based index of the new step.
    pub index: usize,
    pub count: usize,
    pub label: String,
    pub duration: Duration,
}

impl Player {
    /// A player at the scenario's first step (which the caller attaches with).
    pub fn new(scenario: Scenario) -> Self {
        Player {
            scenario,
            step: 0,
            ended: false,
        }
    }

    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// The engine label for step `index`.
    pub fn label(&self, index: usize) -> String {
        format!(
            "scenario step {}: {}",
            index + 1,
            self.scenario.steps[index].label
        )
    }

    /// Applies the step due at `elapsed` since the start, if it changed:
    /// the engine's rules are swapped atomically and relabelled.
    pub fn tick(&mut self, engine: &mut Engine, elapsed: Duration) -> Result<Option<StepChange>> {
        self.tick_with(elapsed, |st, label| {
            engine.update(&st.rules)?;
            engine.set_label(label)
        })
    }

    /// [`Player::tick`] for a two-way link: the step's uplink and downlink
    /// rules go to their instances together (uplink first, each flip
    /// atomic); a step without a downlink leaves received traffic
    /// unimpaired (an empty rule set) while it lasts.
    pub fn tick_pair(
        &mut self,
        pair: &mut EnginePair,
        elapsed: Duration,
    ) -> Result<Option<StepChange>> {
        self.tick_with(elapsed, |st, label| {
            let up: &[_] = if pair.uplink.is_some() {
                &st.rules
            } else {
                &[]
            };
            let down: &[_] = if pair.downlink.is_some() {
                &st.downlink
            } else {
                &[]
            };
            pair.update(up, down)?;
            pair.set_label(label)
        })
    }

    /// The step due at `elapsed`, if it changed, given to `apply` with its
    /// label; the caller decides which instances get which side.
    pub fn tick_with(
        &mut self,
        elapsed: Duration,
        apply: impl FnOnce(&Step, &str) -> Result<()>,
    ) -> Result<Option<StepChange>> {
        if self.ended {
            return Ok(None);
        }
        let (now, over) = self.scenario.step_at(elapsed);
        self.ended = over;
        if now == self.step {
            return Ok(None);
        }
        self.step = now;
        let label = self.label(now);
        let st = &self.scenario.steps[now];
        apply(st, &label)?;
        Ok(Some(StepChange {
            index: now,
            count: self.scenario.steps.len(),
            label: st.label.clone(),
            duration: st.duration,
        }))
    }
}
