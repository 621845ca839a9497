"""The restore drill: throwaway clusters, the restore itself, its safety rails, and `run_drill`."""
