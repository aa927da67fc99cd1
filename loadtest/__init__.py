"""HTTP load generator and report for the polyprobe service."""
