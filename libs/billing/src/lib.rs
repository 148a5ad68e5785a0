//! Metering and billing as pure functions (issue 15): what the control plane decides
//! about usage and money, with no I/O and no clock of its own — time is an input, so tests
//! run a month in microseconds and the simulator can drive the same rules.
//!
//! * [`meter`]: cumulative counters (instance-seconds, GB-seconds, bytes) read from agents
//!   and proxies become usage per hour, exactly once whatever is repeated, late or lost.
//! * [`prices`]: a versioned list-price book (per dimension, per cloud and region, with
//!   effective dates) and what an hour's usage costs, in decimals — never floats.
//! * [`invoice`]: an invoice's lines from hourly usage and the price book, and what credits
//!   and a commitment draw down from its total.
//! * [`budget`]: spend alerts' thresholds and the hard limit.
//! * [`estimate`]: what a cluster of a given shape costs a month at list prices.
//! * [`spend`]: what an org's metered hours cost, day by day.
//! * [`margin`]: per cluster, its price and what the land charges us for it.
//! * [`export`]: usage sent to a cloud marketplace through a durable outbox — due hours,
//!   cumulative records, batches, retries and what each answer means.
//! * [`marketplace`]: cloud marketplaces an org pays through, and the cloud it binds the
//!   org's clusters to.

pub mod budget;
pub mod estimate;
pub mod export;
pub mod invoice;
pub mod margin;
pub mod marketplace;
pub mod meter;
pub mod prices;
pub mod spend;
