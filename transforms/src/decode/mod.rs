//! The decoder's transforms (gcp-ingestion's Decoder, step by step).
