//! Example domains shared by the example binaries and their tests.

pub mod bus_read_model;
pub mod tower_defense;
