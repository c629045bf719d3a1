"""
Queue storage: the interface msgqueue is written against, and its implementations.
"""

from wsqueue.store.base import Entry, IMessageStore, PendingEntry
from wsqueue.store.memory import MemoryStore

__all__ = ["Entry", "IMessageStore", "MemoryStore", "PendingEntry"]
