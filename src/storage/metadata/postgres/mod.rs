//! PostgreSQL metadata for replicas that share one database (issue 21). Work in progress.
