//! The scenarios. Each asserts what a user of the gateway observes.

use std::sync::Arc;

use crate::{BoxFut, World};

pub type Scenario = fn(Arc<World>) -> BoxFut<'static, ()>;

pub fn all() -> Vec<(&'static str, Scenario)> {
    vec![]
}
