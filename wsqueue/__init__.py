"""
wsqueue: a WebSocket publish/subscribe pipeline on Twisted and Autobahn.

Three stages, each a twistd plugin joined to the others over C{wss://}:
msgqueue (a FIFO queue with consumer groups), publisher and subscriber.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
