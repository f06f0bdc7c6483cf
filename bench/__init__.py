"""hostguard's benchmarks: what the agent costs a host, measured side by side in one run."""
