//! One module per command; each command is a struct with an `execute`.

pub mod audit;
pub mod bench;
pub mod bridge;
pub mod demo;
pub mod deploy;
pub mod group;
pub mod node;
pub mod pubsub;
pub mod registrar;
pub mod stack;
pub mod up;
pub mod verify;
