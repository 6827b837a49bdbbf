//! Batch queries on DataFusion over tables, materialized views and bounded streams.
