"""The aggregator: consumes the spend stream (one consumer group), applies rollups exactly once,
archives old events to the cold tier; embedded in `serve` or run as `spendgate aggregate`."""
