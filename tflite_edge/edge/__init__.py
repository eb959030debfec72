"""The edge side of co-inference: stateless workers that run the tail segments of bundles."""

from .handler import EdgeHandler, EdgeReply
from .worker import DEFAULT_GROUP, EdgeWorker, serve

__all__ = ["DEFAULT_GROUP", "EdgeHandler", "EdgeReply", "EdgeWorker", "serve"]
