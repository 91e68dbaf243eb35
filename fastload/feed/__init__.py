"""Feeds: one process decodes, several trainings read the same batches from shared memory.

``fl.Feed(source, batch_size, name="scan")`` runs a loader configuration's
workers and batch ring in this process and serves them; ``fl.attach("scan")``
in any process of the same user returns a :class:`FeedConsumer`, iterated
exactly like a :class:`~fastload.Loader`.  ``mode="broadcast"`` gives every
consumer every batch (hyper-parameter scans); ``mode="split"`` gives each of
``consumers`` consumers its disjoint rank shard (node-local data parallelism).
See docs/feed.md.
"""

from __future__ import annotations

from fastload.feed._consumer import FeedConsumer, attach
from fastload.feed._server import Feed
from fastload.feed._status import feed_status

__all__ = ["Feed", "FeedConsumer", "attach", "feed_status"]
