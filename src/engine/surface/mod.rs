//! The HTTP surface: what a request is (its route), parsed once.

pub mod route;
