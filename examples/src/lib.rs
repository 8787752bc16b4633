//! Example domains shared by the example binaries and their tests.

pub mod tower_defense;
