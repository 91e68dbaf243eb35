"""The prefetch engine: shared-memory arena, worker pool, scheduler (internal)."""
