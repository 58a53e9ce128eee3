//! The scenario player: a timeline of rule sets applied to a running
//! engine by atomic updates, each step held for its duration, once or
//! looped. The command line's `attach --scenario` and the agent drive it
//! from their own loops with [`Player::tick`].
use std::time::Duration;

use anyhow::Result;
use impair::{engine::Engine, profile::scenario::Scenario};

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
        if self.ended {
            return Ok(None);
        }
        let (now, over) = self.scenario.step_at(elapsed);
        self.ended = over;
        if now == self.step {
            return Ok(None);
        }
        self.step = now;
        let st = &self.scenario.steps[now];
        engine.update(&st.rules)?;
        engine.set_label(&self.label(now))?;
        Ok(Some(StepChange {
            index: now,
            count: self.scenario.steps.len(),
            label: st.label.clone(),
            duration: st.duration,
        }))
    }
}
