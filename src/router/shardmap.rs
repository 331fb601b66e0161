//! (being written)
pub struct ShardMap;
pub enum Method {}
pub enum KeyType {}
pub struct Route;
pub enum RouteReason {}
