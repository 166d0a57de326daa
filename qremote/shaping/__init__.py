"""Traffic shaping: message rates and automation per destination group and source."""
