//! Training by backprop: losses, optimisers, learning-rate schedules and the loop.

pub mod loss;
pub mod optim;
pub mod schedule;
pub mod trainer;

pub use loss::Loss;
pub use optim::{OptimConfig, OptimizerKind};
pub use schedule::LrSchedule;
pub use trainer::{train, EpochReport, TrainConfig, TrainingResult};
