//! The agent daemon (identify, configure, plan).
