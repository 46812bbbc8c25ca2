//! The nodes' heartbeats in the status topic, and the cluster's membership as they show it.
